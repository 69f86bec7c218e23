//! `m365mail token get | inspect | clear`.
//!
//! Secrets never come from argv: passwords from `M365MAIL_PASSWORD`, `--password-stdin` or a no-echo prompt;
//! client secrets from `M365MAIL_CLIENT_SECRET`, `--secret-file` or a prompt; tokens to inspect from stdin or
//! `--file`. The access token is printed only with `--show-token` (text: the bare token on stdout; JSON: an
//! `access_token` field); otherwise `token get` reports expiry, scopes and origin only.
//!
//! Defaults: flow `device-code`, target `imap` (delegated scopes, or `/.default` for the client-credential
//! flows), cache in the user data dir, reuse margin 300 s (`--margin`). A password is read only when the
//! password flow actually has to run (not when a cached token or refresh token serves). `--flow auth-code`
//! prints the authorize URL (and tries the desktop browser when a person is at the terminal;
//! `M365MAIL_NO_BROWSER` disables that). Ctrl-C cancels a running flow (exit 8).
//!
//! Exit codes (see [`exit_code`]): 0 ok, 1 other, 2 usage/config file, 3 user credentials or sign-in needed,
//! 4 admin action needed, 5 connector configuration, 6 switch flow, 7 transient/network, 8 flow state or
//! cancelled.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use m365mail::auth::provider::{FlowSource, TokenOrigin};
use m365mail::auth::{
    Access, AccessToken, AssertionAlg, AuthCodeOptions, AuthError, Authority, CacheKey,
    CertificateCredential, ClientCredential, ClientOptions, Cloud, ErrorClass, Flow, Grant,
    Inspection, Scopes, Target, Tenant, TokenCache, TokenClient, TokenProvider, TokenResponse,
    TokenSource,
};
use m365mail::secret::Secret;
use m365mail::time::{BoxFuture, Clock as _, SystemClock, rfc3339, unix_secs};
use serde_json::json;

use crate::GlobalArgs;
use crate::config::{ConfigFile, FlowName, Profile, SecretAuth, usage};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Get an access token with the profile's flow (cached tokens are reused; refresh tokens are rotated).
    Get(Box<GetArgs>),
    /// Decode a token without verifying it and say which protocols it can serve. Reads stdin (or --file); never
    /// argv.
    Inspect(InspectArgs),
    /// Remove cached tokens (the profile's app and account, or everything with --all).
    Clear(Box<ClearArgs>),
}

/// Connection settings; each overrides the profile's value.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ProfileArgs {
    /// Tenant GUID, domain, `organizations`, `common` or `consumers`.
    #[arg(long)]
    tenant: Option<String>,
    /// Application (client) id.
    #[arg(long)]
    client_id: Option<String>,
    /// Username (UPN) for password flow, and the cache account for delegated flows (without it: `default`, whoever
    /// signs in). Device-code, auth-code and refresh tokens for another user are refused, not cached under it.
    #[arg(long)]
    username: Option<String>,
    /// Cloud: global, usgov, china.
    #[arg(long, conflicts_with = "authority")]
    cloud: Option<String>,
    /// Custom authority base URL (e.g. the sandbox https://127.0.0.1:8443/).
    #[arg(long)]
    authority: Option<String>,
    /// Extra CA certificate(s) to trust (PEM file), e.g. the sandbox CA.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Token cache file (default: the user data dir).
    #[arg(long)]
    cache: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Flow (overrides the profile).
    #[arg(long, value_enum)]
    flow: Option<FlowName>,
    /// What the token is for: imap, pop, smtp, graph (default imap).
    #[arg(long)]
    target: Option<String>,
    /// Explicit scope (repeatable); overrides --target.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Read the password from the first line of stdin.
    #[arg(long)]
    password_stdin: bool,
    /// Read the client secret from this file.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Client certificate (PEM) for client-certificate flow.
    #[arg(long)]
    certificate: Option<PathBuf>,
    /// Private key (PEM) for client-certificate flow.
    #[arg(long)]
    private_key: Option<PathBuf>,
    /// Assertion algorithm: RS256 (x5t) or PS256 (x5t#S256).
    #[arg(long)]
    assertion_alg: Option<String>,
    /// Neither read nor write the token cache.
    #[arg(long)]
    no_cache: bool,
    /// Ignore a cached access token (a cached refresh token is still used).
    #[arg(long)]
    force: bool,
    /// Reuse a cached access token only if it stays valid this many more seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    margin: u64,
    /// Print the access token (text: alone on stdout; JSON: the `access_token` field).
    #[arg(long)]
    show_token: bool,
    /// Timeout of each HTTP request to the identity endpoint, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "M365MAIL_HTTP_TIMEOUT",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    timeout: u64,
}

/// Tokens are never taken from argv (other users can read it in the process list, and shells keep history).
#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// `-`: read the token from stdin (the default). Anything else is refused (without being echoed).
    #[arg(value_name = "-", value_parser = argv_secret, conflicts_with = "file")]
    stdin: Option<Secret>,
    /// Read the token from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ClearArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Remove every cached token.
    #[arg(long)]
    all: bool,
}

/// Runs a `token` subcommand. With `--json`, an error is also printed as JSON on stdout.
pub(crate) async fn run(command: TokenCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let result = match command {
        TokenCommand::Get(args) => get(*args, global).await,
        TokenCommand::Inspect(args) => inspect(args, global),
        TokenCommand::Clear(args) => clear(*args, global),
    };
    if let Err(err) = &result
        && global.json
    {
        println!("{}", error_json(err));
    }
    result
}

/// Exit code for an error, by cause: 2 usage/config (including invalid input values), 3 user, 4 admin, 5 connector config, 6 switch flow,
/// 7 transient, 8 flow state/cancelled, 1 other.
pub(crate) fn exit_code(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(exit_code_num(err))
}

fn exit_code_num(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<crate::config::UsageError>().is_some() {
            return 2;
        }
        if let Some(auth) = cause.downcast_ref::<AuthError>() {
            if matches!(auth, AuthError::InvalidInput { .. }) {
                // A bad or missing value the user supplies (tenant, client id, password source).
                return 2;
            }
            return match auth.class() {
                ErrorClass::User => 3,
                ErrorClass::Admin => 4,
                ErrorClass::Config => 5,
                ErrorClass::SwitchFlow => 6,
                ErrorClass::Transient => 7,
                ErrorClass::FlowState => 8,
            };
        }
    }
    1
}

fn error_json(err: &anyhow::Error) -> serde_json::Value {
    let auth = err.chain().find_map(|c| c.downcast_ref::<AuthError>());
    let mut e = json!({ "message": format!("{err:#}"), "exit_code": exit_code_num(err) });
    if let Some(a) = auth {
        e["class"] = json!(a.class());
        e["cause"] = json!(a.cause());
        e["remedy"] = json!(a.remedy());
        if let Some(at) = a.retry_at() {
            e["retry_at"] = json!(rfc3339(unix_secs(at)));
        }
        if let Some(entra) = a.entra() {
            e["error"] = json!(entra.error);
            e["error_codes"] = json!(entra.error_codes);
            e["suberror"] = json!(entra.suberror);
            e["trace_id"] = json!(entra.trace_id);
            e["correlation_id"] = json!(entra.correlation_id);
            e["client_request_id"] = json!(entra.client_request_id);
        }
    }
    json!({ "ok": false, "error": e })
}

/// Profile + flags, validated.
struct Settings {
    authority: Authority,
    client_id: String,
    username: Option<String>,
    ca_file: Option<PathBuf>,
    cache_path: Option<PathBuf>,
}

fn settings(profile: &Profile, args: &ProfileArgs) -> anyhow::Result<Settings> {
    let no_tenant = || usage("no tenant: set `tenant` in the profile or pass --tenant");
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
        .ok_or_else(|| usage("no client id: set `client_id` in the profile or pass --client-id"))?;
    Ok(Settings {
        authority,
        client_id,
        username: args.username.clone().or_else(|| profile.username.clone()),
        ca_file: args.ca_file.clone().or_else(|| profile.ca_file.clone()),
        cache_path: args.cache.clone().or_else(|| profile.cache.clone()),
    })
}

fn load_profile(global: &GlobalArgs) -> anyhow::Result<(String, Profile)> {
    let (cfg, _) = ConfigFile::load(global.config.as_deref())?;
    cfg.profile(global.profile.as_deref())
}

fn open_cache(path: Option<PathBuf>) -> anyhow::Result<TokenCache> {
    let path = path.or_else(TokenCache::default_path).ok_or_else(|| {
        usage("cannot determine the user data dir for the token cache; set `cache` or --cache")
    })?;
    Ok(TokenCache::open(path)?)
}

fn read_stdin_line(what: &str) -> anyhow::Result<Secret> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| usage(format!("reading the {what} from stdin: {e}")))?;
    without_line_ending(Secret::new(line), || format!("empty {what} on stdin"))
}

/// A secret kept in a file (a client secret, a token to inspect), without its final line ending.
fn read_secret_file(path: &std::path::Path, flag: &str) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("{flag} {}: {e}", path.display())))?;
    without_line_ending(Secret::new(text), || {
        format!("{flag} {} is empty", path.display())
    })
}

/// Strips only the line ending (leading and trailing spaces may be part of a secret); empty is an error.
fn without_line_ending(text: Secret, empty: impl FnOnce() -> String) -> anyhow::Result<Secret> {
    let value = text.expose().trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(usage(empty()));
    }
    Ok(Secret::new(value))
}

fn password(password_stdin: bool, username: &str) -> anyhow::Result<Secret> {
    if password_stdin {
        return read_stdin_line("password");
    }
    if let Ok(v) = std::env::var("M365MAIL_PASSWORD")
        && !v.is_empty()
    {
        return Ok(Secret::new(v));
    }
    if std::io::stdin().is_terminal() {
        let v = rpassword::prompt_password(format!("Password for {username}: "))
            .map_err(|e| usage(format!("password prompt: {e}")))?;
        return Ok(Secret::new(v));
    }
    Err(usage(
        "no password: set M365MAIL_PASSWORD, pass --password-stdin, or run in a terminal",
    ))
}

/// The client secret, if one was supplied; `required` prompts on a terminal when none was.
fn client_secret(args: &GetArgs, required: bool) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = &args.secret_file {
        return read_secret_file(path, "--secret-file").map(Some);
    }
    if let Ok(v) = std::env::var("M365MAIL_CLIENT_SECRET")
        && !v.is_empty()
    {
        return Ok(Some(Secret::new(v)));
    }
    if required {
        if std::io::stdin().is_terminal() {
            let v = rpassword::prompt_password("Client secret (value): ")
                .map_err(|e| usage(format!("secret prompt: {e}")))?;
            return Ok(Some(Secret::new(v)));
        }
        return Err(usage(
            "no client secret: set M365MAIL_CLIENT_SECRET, pass --secret-file, or run in a terminal",
        ));
    }
    Ok(None)
}

/// ROPC whose password is read (env, stdin or prompt) only when the flow actually has to run.
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

async fn get(args: GetArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let (profile_name, profile) = load_profile(global)?;
    let s = settings(&profile, &args.profile)?;
    let flow = args.flow.or(profile.flow).unwrap_or(FlowName::DeviceCode);
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
    let scopes = if !args.scopes.is_empty() {
        Scopes::new(args.scopes.clone())
    } else if let (None, Some(list)) = (&args.target, &profile.scopes) {
        Scopes::new(list.clone())
    } else {
        let target: Target = args
            .target
            .as_deref()
            .or(profile.target.as_deref())
            .unwrap_or("imap")
            .parse()?;
        Scopes::for_target(target, access, &s.authority.cloud)
    };
    // Refused before any prompt or request (exit 2): no scope, or CR/LF and other control characters.
    scopes.validate()?;

    // Client credential.
    let credential = match flow {
        FlowName::ClientCertificate => {
            let cert = args
                .certificate
                .clone()
                .or_else(|| profile.certificate.clone());
            let key = args
                .private_key
                .clone()
                .or_else(|| profile.private_key.clone());
            let (Some(cert), Some(key)) = (cert, key) else {
                return Err(usage(
                    "client-certificate flow needs `certificate` and `private_key` (PEM files)",
                ));
            };
            let alg: AssertionAlg = args
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
        FlowName::ClientSecret => secret_credential(client_secret(&args, true)?, &profile),
        _ => match client_secret(&args, false)? {
            Some(secret) => secret_credential(Some(secret), &profile),
            None => ClientCredential::Public,
        },
    };
    let client = TokenClient::new(
        s.authority.clone(),
        s.client_id.clone(),
        credential,
        ClientOptions {
            ca_file: s.ca_file.clone(),
            timeout: std::time::Duration::from_secs(args.timeout),
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
            let password_stdin = args.password_stdin;
            Arc::new(LazyPassword {
                client,
                username: username.clone(),
                password: std::sync::Mutex::new(None),
                read: Box::new(move || {
                    password(password_stdin, &username).map_err(|e| AuthError::InvalidInput {
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

    let cache = if args.no_cache {
        TokenCache::in_memory()
    } else {
        // Waiting for another process's lock is bounded by the same --timeout as each HTTP request.
        open_cache(s.cache_path.clone())?
            .with_lock_timeout(std::time::Duration::from_secs(args.timeout))
    };
    let cache_path = cache.path().map(|p| p.display().to_string());
    let key = CacheKey::new(&s.authority, &s.client_id, &account, &scopes);
    let provider = TokenProvider::new(
        source,
        Arc::new(cache),
        key,
        scopes.clone(),
        Arc::new(SystemClock),
    )
    .with_margin(std::time::Duration::from_secs(args.margin))
    // Interactive sign-ins (and a supplied refresh token) may be completed by another user than --username:
    // such a token is refused rather than cached under --username. (Password: Entra signs in that username.)
    .with_expected_account(match flow {
        FlowName::DeviceCode | FlowName::AuthCode | FlowName::Refresh => s.username.clone(),
        _ => None,
    });
    let fut = async {
        if args.force || flow == FlowName::Refresh {
            provider.force_renew().await
        } else {
            provider.token().await
        }
    };
    let token = tokio::select! {
        r = fut => r?,
        _ = tokio::signal::ctrl_c() => return Err(AuthError::Cancelled.into()),
    };
    print_token(
        &token,
        &profile_name,
        flow,
        &account,
        cache_path,
        &args,
        global,
    );
    Ok(ExitCode::SUCCESS)
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

fn print_token(
    token: &AccessToken,
    profile: &str,
    flow: FlowName,
    account: &str,
    cache_path: Option<String>,
    args: &GetArgs,
    global: &GlobalArgs,
) {
    let now = SystemClock.now();
    let expires_at = unix_secs(token.expires_at);
    let expires_in = token
        .expires_at
        .duration_since(now)
        .unwrap_or_default()
        .as_secs();
    let origin = match token.origin {
        TokenOrigin::Cache => "cache",
        TokenOrigin::Refresh => "refresh",
        TokenOrigin::Flow => "flow",
    };
    if global.json {
        let mut out = json!({
            "ok": true,
            "profile": profile,
            "flow": flow.as_str(),
            "account": account,
            "signed_in_as": token.account,
            "origin": origin,
            "expires_at": expires_at,
            "expires_at_utc": rfc3339(expires_at),
            "expires_in": expires_in,
            "scope": token.scope,
            "has_refresh_token": token.has_refresh_token,
            "cache": cache_path,
        });
        if args.show_token {
            out["token_type"] = json!("Bearer");
            out["access_token"] = json!(token.token.expose());
        }
        println!("{out}");
    } else if args.show_token {
        println!("{}", token.token.expose());
    } else {
        println!(
            "Access token for {account} ({} flow, from {origin})",
            flow.as_str()
        );
        if let Some(user) = token
            .account
            .as_deref()
            .filter(|u| !u.eq_ignore_ascii_case(account))
        {
            println!("  signed in as:   {user}");
        }
        println!(
            "  expires:        {} (in {} min)",
            rfc3339(expires_at),
            expires_in / 60
        );
        if let Some(scope) = &token.scope {
            println!("  scope:          {scope}");
        }
        println!(
            "  refresh token:  {}",
            if token.has_refresh_token {
                "cached"
            } else {
                "none"
            }
        );
        println!(
            "  cache:          {}",
            cache_path.as_deref().unwrap_or("off")
        );
        println!("  (use --show-token to print the token, or `token inspect` to decode it)");
    }
}

/// Wraps an argv value that must not be echoed (clap quotes a rejected value in its error).
fn argv_secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(value))
}

fn inspect(args: InspectArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    if args.stdin.as_ref().is_some_and(|v| v.expose() != "-") {
        return Err(usage(
            "tokens are not accepted on the command line (other users can see argv); pipe the token on stdin \
             or pass --file PATH",
        ));
    }
    let token = match &args.file {
        Some(path) => read_secret_file(path, "--file")?,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| usage(format!("reading the token from stdin: {e}")))?;
            without_line_ending(Secret::new(text), || {
                "no token given (pass it on stdin or with --file)".to_owned()
            })?
        }
    };
    // `inspect` trims surrounding white space itself; white space alone is no token.
    if token.expose().trim().is_empty() {
        return Err(usage("no token given (pass it on stdin or with --file)"));
    }
    let inspection = m365mail::auth::inspect(token.expose(), &SystemClock);
    if global.json {
        println!("{}", serde_json::to_string(&inspection).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    match inspection {
        Inspection::Opaque { reason } => println!("{reason}"),
        Inspection::Jwt(info) => {
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            println!(
                "header:  alg={} kid={} x5t={}",
                opt(&info.alg),
                opt(&info.kid),
                opt(&info.x5t)
            );
            println!("aud:     {}", info.aud.join(", "));
            println!("iss:     {}", opt(&info.iss));
            println!("tid:     {}", opt(&info.tid));
            println!("user:    {}", opt(&info.user));
            println!("oid:     {}", opt(&info.oid));
            println!("appid:   {}", opt(&info.appid));
            println!("kind:    {:?}", info.kind);
            if !info.scp.is_empty() {
                println!("scp:     {}", info.scp.join(" "));
            }
            if !info.roles.is_empty() {
                println!("roles:   {}", info.roles.join(" "));
            }
            let t = |v: Option<u64>| v.map(rfc3339).unwrap_or_else(|| "-".into());
            println!("iat:     {}", t(info.iat));
            println!("nbf:     {}", t(info.nbf));
            println!(
                "exp:     {}{}",
                t(info.exp),
                if info.expired { " (EXPIRED)" } else { "" }
            );
            println!("usable for:");
            for v in &info.verdicts {
                println!(
                    "  {:<10} {:<3} {}",
                    v.protocol,
                    if v.usable { "yes" } else { "no" },
                    v.reason
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn clear(args: ClearArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let (_, profile) = load_profile(global)?;
    let cache_path = args.profile.cache.clone().or_else(|| profile.cache.clone());
    let cache = open_cache(cache_path)?;
    let removed = if args.all {
        cache.clear()?
    } else {
        let s = settings(&profile, &args.profile)
            .map_err(|e| usage(format!("{e:#}; or pass --all to clear every cached token")))?;
        let prefix = CacheKey::prefix(&s.authority, &s.client_id, s.username.as_deref());
        cache.remove_where(|k| k.starts_with(&prefix))?
    };
    if global.json {
        println!(
            "{}",
            json!({ "ok": true, "removed": removed, "cache": cache.path().map(|p| p.display().to_string()) })
        );
    } else {
        println!("removed {removed} cached token set(s)");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_by_class() {
        let e = |a: AuthError| exit_code_num(&anyhow::Error::from(a));
        assert_eq!(exit_code_num(&usage("x")), 2);
        let entra = |j: &str| {
            AuthError::from(m365mail::auth::EntraError::parse(400, j.as_bytes()).unwrap())
        };
        assert_eq!(
            e(entra(r#"{"error":"invalid_grant","error_codes":[50126]}"#)),
            3
        );
        assert_eq!(
            e(entra(r#"{"error":"invalid_grant","error_codes":[53003]}"#)),
            4
        );
        assert_eq!(
            e(entra(
                r#"{"error":"invalid_client","error_codes":[7000218]}"#
            )),
            5
        );
        assert_eq!(
            e(entra(r#"{"error":"invalid_grant","error_codes":[50076]}"#)),
            6
        );
        assert_eq!(e(AuthError::Timeout { url: "u".into() }), 7);
        assert_eq!(e(AuthError::Cancelled), 8);
        assert_eq!(
            e(AuthError::InvalidInput {
                field: "password",
                reason: "none".into()
            }),
            2
        );
        assert_eq!(exit_code_num(&anyhow::anyhow!("other")), 1);
        let wrapped = anyhow::Error::from(AuthError::Cancelled).context("while getting a token");
        assert_eq!(exit_code_num(&wrapped), 8);
    }
}
