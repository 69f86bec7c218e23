//! `m365mail doctor`: every step of the Microsoft 365 procedure checked in order for one profile, each
//! pass / fail / warn / skip with, on failure, its cause and the exact remedy ([`m365mail::doctor`] has the
//! steps and the AADSTS → step mapping). Nothing is changed and no secret is printed; nothing is sent (SMTP
//! signs in and says QUIT; Graph send is judged from the token).

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Instant;

use m365mail::Classified;
use m365mail::auth::{AuthError, Inspection, Target, inspect};
use m365mail::doctor::{self, Check, Status};
use m365mail::error::ErrorClass;
use m365mail::setup::Protocol;
use m365mail::time::{Clock as _, SystemClock};
use serde_json::json;

use crate::GlobalArgs;
use crate::config::{FlowName, usage};
use crate::session::{self, AuthArgs, ProfileArgs, ScopeChoice, Session, load_profile};

/// `m365mail doctor`.
#[derive(Debug, clap::Args)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// What to check, comma-separated: imap, pop, smtp, graph (default: all four).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    protocols: Vec<String>,
    /// The mailbox the protocol steps open. Default: the profile's `mailbox`, else the signed-in user.
    #[arg(long)]
    mailbox: Option<String>,
    /// Also sign an administrator in with this profile (as `setup` does) and check what only an admin can
    /// read: the registration's permissions against those granted, and secrets or certificates that expire
    /// within 30 days.
    #[arg(long, value_name = "ADMIN-PROFILE")]
    admin: Option<String>,
}

fn protocols(given: &[String]) -> anyhow::Result<Vec<Protocol>> {
    Protocol::parse_list(given).map_err(usage)
}

/// Runs `doctor`.
pub(crate) async fn run(args: DoctorArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let (profile_name, checks) = run_checks(&args, global).await?;
    if global.json {
        println!("{}", json!({ "profile": profile_name, "checks": checks }));
    } else {
        print!(
            "{}",
            doctor::render_table(&checks, std::io::stdout().is_terminal())
        );
        eprintln!("{}", summary(&profile_name, &checks));
    }
    Ok(doctor::first_failure(&checks)
        .map_or(ExitCode::SUCCESS, |class| ExitCode::from(class.exit_code())))
}

/// Every check for the profile `global` names, printing nothing (the demo shows them its own way): the
/// profile's name and the checks.
pub(crate) async fn run_checks(
    args: &DoctorArgs,
    global: &GlobalArgs,
) -> anyhow::Result<(String, Vec<Check>)> {
    let chosen = protocols(&args.protocols)?;
    let (profile_name, _) = load_profile(global)?;
    let checks = Doctor {
        args,
        global,
        chosen: chosen.clone(),
        checks: Vec::new(),
    }
    .run()
    .await;
    let checks = Doctor {
        args,
        global,
        chosen,
        checks,
    }
    .with_admin_checks()
    .await;
    Ok((profile_name, checks))
}

/// The closing line: how many checks passed, failed, warned and were skipped, and how long they took.
pub(crate) fn summary(profile_name: &str, checks: &[Check]) -> String {
    let count = |status: Status| checks.iter().filter(|c| c.status == status).count();
    let seconds: f64 = checks.iter().map(|c| c.seconds).sum();
    format!(
        "doctor: profile {profile_name}: {} passed, {} failed, {} warned, {} skipped in {seconds:.2} s",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Warn),
        count(Status::Skip),
    )
}

struct Doctor<'a> {
    args: &'a DoctorArgs,
    global: &'a GlobalArgs,
    chosen: Vec<Protocol>,
    checks: Vec<Check>,
}

/// A failure of any layer as a check: its class, cause and remedy.
fn failed(id: &'static str, error: &anyhow::Error) -> Check {
    match crate::exit::classified(error) {
        Some(classified) => Check::fail(
            id,
            classified.class(),
            Classified::cause(classified),
            classified.remedy(),
        ),
        None => Check::fail(
            id,
            ErrorClass::Config,
            format!("{error:#}"),
            "see the message; `m365mail profile show` shows what the profile resolves to",
        ),
    }
}

impl Doctor<'_> {
    fn record(&mut self, check: Check, started: Instant) {
        self.checks
            .push(check.took(started.elapsed().as_secs_f64()));
    }

    /// Marks every step from `from` on (that is not recorded yet) as skipped.
    fn skip_rest(&mut self, why: &str) {
        for (id, _) in doctor::STEPS {
            if !self.checks.iter().any(|c| c.id == id) {
                self.checks.push(Check::skip(id, why));
            }
        }
    }

    fn session(&self, choice: ScopeChoice<'_>) -> anyhow::Result<Session> {
        session::build(self.global, &self.args.profile, &self.args.auth, choice)
    }

    fn wants(&self, protocol: Protocol) -> bool {
        self.chosen.contains(&protocol)
    }

    async fn run(mut self) -> Vec<Check> {
        // 1. profile
        let started = Instant::now();
        let first_target = match self.chosen.first() {
            Some(Protocol::Pop) => Target::Pop,
            Some(Protocol::Smtp) => Target::Smtp,
            Some(Protocol::Graph) => Target::Graph,
            _ => Target::Imap,
        };
        let session = match self.profile_check(first_target) {
            Ok(session) => {
                let seen = format!(
                    "tenant {}, client id {}, flow {}",
                    session.settings.authority.url(),
                    session.settings.client_id,
                    session.flow.as_str()
                );
                self.record(Check::pass("profile", seen), started);
                session
            }
            Err(check) => {
                self.record(check, started);
                self.skip_rest("the profile step failed");
                return self.checks;
            }
        };

        // 2. tenant
        let started = Instant::now();
        let tenant = self.tenant_check(&session).await;
        let tenant_ok = tenant.status != Status::Fail;
        self.record(tenant, started);
        if !tenant_ok {
            self.skip_rest("the tenant step failed");
            return self.checks;
        }

        // 3-6. app, public client, credential, consent: from the first token request, run afresh for a flow
        // that needs no person (a cached token would hide a broken credential).
        let started = Instant::now();
        let first = match session.flow {
            FlowName::Password | FlowName::ClientSecret | FlowName::ClientCertificate => {
                session.provider.run_flow().await
            }
            // The cached refresh token is what this flow stands on: redeem it, whatever access token is cached.
            FlowName::Refresh => session.provider.force_renew().await,
            FlowName::DeviceCode | FlowName::AuthCode => session.provider.token().await,
        };
        let elapsed = started.elapsed().as_secs_f64();
        let public = !session.flow.is_app_only();
        match &first {
            Ok(token) => {
                let claims = match inspect(token.token.expose(), &SystemClock) {
                    Inspection::Jwt(info) if !info.roles.is_empty() => {
                        format!("roles {}", info.roles.join(" "))
                    }
                    Inspection::Jwt(info) => format!("scp {}", info.scp.join(" ")),
                    Inspection::Opaque { reason } => reason,
                };
                self.checks.push(
                    Check::pass(
                        "app",
                        format!("{} is known to the tenant", session.settings.client_id),
                    )
                    .took(elapsed),
                );
                self.checks.push(if public {
                    Check::pass(
                        "public-client",
                        format!("the {} flow ran", session.flow.as_str()),
                    )
                } else {
                    Check::skip(
                        "public-client",
                        "not needed: a confidential client (app-only)",
                    )
                });
                self.checks.push(Check::pass(
                    "credential",
                    format!("the {} flow was accepted", session.flow.as_str()),
                ));
                self.checks.push(Check::pass("consent", claims));
            }
            Err(error) => {
                let code = match error {
                    AuthError::Entra(entra) => entra.error_codes.first().copied(),
                    _ => None,
                };
                let step = code
                    .and_then(doctor::step_for_aadsts)
                    .unwrap_or("credential");
                let order = ["app", "public-client", "credential", "consent", "token"];
                let at = order.iter().position(|s| *s == step).unwrap_or(2);
                for (index, id) in order.iter().enumerate().take(at) {
                    // The refusal came from a later step, so the earlier ones held.
                    let check = if *id == "public-client" && !public {
                        Check::skip(id, "not needed: a confidential client (app-only)")
                    } else {
                        Check::pass(id, "")
                    };
                    self.checks.push(if index == 0 {
                        check.took(elapsed)
                    } else {
                        check
                    });
                }
                // The code leads the cause: it is what Microsoft's pages and support ask for.
                let cause = match code {
                    Some(code) => format!("AADSTS{code}: {}", error.cause()),
                    None => error.cause(),
                };
                self.checks.push(
                    Check::fail(order[at], error.class(), cause, error.remedy()).took(if at == 0 {
                        0.0
                    } else {
                        elapsed
                    }),
                );
                self.skip_rest(&format!("the {} step failed", order[at]));
                return self.checks;
            }
        }

        // 7. token: one per chosen protocol, each judged for its protocol.
        let started = Instant::now();
        let mut tokens: HashMap<Protocol, (Session, m365mail::auth::AccessToken)> = HashMap::new();
        let mut problems = Vec::new();
        let mut problem_class = None;
        for protocol in self.chosen.clone() {
            let (choice, verdict_name) = match protocol {
                Protocol::Imap => (ScopeChoice::Mail(Target::Imap), "imap"),
                Protocol::Pop => (ScopeChoice::Mail(Target::Pop), "pop"),
                Protocol::Smtp => (ScopeChoice::Mail(Target::Smtp), "smtp"),
                Protocol::Graph => (ScopeChoice::Graph(&["Mail.Send"]), "graph-send"),
            };
            let session = match self.session(choice) {
                Ok(session) => session,
                Err(error) => {
                    problems.push(format!("{verdict_name}: {error:#}"));
                    continue;
                }
            };
            match session.provider.token().await {
                Ok(token) => {
                    if protocol != Protocol::Graph
                        && let Inspection::Jwt(info) = inspect(token.token.expose(), &SystemClock)
                        && let Some(verdict) =
                            info.verdicts.iter().find(|v| v.protocol == verdict_name)
                        && !verdict.usable
                    {
                        problems.push(format!("{verdict_name}: {}", verdict.reason));
                        problem_class.get_or_insert(ErrorClass::Admin);
                    }
                    tokens.insert(protocol, (session, token));
                }
                Err(error) => {
                    problems.push(format!("{verdict_name}: {}", error.cause()));
                    problem_class.get_or_insert(error.class());
                }
            }
        }
        let check = if problems.is_empty() {
            Check::pass(
                "token",
                format!("{} token(s), each usable for its protocol", tokens.len()),
            )
        } else {
            Check::fail(
                "token",
                problem_class.unwrap_or(ErrorClass::Admin),
                problems.join("; "),
                "add the missing permission to the app registration and grant consent (delegated: \
                 IMAP.AccessAsUser.All, POP.AccessAsUser.All, SMTP.Send, Graph Mail.Send / Mail.Read; \
                 app-only: IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp on Office 365 Exchange Online, \
                 Graph Mail.Send / Mail.Read application permissions); inspect a token with \
                 `m365mail token get --target imap --show-token | m365mail token inspect`",
            )
        };
        self.record(check, started);

        // 8-13. the protocols.
        let mailbox = |session: &Session, token: &m365mail::auth::AccessToken| {
            session::default_mailbox(
                self.args.mailbox.as_deref(),
                session,
                token.account.as_deref(),
            )
        };
        for (id, protocol) in [
            ("imap", Protocol::Imap),
            ("pop", Protocol::Pop),
            ("smtp", Protocol::Smtp),
        ] {
            let started = Instant::now();
            let check = if !self.wants(protocol) {
                Check::skip(id, "not asked for (--protocols)")
            } else if let Some((session, token)) = tokens.get(&protocol) {
                match mailbox(session, token) {
                    Some(mailbox) => {
                        self.mail_check(id, protocol, session, token, &mailbox)
                            .await
                    }
                    None => Check::fail(
                        id,
                        ErrorClass::Config,
                        "an app-only token has no mailbox of its own",
                        "name the mailbox: --mailbox ADDRESS or the profile's `mailbox`",
                    ),
                }
            } else {
                Check::skip(id, "no token for it (see the token step)")
            };
            self.record(check, started);
        }
        self.graph_checks(tokens.get(&Protocol::Graph)).await;
        self.checks
    }

    /// `--admin`'s steps, whatever the others found: an administrator can read the registration even when
    /// the app cannot sign in (that is often why one asks).
    async fn with_admin_checks(mut self) -> Vec<Check> {
        let Some(admin) = self.args.admin.clone() else {
            return self.checks;
        };
        let client_id = match load_profile(self.global) {
            Ok((_, profile)) => self.args.profile.client_id.clone().or(profile.client_id),
            Err(_) => None,
        };
        let Some(client_id) = client_id else {
            self.checks.push(Check::skip(
                "registration",
                "the profile names no client_id",
            ));
            self.checks
                .push(Check::skip("expiry", "the profile names no client_id"));
            return self.checks;
        };
        let started = Instant::now();
        let (registration, expiry) = self.admin_checks(&admin, &client_id).await;
        self.record(registration, started);
        self.checks.push(expiry);
        self.checks
    }

    /// `--admin`: the registration, its grants and its credentials, read with an administrator's token.
    async fn admin_checks(&self, admin_profile: &str, client_id: &str) -> (Check, Check) {
        let outcome: anyhow::Result<(Check, Check)> = async {
            let global = GlobalArgs {
                profile: Some(admin_profile.to_owned()),
                ..self.global.clone()
            };
            let auth = AuthArgs {
                flow: None,
                scopes: Vec::new(),
                secret_file: None,
                certificate: None,
                private_key: None,
                ..self.args.auth.clone()
            };
            let mut profile_args = ProfileArgs {
                tenant: None,
                client_id: None,
                username: None,
                cloud: None,
                authority: None,
                ca_file: None,
                cache: None,
            };
            let (_, admin) = load_profile(&global)?;
            if admin.client_id.is_none() {
                profile_args.client_id = Some(m365mail::setup::GRAPH_CLI_TOOLS_APP_ID.to_owned());
            }
            let session = session::build(
                &global,
                &profile_args,
                &auth,
                ScopeChoice::Graph(&m365mail::setup::ADMIN_SCOPES),
            )?;
            let client = session::graph_client(&session)?;
            let token = session.provider.token().await?;
            let report = m365mail::setup::audit(&client, &token.token, client_id, SystemClock.unix_now()).await?;
            let registration = if report.missing.is_empty() {
                Check::pass(
                    "registration",
                    format!("{} permissions, each granted", report.permissions),
                )
            } else {
                Check::fail(
                    "registration",
                    ErrorClass::Admin,
                    format!("not granted: {}", report.missing.join(", ")),
                    "grant admin consent (Entra admin center → App registrations → the app → API permissions → \
                     Grant admin consent), or run `m365mail setup` again",
                )
            };
            let expiry = match (report.expired.is_empty(), report.expiring.is_empty()) {
                (false, _) if report.valid == 0 => Check::fail(
                    "expiry",
                    ErrorClass::Admin,
                    format!("every credential has expired: {}", report.expired.join(", ")),
                    "add a new client secret or certificate (Certificates & secrets) and update the profile",
                ),
                (_, false) => Check::warn(
                    "expiry",
                    format!("expiring within 30 days: {}", report.expiring.join(", ")),
                    "add a new secret or certificate before then and switch the profile to it",
                ),
                _ => Check::pass(
                    "expiry",
                    format!("{} credential(s), none expiring within 30 days", report.valid),
                ),
            };
            Ok((registration, expiry))
        }
        .await;
        match outcome {
            Ok(checks) => checks,
            Err(error) => (
                failed("registration", &error),
                Check::skip("expiry", "the registration step failed"),
            ),
        }
    }

    /// The profile's own values, then a session for the first protocol.
    fn profile_check(&self, target: Target) -> Result<Session, Check> {
        let (_, profile) = load_profile(self.global).map_err(|e| failed("profile", &e))?;
        let client_id = self
            .args
            .profile
            .client_id
            .clone()
            .or(profile.client_id.clone());
        match client_id.as_deref() {
            None => {
                return Err(Check::fail(
                    "profile",
                    ErrorClass::Config,
                    "no client_id",
                    "set `client_id` to the app registration's Application (client) ID (Entra admin center → \
                     App registrations → the app → Overview)",
                ));
            }
            Some(id) if !doctor::is_guid(id) => {
                return Err(Check::fail(
                    "profile",
                    ErrorClass::Config,
                    format!("client_id {id:?} is not a GUID"),
                    "copy the Application (client) ID from the app registration's Overview page (a GUID such as \
                     00000000-0000-0000-0000-000000000000), not its name or object ID",
                ));
            }
            Some(_) => {}
        }
        let choice = match target {
            Target::Graph => ScopeChoice::Graph(&["Mail.Send"]),
            other => ScopeChoice::Mail(other),
        };
        let session = self.session(choice).map_err(|e| failed("profile", &e))?;
        if session.flow == FlowName::ClientSecret
            && let Ok(Some(secret)) = session::client_secret(&self.args.auth, &profile, false)
            && doctor::looks_like_secret_id(secret.expose())
        {
            return Err(Check::fail(
                "profile",
                ErrorClass::Config,
                "the client secret is a GUID: that is the secret's ID, not its value (Entra would answer \
                 AADSTS7000215)",
                "in Certificates & secrets, copy the secret's Value column (shown once, when the secret is \
                 created; about 40 characters); if it is no longer shown, add a new secret",
            ));
        }
        if session.flow == FlowName::Password && session.settings.username.is_none() {
            return Err(Check::fail(
                "profile",
                ErrorClass::Config,
                "the password flow has no username",
                "set `username` in the profile (the user's UPN)",
            ));
        }
        Ok(session)
    }

    /// OpenID discovery of the tenant.
    async fn tenant_check(&self, session: &Session) -> Check {
        let url = session
            .settings
            .authority
            .url()
            .join("v2.0/.well-known/openid-configuration")
            .expect("a static path");
        let config = match session.trust.http_client_config() {
            Ok(config) => config,
            Err(error) => {
                return Check::fail("tenant", error.class(), error.cause(), error.remedy());
            }
        };
        let client = match reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .timeout(std::time::Duration::from_secs(30))
            .build()
        {
            Ok(client) => client,
            Err(error) => {
                return Check::fail(
                    "tenant",
                    ErrorClass::Transient,
                    format!("no HTTP client: {error}"),
                    "run again",
                );
            }
        };
        match client.get(url.clone()).send().await {
            Ok(response) if response.status().is_success() => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                Check::pass(
                    "tenant",
                    format!(
                        "issuer {}",
                        body["issuer"].as_str().unwrap_or("(none given)")
                    ),
                )
            }
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                let unknown = body.contains("AADSTS90002") || status.as_u16() == 400;
                Check::fail(
                    "tenant",
                    ErrorClass::Config,
                    format!(
                        "{url} answered {status}{}",
                        if unknown {
                            ": the tenant is not known"
                        } else {
                            ""
                        }
                    ),
                    "set `tenant` to the Directory (tenant) ID from the app registration's Overview, or the \
                     tenant's verified domain (contoso.onmicrosoft.com); check `cloud` for a national cloud",
                )
            }
            Err(error) => Check::fail(
                "tenant",
                ErrorClass::Transient,
                format!("{url}: {error}"),
                "check the network, a proxy, and `cloud`/`authority` in the profile",
            ),
        }
    }

    async fn mail_check(
        &self,
        id: &'static str,
        protocol: Protocol,
        session: &Session,
        token: &m365mail::auth::AccessToken,
        mailbox: &str,
    ) -> Check {
        let target = match protocol {
            Protocol::Imap => Target::Imap,
            Protocol::Pop => Target::Pop,
            _ => Target::Smtp,
        };
        let endpoint = match session::mail_endpoint(session, target, None, None) {
            Ok(endpoint) => endpoint,
            Err(error) => return failed(id, &error),
        };
        let trust = session.trust.clone();
        let outcome: anyhow::Result<String> = async {
            match protocol {
                Protocol::Imap => {
                    use m365mail::imap::{ImapClient as _, ImapConnection, ImapOptions};
                    let options = ImapOptions::new(endpoint, trust);
                    let mut imap = ImapConnection::connect(&options, mailbox, &token.token).await?;
                    let selected = imap.select("INBOX", true).await?;
                    let _ = imap.logout().await;
                    Ok(format!(
                        "{mailbox}: INBOX opened ({} messages)",
                        selected.exists
                    ))
                }
                Protocol::Pop => {
                    use m365mail::pop3::{Pop3Connection, Pop3Options};
                    let mut pop =
                        Pop3Connection::connect(&Pop3Options::new(endpoint, trust)).await?;
                    pop.authenticate(mailbox, &token.token).await?;
                    let (count, bytes) = pop.stat().await?;
                    let _ = pop.quit().await;
                    Ok(format!("{mailbox}: {count} messages, {bytes} bytes"))
                }
                _ => {
                    use m365mail::smtp::{SmtpOptions, SmtpSender};
                    let sender =
                        SmtpSender::new(&SmtpOptions::new(endpoint, trust), mailbox, &token.token)?;
                    sender.check_sign_in().await?;
                    Ok(format!("{mailbox}: signed in to {}", sender.endpoint()))
                }
            }
        }
        .await;
        match outcome {
            Ok(seen) => Check::pass(id, seen),
            Err(error) => failed(id, &error),
        }
    }

    async fn graph_checks(&mut self, send: Option<&(Session, m365mail::auth::AccessToken)>) {
        if !self.wants(Protocol::Graph) {
            for id in ["graph-send", "graph-read", "users"] {
                self.checks
                    .push(Check::skip(id, "not asked for (--protocols)"));
            }
            return;
        }
        // graph-send: judged from the token (sending would send).
        let started = Instant::now();
        let check = match send {
            None => Check::skip("graph-send", "no Graph token (see the token step)"),
            Some((_, token)) => match inspect(token.token.expose(), &SystemClock) {
                Inspection::Jwt(info) => {
                    match info.verdicts.iter().find(|v| v.protocol == "graph-send") {
                        Some(verdict) if verdict.usable => {
                            Check::pass("graph-send", verdict.reason.clone())
                        }
                        Some(verdict) => Check::fail(
                            "graph-send",
                            ErrorClass::Admin,
                            verdict.reason.clone(),
                            "add Microsoft Graph Mail.Send (delegated for a user, application for app-only) to the \
                         app registration and grant admin consent",
                        ),
                        None => Check::pass("graph-send", "a Graph token"),
                    }
                }
                Inspection::Opaque { reason } => Check::warn(
                    "graph-send",
                    reason,
                    "nothing to check in an opaque token; try `send --via graph` to a test address",
                ),
            },
        };
        self.record(check, started);

        // graph-read and users: a real (read-only) call each.
        for (id, scopes) in [
            ("graph-read", &["Mail.Read"] as &'static [&'static str]),
            ("users", &["User.ReadBasic.All"]),
        ] {
            let started = Instant::now();
            let check = self.graph_call(id, scopes).await;
            self.record(check, started);
        }
    }

    async fn graph_call(&self, id: &'static str, scopes: &'static [&'static str]) -> Check {
        let outcome: anyhow::Result<String> = async {
            let session = self.session(ScopeChoice::Graph(scopes))?;
            let client = session::graph_client(&session)?;
            let token = session.provider.token().await?;
            if id == "users" {
                let page = client
                    .users_page(
                        &token.token,
                        &m365mail::graph::UsersQuery {
                            top: Some(1),
                            ..Default::default()
                        },
                    )
                    .await?;
                return Ok(format!("GET /users answered ({} on the first page)", page.len()));
            }
            let mailbox = session::default_mailbox(
                self.args.mailbox.as_deref(),
                &session,
                token.account.as_deref(),
            )
            .ok_or_else(|| {
                usage("an app-only token has no mailbox of its own: --mailbox ADDRESS or the profile's `mailbox`")
            })?;
            let folders = client.folders(&token.token, &mailbox).await?;
            Ok(format!("{mailbox}: {} folders", folders.len()))
        }
        .await;
        match outcome {
            Ok(seen) => Check::pass(id, seen),
            Err(error) => failed(id, &error),
        }
    }
}
