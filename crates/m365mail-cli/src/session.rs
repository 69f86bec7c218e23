//! From a profile to a ready [`TokenProvider`]: the one place where `token get` — and `read`, `send` and
//! `doctor` as they arrive — resolve the connection settings, the secrets, the TLS trust and the cache.
//!
//! Precedence for every setting: a flag, then the profile, then the default. Secrets: `--password-stdin` /
//! `--secret-file`, then `M365MAIL_PASSWORD` / `M365MAIL_CLIENT_SECRET`, then the profile's `*_file` or
//! `*_command`, then a no-echo prompt when a person is at the terminal. A password is read only when the
//! password flow actually has to run (not when a cached token or refresh token serves).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use m365mail::auth::provider::FlowSource;
use m365mail::auth::{
    Access, AssertionAlg, AuthCodeOptions, AuthError, Authority, CacheKey, CertificateCredential,
    ClientCredential, ClientOptions, Cloud, Flow, Grant, Scopes, Target, Tenant, TokenCache,
    TokenClient, TokenProvider, TokenResponse, TokenSource,
};
use m365mail::secret::Secret;
use m365mail::time::{BoxFuture, SystemClock};
use m365mail::tls::TlsTrust;

use crate::GlobalArgs;
use crate::config::{ConfigFile, FlowName, Profile, SecretAuth, usage};
use crate::secrets;

/// Connection settings; each overrides the profile's value.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ProfileArgs {
    /// Tenant GUID, domain, `organizations`, `common` or `consumers`.
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// Application (client) id.
    #[arg(long)]
    pub(crate) client_id: Option<String>,
    /// Username (UPN) for password flow, and the cache account for delegated flows (without it: `default`, whoever
    /// signs in). Device-code, auth-code and refresh tokens for another user are refused, not cached under it.
    #[arg(long)]
    pub(crate) username: Option<String>,
    /// Cloud: global, usgov, usgov-dod, china.
    #[arg(long, conflicts_with = "authority")]
    pub(crate) cloud: Option<String>,
    /// Custom authority base URL (e.g. the sandbox https://127.0.0.1:8443/).
    #[arg(long)]
    pub(crate) authority: Option<String>,
    /// Extra CA certificate(s) to trust (PEM file), e.g. the sandbox CA.
    #[arg(long)]
    pub(crate) ca_file: Option<PathBuf>,
    /// Token cache file (default: the user data dir).
    #[arg(long)]
    pub(crate) cache: Option<PathBuf>,
}

/// How to get the token: flow, credentials, cache. Shared by every command that needs a token.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AuthArgs {
    /// Flow (overrides the profile).
    #[arg(long, value_enum)]
    pub(crate) flow: Option<FlowName>,
    /// Explicit scope (repeatable); overrides the target's scopes.
    #[arg(long = "scope")]
    pub(crate) scopes: Vec<String>,
    /// Read the password from the first line of stdin.
    #[arg(long)]
    pub(crate) password_stdin: bool,
    /// Read the client secret from this file (0600, one line).
    #[arg(long)]
    pub(crate) secret_file: Option<PathBuf>,
    /// Client certificate (PEM) for client-certificate flow.
    #[arg(long)]
    pub(crate) certificate: Option<PathBuf>,
    /// Private key (PEM) for client-certificate flow.
    #[arg(long)]
    pub(crate) private_key: Option<PathBuf>,
    /// Assertion algorithm: RS256 (x5t) or PS256 (x5t#S256).
    #[arg(long)]
    pub(crate) assertion_alg: Option<String>,
    /// Neither read nor write the token cache.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Reuse a cached access token only if it stays valid this many more seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub(crate) margin: u64,
    /// Timeout of each HTTP request to the identity endpoint, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "M365MAIL_HTTP_TIMEOUT",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub(crate) timeout: u64,
}

/// Profile + flags, validated.
pub(crate) struct Settings {
    pub(crate) authority: Authority,
    pub(crate) client_id: String,
    pub(crate) username: Option<String>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) cache_path: Option<PathBuf>,
}

pub(crate) fn settings(profile: &Profile, args: &ProfileArgs) -> anyhow::Result<Settings> {
    // On a first run without any config file, say so and where it was looked for.
    let origin = profile
        .origin
        .as_deref()
        .map(|o| format!(" ({o})"))
        .unwrap_or_default();
    let no_tenant = || {
        usage(format!(
            "no tenant: set `tenant` in the profile or pass --tenant{origin}"
        ))
    };
    let tenant: Option<Tenant> = args
        .tenant
        .clone()
        .or_else(|| profile.tenant.clone())
        .map(|t| t.parse())
        .transpose()?;
    // A custom authority may end with the tenant (the sandbox banner's form): Authority::custom takes it
    // from there.
    let authority = match (
        &args.authority,
        &args.cloud,
        &profile.authority,
        &profile.cloud,
    ) {
        (Some(a), _, _, _) | (None, None, Some(a), _) => match Authority::custom(a, tenant) {
            Err(AuthError::InvalidInput {
                field: "tenant", ..
            }) => return Err(no_tenant()),
            other => other?,
        },
        (None, Some(c), _, _) | (None, None, None, Some(c)) => {
            Authority::new(Cloud::parse(c)?, tenant.ok_or_else(no_tenant)?)
        }
        _ => Authority::new(Cloud::Global, tenant.ok_or_else(no_tenant)?),
    };
    let client_id = args
        .client_id
        .clone()
        .or_else(|| profile.client_id.clone())
        .ok_or_else(|| {
            usage(format!(
                "no client id: set `client_id` in the profile or pass --client-id{origin}"
            ))
        })?;
    Ok(Settings {
        authority,
        client_id,
        username: args.username.clone().or_else(|| profile.username.clone()),
        ca_file: args.ca_file.clone().or_else(|| profile.ca_file.clone()),
        cache_path: args.cache.clone().or_else(|| profile.cache.clone()),
    })
}

pub(crate) fn load_profile(global: &GlobalArgs) -> anyhow::Result<(String, Profile)> {
    let (cfg, found) = ConfigFile::load(global.config.as_deref())?;
    if found.is_none()
        && let Some(name) = &global.profile
    {
        let looked = crate::config::default_path()
            .map(|p| format!(" (looked for {})", p.display()))
            .unwrap_or_default();
        return Err(usage(format!(
            "no config file found{looked}, so there is no profile {name:?}; pass --config FILE or set \
             M365MAIL_CONFIG"
        )));
    }
    let (name, mut profile) = cfg.profile(global.profile.as_deref())?;
    if found.is_none() {
        profile.origin = Some(match crate::config::default_path() {
            Some(path) => format!(
                "no config file was found at {}; pass --config FILE, set M365MAIL_CONFIG, or let \
                 `m365mail sandbox serve --config-out FILE` write one",
                path.display()
            ),
            None => "no config file: pass --config FILE".to_owned(),
        });
    }
    Ok((name, profile))
}

pub(crate) fn open_cache(path: Option<PathBuf>) -> anyhow::Result<TokenCache> {
    let path = path.or_else(TokenCache::default_path).ok_or_else(|| {
        usage("cannot determine the user data dir for the token cache; set `cache` or --cache")
    })?;
    Ok(TokenCache::open(path)?)
}

pub(crate) fn read_stdin_line(what: &str) -> anyhow::Result<Secret> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| usage(format!("reading the {what} from stdin: {e}")))?;
    without_line_ending(Secret::new(line), || format!("empty {what} on stdin"))
}

/// Strips only the line ending (leading and trailing spaces may be part of a secret); empty is an error.
pub(crate) fn without_line_ending(
    text: Secret,
    empty: impl FnOnce() -> String,
) -> anyhow::Result<Secret> {
    let value = text.expose().trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(usage(empty()));
    }
    Ok(Secret::new(value))
}

/// Where the password comes from, in order of precedence.
#[derive(Clone)]
struct PasswordSources {
    stdin: bool,
    file: Option<PathBuf>,
    command: Option<Vec<String>>,
}

fn password(sources: &PasswordSources, username: &str) -> anyhow::Result<Secret> {
    if sources.stdin {
        return read_stdin_line("password");
    }
    if let Ok(v) = std::env::var("M365MAIL_PASSWORD")
        && !v.is_empty()
    {
        return Ok(Secret::new(v));
    }
    if let Some(path) = &sources.file {
        return secrets::read_file(path, "password_file");
    }
    if let Some(argv) = &sources.command {
        return secrets::run_command(argv, "password_command");
    }
    if std::io::stdin().is_terminal() {
        let v = rpassword::prompt_password(format!("Password for {username}: "))
            .map_err(|e| usage(format!("password prompt: {e}")))?;
        return Ok(Secret::new(v));
    }
    Err(usage(
        "no password: set password_file or password_command in the profile, M365MAIL_PASSWORD, pass \
         --password-stdin, or run in a terminal",
    ))
}

/// The client secret, if one was supplied; `required` prompts on a terminal when none was.
pub(crate) fn client_secret(
    args: &AuthArgs,
    profile: &Profile,
    required: bool,
) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = &args.secret_file {
        return secrets::read_file(path, "--secret-file").map(Some);
    }
    if let Ok(v) = std::env::var("M365MAIL_CLIENT_SECRET")
        && !v.is_empty()
    {
        return Ok(Some(Secret::new(v)));
    }
    if let Some(path) = &profile.client_secret_file {
        return secrets::read_file(path, "client_secret_file").map(Some);
    }
    if let Some(argv) = &profile.client_secret_command {
        return secrets::run_command(argv, "client_secret_command").map(Some);
    }
    if required {
        if std::io::stdin().is_terminal() {
            let v = rpassword::prompt_password("Client secret (value): ")
                .map_err(|e| usage(format!("secret prompt: {e}")))?;
            return Ok(Some(Secret::new(v)));
        }
        return Err(usage(
            "no client secret: set client_secret_file or client_secret_command in the profile, \
             M365MAIL_CLIENT_SECRET, pass --secret-file, or run in a terminal",
        ));
    }
    Ok(None)
}

/// ROPC whose password is read (env, stdin, file, command or prompt) only when the flow actually has to run.
struct LazyPassword {
    client: TokenClient,
    username: String,
    password: std::sync::Mutex<Option<Secret>>,
    read: Box<dyn Fn() -> Result<Secret, AuthError> + Send + Sync>,
}

impl TokenSource for LazyPassword {
    fn acquire<'a>(
        &'a self,
        scopes: &'a Scopes,
    ) -> BoxFuture<'a, Result<TokenResponse, AuthError>> {
        Box::pin(async move {
            let cached = self
                .password
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let password = match cached {
                Some(p) => p,
                None => {
                    let p = (self.read)()?;
                    *self.password.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
                    p
                }
            };
            self.client
                .password(&self.username, &password, scopes)
                .await
        })
    }
    fn refresh<'a>(
        &'a self,
        rt: &'a Secret,
        scopes: &'a Scopes,
    ) -> BoxFuture<'a, Result<TokenResponse, AuthError>> {
        Box::pin(self.client.refresh(rt, scopes))
    }
}

/// For `--flow refresh` without M365MAIL_REFRESH_TOKEN: only the cached refresh token can be used.
struct RefreshOnly(TokenClient);

impl TokenSource for RefreshOnly {
    fn acquire<'a>(&'a self, _: &'a Scopes) -> BoxFuture<'a, Result<TokenResponse, AuthError>> {
        Box::pin(async { Err(AuthError::NoRefreshToken) })
    }
    fn refresh<'a>(
        &'a self,
        rt: &'a Secret,
        scopes: &'a Scopes,
    ) -> BoxFuture<'a, Result<TokenResponse, AuthError>> {
        Box::pin(self.0.refresh(rt, scopes))
    }
}

/// Best effort: hand the URL to the desktop's browser when a person is at the terminal. The URL is printed
/// either way, so a failure here changes nothing.
fn open_in_browser(url: &str) {
    if !std::io::stderr().is_terminal() || std::env::var_os("M365MAIL_NO_BROWSER").is_some() {
        return;
    }
    let program = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

fn secret_credential(secret: Option<Secret>, profile: &Profile) -> ClientCredential {
    match secret {
        Some(secret) => ClientCredential::Secret {
            secret,
            basic: profile.secret_auth.unwrap_or_default() == SecretAuth::Basic,
        },
        None => ClientCredential::Public,
    }
}

/// The flow: `--flow`, else the profile's `flow`, else the credential flag typed on the command line
/// (`--password-stdin` → password, `--certificate`/`--private-key` → client-certificate, `--secret-file` →
/// client-secret), else device code when a person is at the terminal; otherwise an error naming `--flow`.
/// Only flags count: `M365MAIL_PASSWORD` or a profile's `password_file` never turn a device-code profile
/// into a password one. A chosen flow is said on stderr with the reason; a credential flag the flow does not
/// use is an error, not silence.
pub(crate) fn choose_flow(
    auth: &AuthArgs,
    profile_flow: Option<FlowName>,
    at_terminal: bool,
) -> anyhow::Result<FlowName> {
    let certificate = auth.certificate.is_some() || auth.private_key.is_some();
    let flow = match (auth.flow, profile_flow) {
        (Some(flow), _) | (None, Some(flow)) => flow,
        (None, None) => {
            let (flow, why) = match (auth.password_stdin, certificate, auth.secret_file.is_some()) {
                (true, false, _) => (FlowName::Password, "--password-stdin was given"),
                (false, true, false) => (
                    FlowName::ClientCertificate,
                    "--certificate/--private-key were given",
                ),
                (false, false, true) => (FlowName::ClientSecret, "--secret-file was given"),
                (false, false, false) if at_terminal => (
                    FlowName::DeviceCode,
                    "no flow set and no credential flag; a person is at this terminal",
                ),
                (false, false, false) => {
                    return Err(usage(
                        "no flow: pass --flow (password, device-code, client-secret, client-certificate, \
                         refresh, auth-code) or set `flow` in the profile; a device-code sign-in needs a person \
                         at a terminal",
                    ));
                }
                _ => {
                    return Err(usage(
                        "--password-stdin, --certificate and --secret-file name different flows; pass --flow",
                    ));
                }
            };
            eprintln!("m365mail: using the {} flow ({why})", flow.as_str());
            return Ok(flow);
        }
    };
    let unused = |flag: &str| {
        usage(format!(
            "{flag} is not used by the {} flow; drop it or pass the --flow that uses it",
            flow.as_str()
        ))
    };
    if auth.password_stdin && flow != FlowName::Password {
        return Err(unused("--password-stdin"));
    }
    if certificate && flow != FlowName::ClientCertificate {
        return Err(unused(if auth.certificate.is_some() {
            "--certificate"
        } else {
            "--private-key"
        }));
    }
    // A secret also serves a confidential client's password, refresh or auth-code flow.
    if auth.secret_file.is_some()
        && matches!(flow, FlowName::DeviceCode | FlowName::ClientCertificate)
    {
        return Err(unused("--secret-file"));
    }
    Ok(flow)
}

/// What the caller wants the token for.
pub(crate) enum ScopeChoice<'a> {
    /// `token get`: `--target` if given, else the profile's `scopes`, else its `target`, else IMAP.
    TokenGet { target: Option<&'a str> },
    /// A mail command: the protocol's scopes (`--scope` still overrides).
    Mail(Target),
    /// Graph calls: these delegated scopes (with `offline_access`), or `/.default` app-only.
    Graph(&'static [&'static str]),
}

/// Everything a command needs to talk to Microsoft 365 for one profile.
pub(crate) struct Session {
    pub(crate) profile_name: String,
    pub(crate) flow: FlowName,
    /// The cache account: the username, `default`, or `app` for app-only flows.
    pub(crate) account: String,
    pub(crate) provider: TokenProvider,
    /// The cache file, or `None` with `--no-cache`.
    pub(crate) cache_path: Option<PathBuf>,
    /// The profile as loaded (mail endpoints, mailbox, protocol).
    pub(crate) profile: Profile,
    /// The resolved authority, client id, username.
    pub(crate) settings: Settings,
    /// The TLS trust every connection of this session uses.
    pub(crate) trust: TlsTrust,
}

/// The mailbox a command opens when it names none: `given` (--mailbox), the profile's `mailbox`, else —
/// delegated only — the signed-in user (the token's account, else the profile's username). `None` for an
/// app-only flow without either: each command words what it needs.
pub(crate) fn default_mailbox(
    given: Option<&str>,
    session: &Session,
    token_account: Option<&str>,
) -> Option<String> {
    let delegated = !session.flow.is_app_only();
    given
        .map(str::to_owned)
        .or(session.profile.mailbox.clone())
        .or_else(|| {
            delegated
                .then(|| token_account.map(str::to_owned))
                .flatten()
        })
        .or_else(|| {
            delegated
                .then(|| session.settings.username.clone())
                .flatten()
        })
}

/// A Graph client for the session's Graph endpoint (the profile's `graph_url`, else the cloud's; the sandbox's own
/// host for a custom authority), with the session's trust.
pub(crate) fn graph_client(session: &Session) -> anyhow::Result<m365mail::graph::GraphClient> {
    let graph_url = session
        .profile
        .mail_spec()
        .resolve(&session.settings.authority.cloud)?
        .graph_url;
    Ok(m365mail::graph::GraphClient::new(
        m365mail::graph::GraphOptions::new(graph_url, session.trust.clone()),
    )?)
}

/// Resolves the profile and flags into a [`Session`]. Nothing is sent and no secret is read here, except a
/// client secret or certificate the flow needs up front.
pub(crate) fn build(
    global: &GlobalArgs,
    connection: &ProfileArgs,
    auth: &AuthArgs,
    choice: ScopeChoice<'_>,
) -> anyhow::Result<Session> {
    let (profile_name, profile) = load_profile(global)?;
    let s = settings(&profile, connection)?;
    let flow = choose_flow(auth, profile.flow, std::io::stdin().is_terminal())?;
    let access = if flow.is_app_only() {
        Access::AppOnly
    } else {
        Access::Delegated
    };
    // Refuse a tenant alias the grant cannot use before prompting for anything.
    s.authority.check_grant(match flow {
        FlowName::Password => Grant::Password,
        FlowName::DeviceCode => Grant::DeviceCode,
        FlowName::ClientSecret | FlowName::ClientCertificate => Grant::ClientCredentials,
        FlowName::Refresh => Grant::RefreshToken,
        FlowName::AuthCode => Grant::AuthCode,
    })?;
    let scopes = if !auth.scopes.is_empty() {
        Scopes::new(auth.scopes.clone())
    } else {
        match choice {
            ScopeChoice::TokenGet { target: None } if profile.scopes.is_some() => {
                Scopes::new(profile.scopes.clone().unwrap_or_default())
            }
            ScopeChoice::TokenGet { target } => {
                let target: Target = target
                    .or(profile.target.as_deref())
                    .unwrap_or("imap")
                    .parse()?;
                Scopes::for_target(target, access, &s.authority.cloud)
            }
            ScopeChoice::Mail(target) => Scopes::for_target(target, access, &s.authority.cloud),
            ScopeChoice::Graph(scopes) => {
                let graph = m365mail::cloud::endpoints(&s.authority.cloud).graph_resource;
                match access {
                    Access::AppOnly => Scopes::new([format!("{graph}/.default")]),
                    Access::Delegated => Scopes::new(
                        scopes
                            .iter()
                            .map(|scope| format!("{graph}/{scope}"))
                            .chain(["offline_access".to_owned()]),
                    ),
                }
            }
        }
    };
    // Refused before any prompt or request (exit 2): no scope, or CR/LF and other control characters.
    scopes.validate()?;
    // A bad mail endpoint key fails now, not at the first connection.
    profile.mail_spec().resolve(&s.authority.cloud)?;
    let trust = match &s.ca_file {
        Some(path) => TlsTrust::system().with_ca_file(path)?,
        None => TlsTrust::system(),
    };

    let credential = match flow {
        FlowName::ClientCertificate => {
            let cert = auth
                .certificate
                .clone()
                .or_else(|| profile.certificate.clone());
            let key = auth
                .private_key
                .clone()
                .or_else(|| profile.private_key.clone());
            let (Some(cert), Some(key)) = (cert, key) else {
                return Err(usage(
                    "client-certificate flow needs `certificate` and `private_key` (PEM files)",
                ));
            };
            let alg: AssertionAlg = auth
                .assertion_alg
                .as_deref()
                .or(profile.assertion_alg.as_deref())
                .unwrap_or("RS256")
                .parse()?;
            ClientCredential::Certificate {
                cert: Arc::new(CertificateCredential::from_files(&cert, &key)?),
                alg,
            }
        }
        FlowName::ClientSecret => secret_credential(client_secret(auth, &profile, true)?, &profile),
        _ => match client_secret(auth, &profile, false)? {
            Some(secret) => secret_credential(Some(secret), &profile),
            None => ClientCredential::Public,
        },
    };
    let client = TokenClient::new(
        s.authority.clone(),
        s.client_id.clone(),
        credential,
        ClientOptions {
            trust: Some(trust.clone()),
            timeout: Duration::from_secs(auth.timeout),
            ..ClientOptions::default()
        },
    )?;

    let account = if flow.is_app_only() {
        "app".to_owned()
    } else {
        s.username.clone().unwrap_or_else(|| "default".to_owned())
    };
    let source: Arc<dyn TokenSource> = match flow {
        FlowName::Password => {
            let username = s
                .username
                .clone()
                .ok_or_else(|| usage("password flow needs `username` (profile) or --username"))?;
            // Read the password only if the flow must run: a cached token or refresh token needs none.
            let sources = PasswordSources {
                stdin: auth.password_stdin,
                file: profile.password_file.clone(),
                command: profile.password_command.clone(),
            };
            Arc::new(LazyPassword {
                client,
                username: username.clone(),
                password: std::sync::Mutex::new(None),
                read: Box::new(move || {
                    password(&sources, &username).map_err(|e| AuthError::InvalidInput {
                        field: "password",
                        reason: e.to_string(),
                    })
                }),
            })
        }
        FlowName::DeviceCode => Arc::new(FlowSource {
            client,
            flow: Flow::DeviceCode {
                on_code: Arc::new(|code| eprintln!("{}", code.message)),
            },
        }),
        FlowName::ClientSecret | FlowName::ClientCertificate => Arc::new(FlowSource {
            client,
            flow: Flow::ClientCredentials,
        }),
        FlowName::AuthCode => Arc::new(FlowSource {
            client,
            flow: Flow::AuthCode {
                options: AuthCodeOptions {
                    login_hint: s.username.clone(),
                    // Checked before the browser is told the sign-in is complete.
                    expected_account: s.username.clone(),
                    ..Default::default()
                },
                open_browser: Arc::new(|url| {
                    eprintln!("Open this URL in a browser to sign in:\n{url}");
                    open_in_browser(url.as_str());
                }),
            },
        }),
        FlowName::Refresh => match std::env::var("M365MAIL_REFRESH_TOKEN") {
            Ok(rt) if !rt.is_empty() => Arc::new(FlowSource {
                client,
                flow: Flow::RefreshToken {
                    refresh_token: Secret::new(rt),
                },
            }),
            _ => Arc::new(RefreshOnly(client)),
        },
    };

    let cache = if auth.no_cache {
        TokenCache::in_memory()
    } else {
        // Waiting for another process's lock is bounded by the same --timeout as each HTTP request.
        open_cache(s.cache_path.clone())?.with_lock_timeout(Duration::from_secs(auth.timeout))
    };
    let cache_path = cache.path().map(PathBuf::from);
    let key = CacheKey::new(&s.authority, &s.client_id, &account, &scopes);
    let provider = TokenProvider::new(source, Arc::new(cache), key, scopes, Arc::new(SystemClock))
        .with_margin(Duration::from_secs(auth.margin))
        // Interactive sign-ins (and a supplied refresh token) may be completed by another user than --username:
        // such a token is refused rather than cached under --username. (Password: Entra signs in that username.)
        .with_expected_account(match flow {
            FlowName::DeviceCode | FlowName::AuthCode | FlowName::Refresh => s.username.clone(),
            _ => None,
        });
    Ok(Session {
        profile_name,
        flow,
        account,
        provider,
        cache_path,
        profile,
        settings: s,
        trust,
    })
}

/// A mail protocol's endpoint for a command: the `--pop`/`--smtp`… `HOST:PORT` and TLS-mode flags when given,
/// else the profile's keys, else the cloud's default; with a custom authority (the sandbox, a test issuer) and
/// neither, a usage error that says which key to set.
pub(crate) fn mail_endpoint(
    session: &Session,
    target: Target,
    address_flag: Option<&str>,
    tls_flag: Option<&str>,
) -> anyhow::Result<m365mail::endpoint::MailEndpoint> {
    use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
    let endpoints = session
        .profile
        .mail_spec()
        .resolve(&session.settings.authority.cloud)?;
    let (configured, resolved, name, key, flag) = match target {
        Target::Pop => (
            session.profile.pop.as_deref(),
            endpoints.pop,
            "POP3",
            "pop",
            "--pop",
        ),
        Target::Imap => (
            session.profile.imap.as_deref(),
            endpoints.imap,
            "IMAP",
            "imap",
            "--imap",
        ),
        _ => (
            session.profile.smtp.as_deref(),
            endpoints.smtp,
            "SMTP",
            "smtp",
            "--smtp",
        ),
    };
    if address_flag.is_none()
        && let crate::profile_cmd::EndpointSource::NotConfigured =
            crate::profile_cmd::endpoint_source(
                configured,
                &session.settings.authority.cloud,
                &resolved,
            )
    {
        return Err(usage(format!(
            "{name} is not configured for profile {}: with a custom authority there is no default server; set \
             `{key} = \"host:port\"` in the profile or pass {flag} HOST:PORT",
            session.profile_name
        )));
    }
    Ok(MailEndpoint {
        address: match address_flag {
            Some(text) => HostPort::parse(flag, text)?,
            None => resolved.address,
        },
        tls: match tls_flag {
            Some(text) => text.parse::<TlsMode>()?,
            None => resolved.tls,
        },
    })
}
