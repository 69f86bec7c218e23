//! `m365mail bridge`: SMTP submission for password-only devices and applications, relayed to Microsoft 365
//! with XOAUTH2 (`serve`), and the local accounts they sign in with (`client add|list|remove|reset-password`).
//! The work is in `m365mail::bridge`; here are the flags, the `[bridge]` section and the output.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use m365mail::auth::Target;
use m365mail::bridge::accounts::Accounts;
use m365mail::bridge::graph::GraphUpstream;
use m365mail::bridge::route::UpstreamMode;
use m365mail::bridge::service::{Bridge, BridgeOptions, Upstreams};
use m365mail::bridge::spool::{self, Spool, SpoolOptions};
use m365mail::bridge::status::{self, ListenerStatus};
use m365mail::bridge::upstream::SmtpUpstream;
use m365mail::bridge::{BridgeError, tls};
use m365mail::smtp::SmtpOptions;
use m365mail::time::{Clock as _, SystemClock};
use serde_json::json;

use crate::GlobalArgs;
use crate::config::{BridgeSection, BridgeTls, ConfigFile, usage};
use crate::session::{self, AuthArgs, ProfileArgs, ScopeChoice};

/// `m365mail bridge …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BridgeCommand {
    /// Serve SMTP submission to password-only clients and relay each message to Microsoft 365 with XOAUTH2
    /// (the profile of the account that signed in). Runs in the foreground; Ctrl-C or SIGTERM stops it.
    Serve(ServeArgs),
    /// The local accounts devices sign in with.
    #[command(subcommand)]
    Client(ClientCommand),
    /// The spool's queue and dead letters (spool mode: `[bridge.spool]`).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Whether the bridge runs, its listeners, accounts and their upstreams, queue depth and oldest queued
    /// message, last upstream error and token expiry per account (`--json` for one object). Read from the
    /// status file the running bridge rewrites every 5 s in `[bridge] state_dir`, and the spool directory.
    Status {
        #[command(flatten)]
        spool: SpoolArg,
    },
}

/// Where the spool is.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SpoolArg {
    /// The spool directory (default: the `[bridge.spool]` dir).
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
}

/// `bridge queue …`: works on the spool directory, with or without a running bridge (which takes a retry
/// or a drop within 2 s).
#[derive(Debug, clap::Subcommand)]
pub(crate) enum QueueCommand {
    /// The queued messages (id, age, account, sender, recipients, size, attempts, next attempt, last error);
    /// --dead lists the dead letters instead. `--json` (global) for one JSON array.
    List {
        /// The dead letters (given up) instead of the queue.
        #[arg(long)]
        dead: bool,
        #[command(flatten)]
        spool: SpoolArg,
    },
    /// Try queued messages now, or send dead letters again (back to the queue, attempts reset).
    Retry {
        /// Spool ids (from `bridge queue list`).
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Every queued message and every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[command(flatten)]
        spool: SpoolArg,
    },
    /// Remove queued messages or dead letters for good (an audit line says so).
    Drop {
        /// Spool ids (from `bridge queue list`).
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        spool: SpoolArg,
    },
}

/// Where the accounts file is.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AccountsArg {
    /// The accounts file (default: the `[bridge]` section's `accounts`, else the user data dir's
    /// `m365mail/bridge-accounts.json`).
    #[arg(long, value_name = "FILE")]
    accounts: Option<PathBuf>,
}

/// `bridge serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Listen here instead of the `[[bridge.listen]]` entries: plain SMTP (repeatable), e.g. 127.0.0.1:2525
    /// (port 0: any free port, printed). Off loopback, AUTH needs `--allow-auth-without-tls`.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String>,
    /// With --listen: accept passwords in clear text from clients that are not on loopback (a risk).
    #[arg(long, requires = "listen")]
    allow_auth_without_tls: bool,
    /// No pacing (the `[bridge]` rate_per_minute), e.g. against the sandbox.
    #[arg(long)]
    no_pacing: bool,
    /// Spool mode with this spool directory (instead of `[bridge.spool]` dir; its other keys still apply).
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    #[command(flatten)]
    accounts: AccountsArg,
}

/// `bridge client …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ClientCommand {
    /// Create an account for a device or application and print its generated password once. The account's
    /// mail goes through the profile given with -p/--profile.
    Add {
        /// The username the device signs in with.
        name: String,
        /// An address it may send as (repeatable; default: the profile's mailbox or username).
        #[arg(long = "from-allow", value_name = "ADDRESS")]
        from_allow: Vec<String>,
        /// Its upstream: xoauth2 (SMTP), graph (Microsoft Graph sendMail) or auto (XOAUTH2, Graph while SMTP
        /// AUTH is off). Default: the `[bridge]` upstream, else xoauth2.
        #[arg(long, value_name = "MODE")]
        upstream: Option<String>,
        #[command(flatten)]
        accounts: AccountsArg,
    },
    /// Change an account's upstream: xoauth2, graph, auto, or default (the `[bridge]` upstream). A running
    /// bridge uses it from the next message (queued ones included).
    Upstream {
        /// The account.
        name: String,
        /// xoauth2, graph, auto or default.
        mode: String,
        #[command(flatten)]
        accounts: AccountsArg,
    },
    /// List the accounts (never their passwords or hashes).
    List {
        #[command(flatten)]
        accounts: AccountsArg,
    },
    /// Remove an account (a running bridge refuses it from the next sign-in).
    Remove {
        /// The account.
        name: String,
        #[command(flatten)]
        accounts: AccountsArg,
    },
    /// Give an account a new generated password (printed once; the old one stops working).
    ResetPassword {
        /// The account.
        name: String,
        #[command(flatten)]
        accounts: AccountsArg,
    },
}

pub(crate) async fn run(command: BridgeCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let (config, _) = ConfigFile::load(global.config.as_deref())?;
    match command {
        BridgeCommand::Serve(args) => serve(args, global, &config).await,
        BridgeCommand::Client(command) => client(command, global, &config),
        BridgeCommand::Queue(command) => queue(command, global, &config),
        BridgeCommand::Status { spool } => status(&spool, global, &config),
    }
}

fn accounts_path(arg: &AccountsArg, section: &BridgeSection) -> anyhow::Result<PathBuf> {
    arg.accounts
        .clone()
        .or_else(|| section.accounts.clone())
        .or_else(Accounts::default_path)
        .ok_or_else(|| usage("no user data directory: give --accounts FILE or [bridge] accounts"))
}

fn now_rfc3339() -> String {
    m365mail::time::rfc3339(SystemClock.unix_now())
}

/// Holds `<accounts>.lock` (an exclusive lock, released when dropped) so that two `bridge client` commands
/// at once cannot lose one's change (each loads, changes and saves the whole file).
fn lock_accounts(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    file.lock()?;
    Ok(file)
}

fn client(
    command: ClientCommand,
    global: &GlobalArgs,
    config: &ConfigFile,
) -> anyhow::Result<ExitCode> {
    let section = &config.bridge;
    match command {
        ClientCommand::Add {
            name,
            from_allow,
            upstream,
            accounts,
        } => {
            let upstream = upstream
                .as_deref()
                .map(str::parse::<UpstreamMode>)
                .transpose()?;
            let (profile_name, profile) = config.profile(global.profile.as_deref())?;
            if !config.profiles.contains_key(&profile_name) {
                return Err(usage(format!(
                    "no profile {profile_name:?} in the config file: an account relays through a profile \
                     (give -p/--profile NAME)"
                )));
            }
            let from_allow = if from_allow.is_empty() {
                profile
                    .mailbox
                    .clone()
                    .or(profile.username.clone())
                    .into_iter()
                    .collect()
            } else {
                from_allow
            };
            let path = accounts_path(&accounts, section)?;
            let _lock = lock_accounts(&path)?;
            let mut file = Accounts::load(&path)?;
            let password = file.add(&name, &profile_name, from_allow.clone(), &now_rfc3339())?;
            file.set_upstream(&name, upstream)?;
            file.save()?;
            if global.json {
                println!(
                    "{}",
                    json!({ "name": name, "profile": profile_name, "from_allow": from_allow,
                            "upstream": upstream.map(UpstreamMode::as_str),
                            "password": password.expose(), "accounts": path })
                );
            } else {
                println!("{}", password.expose());
                eprintln!(
                    "account {name:?} added to {} (profile {profile_name}, may send as {}).\n\
                     The line above is its password, shown this once: enter it in the device now \
                     (`m365mail bridge client reset-password {name}` makes a new one).",
                    path.display(),
                    from_allow.join(", ")
                );
            }
        }
        ClientCommand::List { accounts } => {
            let path = accounts_path(&accounts, section)?;
            let file = Accounts::load(&path)?;
            if global.json {
                let list: Vec<_> = file
                    .list()
                    .iter()
                    .map(|a| {
                        json!({ "name": a.name, "profile": a.profile, "from_allow": a.from_allow,
                                     "upstream": a.upstream.map(UpstreamMode::as_str),
                                     "changed": a.changed })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else if file.list().is_empty() {
                eprintln!(
                    "no accounts in {} (add one: m365mail bridge client add NAME -p PROFILE)",
                    path.display()
                );
            } else {
                println!(
                    "{:<24} {:<20} {:<9} {:<21} FROM-ALLOW",
                    "NAME", "PROFILE", "UPSTREAM", "CHANGED"
                );
                for a in file.list() {
                    println!(
                        "{:<24} {:<20} {:<9} {:<21} {}",
                        a.name,
                        a.profile,
                        a.upstream.map_or("default", UpstreamMode::as_str),
                        a.changed,
                        a.from_allow.join(", ")
                    );
                }
            }
        }
        ClientCommand::Upstream {
            name,
            mode,
            accounts,
        } => {
            let upstream = if mode.eq_ignore_ascii_case("default") {
                None
            } else {
                Some(mode.parse::<UpstreamMode>()?)
            };
            let path = accounts_path(&accounts, section)?;
            let _lock = lock_accounts(&path)?;
            let mut file = Accounts::load(&path)?;
            file.set_upstream(&name, upstream)?;
            file.save()?;
            eprintln!(
                "account {name:?}: upstream {}",
                upstream.map_or("default (the [bridge] upstream)", UpstreamMode::as_str)
            );
        }
        ClientCommand::Remove { name, accounts } => {
            let path = accounts_path(&accounts, section)?;
            let _lock = lock_accounts(&path)?;
            let mut file = Accounts::load(&path)?;
            file.remove(&name)?;
            file.save()?;
            eprintln!("account {name:?} removed from {}", path.display());
        }
        ClientCommand::ResetPassword { name, accounts } => {
            let path = accounts_path(&accounts, section)?;
            let _lock = lock_accounts(&path)?;
            let mut file = Accounts::load(&path)?;
            let password = file.reset_password(&name, &now_rfc3339())?;
            file.save()?;
            if global.json {
                println!("{}", json!({ "name": name, "password": password.expose() }));
            } else {
                println!("{}", password.expose());
                eprintln!("account {name:?}: the line above is its new password, shown this once");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Flags at their defaults, for sessions built per account profile.
#[derive(clap::Parser)]
struct Defaults {
    #[command(flatten)]
    profile: ProfileArgs,
    #[command(flatten)]
    auth: AuthArgs,
}

/// One listener to open.
struct ListenSpec {
    spool: bool,
    address: String,
    tls: BridgeTls,
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
    allow_auth_without_tls: bool,
}

/// The mailbox a profile's bridge upstream sends as: its `mailbox`, else (delegated) its `username`, else
/// the token's account.
async fn upstream_mailbox(profile: &str, session: &session::Session) -> anyhow::Result<String> {
    let app_only = session.flow.is_app_only();
    match session.profile.mailbox.clone().or_else(|| {
        (!app_only)
            .then(|| session.settings.username.clone())
            .flatten()
    }) {
        Some(mailbox) => Ok(mailbox),
        None if app_only => Err(usage(format!(
            "profile {profile:?} is app-only: set its `mailbox` (the mailbox the bridge sends as)"
        ))),
        None => session.provider.token().await?.account.ok_or_else(|| {
            usage(format!(
                "profile {profile:?}: set its `username` or `mailbox`"
            ))
        }),
    }
}

/// A profile's upstreams: SMTP with XOAUTH2, and Graph (`Mail.Send` and `Mail.ReadWrite`: large messages go
/// as drafts). Building them signs nothing in.
async fn upstreams_for(global: &GlobalArgs, profile: &str) -> anyhow::Result<Upstreams> {
    let defaults = Defaults::try_parse_from(["m365mail"])?;
    let global = GlobalArgs {
        profile: Some(profile.to_owned()),
        ..global.clone()
    };
    let session = session::build(
        &global,
        &defaults.profile,
        &defaults.auth,
        ScopeChoice::Mail(Target::Smtp),
    )?;
    let endpoint = session::mail_endpoint(&session, Target::Smtp, None, None)?;
    let mailbox = upstream_mailbox(profile, &session).await?;
    let options = SmtpOptions::new(endpoint, session.trust.clone());
    let smtp = SmtpUpstream::new(
        session.provider,
        options,
        mailbox.clone(),
        Arc::new(SystemClock),
    );
    let graph_session = session::build(
        &global,
        &defaults.profile,
        &defaults.auth,
        ScopeChoice::Graph(&["Mail.Send", "Mail.ReadWrite"]),
    )?;
    let client = session::graph_client(&graph_session)?;
    let graph = GraphUpstream::new(client, graph_session.provider, mailbox);
    Ok(Upstreams {
        smtp,
        graph: Some(graph),
    })
}

async fn serve(
    args: ServeArgs,
    global: &GlobalArgs,
    config: &ConfigFile,
) -> anyhow::Result<ExitCode> {
    let section = &config.bridge;
    let host_name = section
        .hostname
        .clone()
        .unwrap_or_else(|| "localhost".to_owned());
    if host_name.is_empty()
        || host_name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(usage(format!(
            "[bridge] hostname {host_name:?}: give one DNS name"
        )));
    }
    let mut options = BridgeOptions::new(&host_name);
    if let Some(bytes) = section.max_message_bytes {
        options.max_message_bytes = bytes;
    }
    if let Some(n) = section.max_connections {
        options.limits.max_connections = n.max(1);
    }
    if let Some(secs) = section.command_timeout_secs {
        options.limits.command_timeout = Duration::from_secs(secs.max(1));
    }
    if let Some(secs) = section.idle_timeout_secs {
        options.idle_timeout = Duration::from_secs(secs.max(1));
    }
    if let Some(n) = section.max_connections_per_address {
        options.max_connections_per_address = n.max(1);
    }
    if let Some(secs) = section.sign_in_timeout_secs {
        options.sign_in_timeout = Duration::from_secs(secs.max(1));
    }
    if let Some(n) = section.max_errors {
        options.max_errors = n.max(1);
    }
    options.rate_per_minute = match (args.no_pacing, section.rate_per_minute) {
        (true, _) | (false, Some(0)) => None,
        (false, Some(n)) => Some(n),
        (false, None) => Some(30),
    };
    if let Some(mode) = &section.upstream {
        options.default_upstream = mode
            .parse()
            .map_err(|e: BridgeError| usage(format!("[bridge] upstream: {e}")))?;
    }
    if let Some(secs) = section.graph_remember_secs {
        options.graph_remember = Duration::from_secs(secs);
    }
    options.allow_networks = section
        .allow_networks
        .iter()
        .map(|net| {
            net.parse::<ipnet::IpNet>()
                .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    usage(format!(
                        "[bridge] allow_networks: {net:?} is not a network such as 192.168.1.0/24"
                    ))
                })
        })
        .collect::<Result<_, _>>()?;

    let accounts_path = accounts_path(&args.accounts, section)?;
    let accounts = Accounts::load(&accounts_path)?;
    if accounts.list().is_empty() {
        tracing::warn!(
            "no accounts in {} yet: add one with `m365mail bridge client add NAME -p PROFILE` (no restart needed \
             for a profile already in use)",
            accounts_path.display()
        );
    }
    let mut profiles: Vec<String> = accounts.list().iter().map(|a| a.profile.clone()).collect();
    profiles.sort();
    profiles.dedup();
    let mut upstreams = HashMap::new();
    let mut upstream_lines = Vec::new();
    for profile in &profiles {
        // The modes its accounts use now: a token for each now, so that a profile that cannot sign in is
        // reported before a device finds out. (Both upstreams are built: an account may change mode later.)
        let modes: Vec<UpstreamMode> = accounts
            .list()
            .iter()
            .filter(|a| &a.profile == profile)
            .map(|a| a.upstream.unwrap_or(options.default_upstream))
            .collect();
        match upstreams_for(global, profile).await {
            Ok(route) => {
                if modes.iter().any(|m| m.uses_smtp()) {
                    match route.smtp.check_token().await {
                        Ok(_) => tracing::info!(%profile, mailbox = route.smtp.mailbox(),
                                                upstream = %route.smtp.describe(), "XOAUTH2 upstream ready"),
                        Err(e) => {
                            tracing::warn!(%profile, cause = %e.cause(), remedy = %e.remedy(),
                                                 "no SMTP token for this profile yet; its accounts' messages are deferred (451) until there is one")
                        }
                    }
                }
                if let Some(graph) = route
                    .graph
                    .as_ref()
                    .filter(|_| modes.iter().any(|m| m.uses_graph()))
                {
                    match graph.check_token().await {
                        Ok(_) => tracing::info!(%profile, mailbox = graph.mailbox(),
                                                upstream = %graph.describe(), "Graph upstream ready"),
                        Err(e) => {
                            tracing::warn!(%profile, cause = %e.cause(), remedy = %e.remedy(),
                                                 "no Graph token for this profile yet; its Graph messages are deferred (451) until there is one")
                        }
                    }
                }
                let mut used: Vec<&str> = modes.iter().map(|m| m.as_str()).collect();
                used.sort_unstable();
                used.dedup();
                upstream_lines.push(json!({ "profile": profile, "mailbox": route.smtp.mailbox(),
                                            "upstream": route.smtp.describe(),
                                            "graph": route.graph.as_ref().map(|g| g.describe()),
                                            "modes": used }));
                upstreams.insert(profile.clone(), route);
            }
            Err(e) => {
                tracing::error!(%profile, error = %format!("{e:#}"),
                                "this profile cannot be used; its accounts cannot sign in");
            }
        }
    }
    let bridge = Bridge::new(options.clone(), accounts_path.clone(), upstreams)?;
    if let Some(spool_options) = spool_options(section, args.spool.clone())? {
        let spool = Spool::open(spool_options)?;
        let (queued, bytes) = spool.depth();
        tracing::info!(dir = %spool.options().dir.display(), queued, bytes, "spool mode");
        bridge.attach_spool(spool);
    }

    let specs: Vec<ListenSpec> = if args.listen.is_empty() {
        if section.listen.is_empty() {
            vec![ListenSpec {
                address: "127.0.0.1:2525".into(),
                tls: BridgeTls::None,
                certificate: None,
                private_key: None,
                allow_auth_without_tls: false,
                spool: true,
            }]
        } else {
            section
                .listen
                .iter()
                .map(|l| ListenSpec {
                    address: l.address.clone(),
                    tls: l.tls,
                    certificate: l.certificate.clone(),
                    private_key: l.private_key.clone(),
                    allow_auth_without_tls: l.allow_auth_without_tls,
                    spool: l.spool.unwrap_or(true),
                })
                .collect()
        }
    } else {
        args.listen
            .iter()
            .map(|address| ListenSpec {
                address: address.clone(),
                tls: BridgeTls::None,
                certificate: None,
                private_key: None,
                allow_auth_without_tls: args.allow_auth_without_tls,
                spool: true,
            })
            .collect()
    };
    let state_dir = state_dir(section)?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut listening = Vec::new();
    let mut listener_status = Vec::new();
    for spec in &specs {
        let address: std::net::SocketAddr = spec.address.parse().map_err(|_| {
            usage(format!(
                "listen address {:?}: give IP:PORT, e.g. 127.0.0.1:2525",
                spec.address
            ))
        })?;
        let certificate = match spec.tls {
            BridgeTls::None => None,
            _ => {
                let certificate = tls::load_or_generate(
                    spec.certificate.as_deref(),
                    spec.private_key.as_deref(),
                    &state_dir,
                    &host_name,
                )?;
                if certificate.generated {
                    eprintln!(
                        "m365mail bridge: generated a certificate for {host_name} in {}",
                        certificate.certificate.display()
                    );
                }
                Some(certificate)
            }
        };
        if spec.tls == BridgeTls::None
            && !address.ip().is_loopback()
            && !spec.allow_auth_without_tls
        {
            tracing::warn!(%address, "a plain listener off loopback: clients that are not on this machine cannot \
                           sign in (AUTH before TLS is refused); give it tls = \"starttls\" or, accepting the risk, \
                           allow_auth_without_tls = true");
        }
        if spec.allow_auth_without_tls && spec.tls == BridgeTls::None {
            tracing::warn!(%address, "passwords in clear text are accepted on this listener (allow_auth_without_tls)");
        }
        let listener =
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| BridgeError::Listen {
                    address: address.to_string(),
                    detail: e.to_string(),
                })?;
        let bound = listener.local_addr()?;
        let (server_tls, implicit, mode, fingerprint) = match (&certificate, spec.tls) {
            (Some(c), BridgeTls::Implicit) => (
                m365mail_server::ListenerTls::Implicit(c.acceptor.clone()),
                true,
                "implicit",
                Some(c.fingerprint.clone()),
            ),
            (Some(c), _) => (
                m365mail_server::ListenerTls::Starttls(c.acceptor.clone()),
                false,
                "starttls",
                Some(c.fingerprint.clone()),
            ),
            (None, _) => (m365mail_server::ListenerTls::Plain, false, "none", None),
        };
        tasks.push(m365mail_server::spawn_listener(
            listener,
            server_tls,
            Duration::from_secs(30),
            options.limits.max_connections,
            bridge.listener_in(implicit, spec.allow_auth_without_tls, spec.spool),
            stopped.clone(),
        ));
        listener_status.push(ListenerStatus {
            address: bound.to_string(),
            tls: mode.to_owned(),
            spool: spec.spool && bridge.spool().is_some(),
        });
        listening.push(json!({ "address": bound.to_string(), "tls": mode,
                               "spool": spec.spool && bridge.spool().is_some(),
                               "allow_auth_without_tls": spec.allow_auth_without_tls,
                               "fingerprint_sha256": fingerprint }));
    }

    if global.json {
        println!(
            "{}",
            json!({ "listeners": listening, "accounts": accounts.list().len(), "accounts_file": accounts_path,
                    "upstreams": upstream_lines,
                    "rate_per_minute": options.rate_per_minute,
                    "spool": bridge.spool().map(|s| s.options().dir.clone()) })
        );
    } else {
        for l in &listening {
            eprintln!(
                "m365mail bridge: listening on {} (tls {}){}",
                l["address"].as_str().unwrap_or(""),
                l["tls"].as_str().unwrap_or(""),
                l["fingerprint_sha256"]
                    .as_str()
                    .map(|f| format!(", certificate SHA-256 {f}"))
                    .unwrap_or_default()
            );
        }
        eprintln!(
            "m365mail bridge: {} account(s) in {}, {} upstream(s); Ctrl-C stops",
            accounts.list().len(),
            accounts_path.display(),
            upstream_lines.len()
        );
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    if let Err(e) = std::fs::create_dir_all(&state_dir) {
        tracing::warn!(dir = %state_dir.display(), error = %e, "no state directory: bridge status will not see this bridge");
    }
    let status_writer = tokio::spawn(status::run_writer(
        Arc::clone(&bridge),
        state_dir.join(status::FILE_NAME),
        listener_status,
        SystemClock.unix_now(),
        stopped.clone(),
    ));
    let worker = bridge.spool().cloned().map(|spool| {
        tokio::spawn(m365mail::bridge::worker::run(
            Arc::clone(&bridge),
            spool,
            stopped.clone(),
        ))
    });

    wait_for_stop().await;
    tracing::info!("stopping: open sessions get 2 s to finish");
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    let _ = status_writer.await;
    for route in bridge.routes().values() {
        route.upstream.close().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `[bridge] state_dir`, else the user data directory: the generated certificate and the status file.
fn state_dir(section: &BridgeSection) -> anyhow::Result<PathBuf> {
    section
        .state_dir
        .clone()
        .or_else(|| {
            directories::ProjectDirs::from("", "", "m365mail").map(|d| d.data_dir().to_path_buf())
        })
        .ok_or_else(|| usage("no user data directory: set [bridge] state_dir"))
}

/// Whether process `pid` exists (Linux: /proc; elsewhere the status file's age alone decides).
fn alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let proc = std::path::Path::new("/proc");
    !proc.exists() || proc.join(pid.to_string()).exists()
}

fn when(secs: Option<u64>) -> String {
    secs.map_or_else(|| "-".to_owned(), m365mail::time::rfc3339)
}

fn status(arg: &SpoolArg, global: &GlobalArgs, config: &ConfigFile) -> anyhow::Result<ExitCode> {
    let section = &config.bridge;
    let now = SystemClock.unix_now();
    let path = state_dir(section)?.join(status::FILE_NAME);
    let file = status::read(&path).ok();
    // Written within three intervals by a process that still exists: running.
    let running = file.as_ref().is_some_and(|f| {
        alive(f.pid) && now.saturating_sub(f.updated_at) <= 3 * status::INTERVAL.as_secs()
    });
    let accounts = Accounts::load(&accounts_path(&AccountsArg { accounts: None }, section)?)?;
    let default_mode = match &section.upstream {
        Some(mode) => mode.parse::<UpstreamMode>()?,
        None => UpstreamMode::Xoauth2,
    };
    let spool_dir = arg
        .spool
        .clone()
        .or_else(|| section.spool.as_ref().map(|s| s.dir.clone()));
    let queue = match &spool_dir {
        Some(dir) if dir.exists() => {
            let unreadable = |e: std::io::Error| BridgeError::Spool {
                path: dir.clone(),
                detail: e.to_string(),
            };
            let queued = spool::list_queue(dir).map_err(unreadable)?;
            let dead = spool::list_dead(dir).map_err(unreadable)?;
            Some(json!({
                "dir": dir,
                "queued": queued.len(),
                "bytes": queued.iter().map(|q| q.envelope.size).sum::<u64>(),
                "oldest_received_at": queued.iter().map(|q| q.envelope.received_ms / 1000).min(),
                "dead_letters": dead.len(),
            }))
        }
        Some(dir) => Some(
            json!({ "dir": dir, "queued": 0, "bytes": 0, "oldest_received_at": null,
                                  "dead_letters": 0 }),
        ),
        None => None,
    };
    let routes = file.as_ref().map(|f| f.routes.clone()).unwrap_or_default();
    let account_lines: Vec<serde_json::Value> = accounts
        .list()
        .iter()
        .map(|a| {
            let mode = a.upstream.unwrap_or(default_mode);
            let route = routes.get(&a.profile);
            // The token of the upstream this account's next message takes.
            let graph_now = mode == UpstreamMode::Graph
                || (mode == UpstreamMode::Auto
                    && route
                        .and_then(|r| r.graph_until)
                        .is_some_and(|until| until > now));
            let token = route.and_then(|r| {
                if graph_now {
                    r.graph_token_expires_at
                } else {
                    r.smtp_token_expires_at
                }
            });
            json!({
                "name": a.name, "profile": a.profile, "upstream": mode.as_str(),
                "mailbox": route.map(|r| r.mailbox.clone()),
                "token_expires_at": token,
                "smtp_token_expires_at": route.and_then(|r| r.smtp_token_expires_at),
                "graph_token_expires_at": route.and_then(|r| r.graph_token_expires_at),
                "graph_until": route.and_then(|r| r.graph_until),
                "last_error": route.and_then(|r| r.last_error.clone()),
                "last_delivered_at": route.and_then(|r| r.last_delivered_at),
            })
        })
        .collect();
    let listeners = file
        .as_ref()
        .filter(|_| running)
        .map(|f| f.listeners.clone())
        .unwrap_or_default();
    if global.json {
        println!(
            "{}",
            json!({
                "running": running,
                "pid": file.as_ref().filter(|_| running).map(|f| f.pid),
                "started_at": file.as_ref().filter(|_| running).map(|f| f.started_at),
                "status_updated_at": file.as_ref().map(|f| f.updated_at),
                "status_file": path,
                "listeners": listeners,
                "accounts": account_lines,
                "queue": queue,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    match (&file, running) {
        (Some(f), true) => println!(
            "bridge: running (pid {}, since {}, status written {} s ago)",
            f.pid,
            m365mail::time::rfc3339(f.started_at),
            now.saturating_sub(f.updated_at)
        ),
        (Some(f), false) => println!(
            "bridge: not running (last status {}, {})",
            m365mail::time::rfc3339(f.updated_at),
            path.display()
        ),
        (None, _) => println!("bridge: not running (no status file {})", path.display()),
    }
    for l in &listeners {
        println!(
            "listening: {} (tls {}{})",
            l.address,
            l.tls,
            if l.spool { ", spool" } else { "" }
        );
    }
    if let Some(queue) = &queue {
        println!(
            "queue: {} message(s), {} bytes, oldest {}; {} dead letter(s) ({})",
            queue["queued"],
            queue["bytes"],
            when(queue["oldest_received_at"].as_u64()),
            queue["dead_letters"],
            queue["dir"].as_str().unwrap_or("")
        );
    }
    println!(
        "{:<20} {:<16} {:<8} {:<32} {:<21} LAST ERROR",
        "ACCOUNT", "PROFILE", "UPSTREAM", "MAILBOX", "TOKEN EXPIRES"
    );
    for a in &account_lines {
        println!(
            "{:<20} {:<16} {:<8} {:<32} {:<21} {}",
            a["name"].as_str().unwrap_or(""),
            a["profile"].as_str().unwrap_or(""),
            a["upstream"].as_str().unwrap_or(""),
            a["mailbox"].as_str().unwrap_or("-"),
            when(a["token_expires_at"].as_u64()),
            a["last_error"]["reply"]
                .as_str()
                .map(|r| format!(
                    "{} ({}, {})",
                    r,
                    a["last_error"]["upstream"].as_str().unwrap_or(""),
                    when(a["last_error"]["at"].as_u64())
                ))
                .unwrap_or_else(|| "-".to_owned())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The spool's options from `[bridge.spool]` (`dir` replaced by `--spool`); `None`: no spool mode.
fn spool_options(
    section: &BridgeSection,
    dir: Option<PathBuf>,
) -> anyhow::Result<Option<SpoolOptions>> {
    let Some(dir) = dir.or_else(|| section.spool.as_ref().map(|s| s.dir.clone())) else {
        return Ok(None);
    };
    let mut options = SpoolOptions::new(dir);
    if let Some(spool) = &section.spool {
        let positive = |name: &str, value: u64| {
            if value == 0 {
                Err(usage(format!(
                    "[bridge.spool] {name} = 0: give a positive number"
                )))
            } else {
                Ok(value)
            }
        };
        if let Some(n) = spool.max_messages {
            options.max_messages = positive("max_messages", n as u64)? as usize;
        }
        if let Some(n) = spool.max_bytes {
            options.max_bytes = positive("max_bytes", n)?;
        }
        if let Some(n) = spool.max_attempts {
            options.max_attempts = positive("max_attempts", u64::from(n))? as u32;
        }
        if let Some(n) = spool.max_age_secs {
            options.max_age = Duration::from_secs(positive("max_age_secs", n)?);
        }
        if let Some(n) = spool.retry_first_secs {
            options.retry_first = Duration::from_secs(positive("retry_first_secs", n)?);
        }
        if let Some(n) = spool.retry_max_secs {
            options.retry_max = Duration::from_secs(positive("retry_max_secs", n)?);
        }
        if options.retry_max < options.retry_first {
            return Err(usage(
                "[bridge.spool] retry_max_secs is below retry_first_secs",
            ));
        }
    }
    Ok(Some(options))
}

fn spool_dir(arg: &SpoolArg, section: &BridgeSection) -> anyhow::Result<PathBuf> {
    arg.spool
        .clone()
        .or_else(|| section.spool.as_ref().map(|s| s.dir.clone()))
        .ok_or_else(|| usage("no spool: give --spool DIR or set [bridge.spool] dir"))
}

fn age(now_ms: u64, then_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

fn queue(
    command: QueueCommand,
    global: &GlobalArgs,
    config: &ConfigFile,
) -> anyhow::Result<ExitCode> {
    let section = &config.bridge;
    let now_ms = SystemClock.unix_now() * 1000;
    match command {
        QueueCommand::List { dead, spool: arg } => {
            let dir = spool_dir(&arg, section)?;
            let unreadable = |e: std::io::Error| BridgeError::Spool {
                path: dir.clone(),
                detail: e.to_string(),
            };
            if dead {
                let letters = spool::list_dead(&dir).map_err(unreadable)?;
                if global.json {
                    println!("{}", serde_json::to_string(&letters)?);
                } else if letters.is_empty() {
                    eprintln!("no dead letters in {}", dir.display());
                } else {
                    println!(
                        "{:<31} {:>5} {:<16} {:<32} REASON",
                        "ID", "AGE", "ACCOUNT", "FROM"
                    );
                    for l in &letters {
                        println!(
                            "{:<31} {:>5} {:<16} {:<32} {}",
                            l.envelope.id,
                            age(now_ms, l.envelope.received_ms),
                            l.envelope.account,
                            l.envelope.from,
                            l.reason
                        );
                    }
                }
            } else {
                let queued = spool::list_queue(&dir).map_err(unreadable)?;
                if global.json {
                    println!("{}", serde_json::to_string(&queued)?);
                } else if queued.is_empty() {
                    eprintln!("the queue in {} is empty", dir.display());
                } else {
                    println!(
                        "{:<31} {:>5} {:<16} {:<32} {:>5} {:>9} {:>3} LAST ERROR",
                        "ID", "AGE", "ACCOUNT", "FROM", "RCPTS", "SIZE", "TRY"
                    );
                    for q in &queued {
                        println!(
                            "{:<31} {:>5} {:<16} {:<32} {:>5} {:>9} {:>3} {}",
                            q.envelope.id,
                            age(now_ms, q.envelope.received_ms),
                            q.envelope.account,
                            q.envelope.from,
                            q.envelope.recipients.len(),
                            q.envelope.size,
                            q.attempts.attempts,
                            q.attempts.last_error.as_deref().unwrap_or("-")
                        );
                    }
                }
            }
        }
        QueueCommand::Retry {
            ids,
            all,
            spool: arg,
        } => {
            let dir = spool_dir(&arg, section)?;
            let ids = if all {
                let unreadable = |e: std::io::Error| BridgeError::Spool {
                    path: dir.clone(),
                    detail: e.to_string(),
                };
                let mut ids: Vec<String> = spool::list_queue(&dir)
                    .map_err(unreadable)?
                    .into_iter()
                    .map(|q| q.envelope.id)
                    .collect();
                ids.extend(
                    spool::list_dead(&dir)
                        .map_err(unreadable)?
                        .into_iter()
                        .map(|l| l.envelope.id),
                );
                ids
            } else {
                ids
            };
            for id in &ids {
                let was = spool::request_retry(&dir, id)?;
                tracing::info!(target: "m365mail::audit", event = "queue", spool_id = %id, action = "retry", was);
                eprintln!(
                    "{id}: {}",
                    if was == "dead" {
                        "back in the queue (attempts reset)"
                    } else {
                        "to be tried now"
                    }
                );
            }
        }
        QueueCommand::Drop { ids, spool: arg } => {
            let dir = spool_dir(&arg, section)?;
            for id in &ids {
                let was = spool::drop_message(&dir, id)?;
                tracing::info!(target: "m365mail::audit", event = "queue", spool_id = %id, action = "drop", was);
                eprintln!("{id}: removed ({was})");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM (systemd's stop).
pub(crate) async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
