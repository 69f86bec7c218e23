//! `m365mail sandbox serve | tenant`: the offline Microsoft 365 tenant as a server.
//!
//! For people, `serve` prints a summary; for scripts, `--json` prints exactly one line once every listener is
//! bound and every file is written, and `--config-out FILE` writes a ready m365mail config whose profiles
//! (`sandbox-user`, `sandbox-device`, `sandbox-daemon`, `sandbox-cert`, `sandbox-shared`) point at the served
//! endpoints, with the demo password, secret, certificate and key in 0600 files beside it.
//!
//! `serve --empty-tenant` serves the tenant where `m365mail setup` begins (an administrator and one user
//! with a mailbox); its `--config-out` has one profile, `sandbox-admin`: the administrator through the
//! Microsoft Graph Command Line Tools by device code. `sandbox exchange …` does, against a running
//! sandbox's admin API, what the Exchange Online cmdlets of setup's script do.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use m365mail_sandbox::{
    AccessTokenLifetime, Lifetimes, MailSeed, Sandbox, SandboxConfig, SandboxError, TenantModel,
    demo,
};
use serde_json::json;

use crate::GlobalArgs;
use crate::config::usage;
use crate::secrets::write_file;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum SandboxCommand {
    /// Serve the sandbox tenant (Entra ID token endpoints, admin API) until Ctrl-C.
    Serve(ServeArgs),
    /// Print a tenant file (TOML): the built-in demo tenant, as a starting point for your own.
    Tenant(TenantArgs),
    /// The Exchange Online cmdlets of setup's script, against a running sandbox's admin API.
    Exchange(ExchangeArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct TenantArgs {
    /// The empty tenant of `serve --empty-tenant` (its administrator's password included) instead of the
    /// demo tenant.
    #[arg(long)]
    empty: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExchangeArgs {
    /// The sandbox's base URL (`serve` prints it; `--json` names it `endpoints.identity`).
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:8443/")]
    url: url::Url,
    /// The sandbox's CA certificate (PEM), for an HTTPS URL.
    #[arg(long, value_name = "FILE", default_value = "m365mail-sandbox-ca.pem")]
    ca_file: PathBuf,
    #[command(subcommand)]
    command: ExchangeCommand,
}

/// One Exchange Online cmdlet (the JSON answers are printed as they come).
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ExchangeCommand {
    /// New-ServicePrincipal -AppId -ObjectId [-DisplayName].
    NewServicePrincipal {
        #[arg(long)]
        app_id: String,
        /// The enterprise application's (service principal's) object id.
        #[arg(long)]
        object_id: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Get-ServicePrincipal [-Identity].
    GetServicePrincipal {
        #[arg(long)]
        identity: Option<String>,
    },
    /// Remove-ServicePrincipal -Identity.
    RemoveServicePrincipal {
        #[arg(long)]
        identity: String,
    },
    /// Add-MailboxPermission -Identity MAILBOX -User SP-OR-UPN -AccessRights FullAccess.
    AddMailboxPermission {
        #[arg(long)]
        mailbox: String,
        #[arg(long)]
        user: String,
    },
    /// Remove-MailboxPermission … -AccessRights FullAccess.
    RemoveMailboxPermission {
        #[arg(long)]
        mailbox: String,
        #[arg(long)]
        user: String,
    },
    /// Get-MailboxPermission -Identity MAILBOX.
    GetMailboxPermission {
        #[arg(long)]
        mailbox: String,
    },
    /// Add-RecipientPermission -Identity MAILBOX -Trustee SP-OR-UPN -AccessRights SendAs.
    AddRecipientPermission {
        #[arg(long)]
        mailbox: String,
        #[arg(long)]
        trustee: String,
    },
    /// Remove-RecipientPermission … -AccessRights SendAs.
    RemoveRecipientPermission {
        #[arg(long)]
        mailbox: String,
        #[arg(long)]
        trustee: String,
    },
    /// Set-CASMailbox -Identity MAILBOX [-ImapEnabled] [-PopEnabled] [-SmtpClientAuthenticationDisabled].
    SetCasMailbox {
        #[arg(long)]
        mailbox: String,
        #[arg(long)]
        imap_enabled: Option<bool>,
        #[arg(long)]
        pop_enabled: Option<bool>,
        #[arg(long)]
        smtp_client_authentication_disabled: Option<bool>,
    },
    /// Set-TransportConfig -SmtpClientAuthenticationDisabled (the tenant-wide SMTP AUTH switch).
    SetTransportConfig {
        #[arg(long, action = clap::ArgAction::Set, value_name = "BOOL")]
        smtp_client_authentication_disabled: bool,
    },
    /// Test-ServicePrincipalAuthorization -Identity [-Resource MAILBOX] (the sandbox's report).
    TestServicePrincipalAuthorization {
        #[arg(long)]
        identity: String,
        #[arg(long)]
        resource: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Loopback address of the identity listener (Entra ID endpoints, admin API; later Graph).
    #[arg(long, default_value = "127.0.0.1:8443")]
    bind: SocketAddr,
    /// POP3 over implicit TLS (Exchange's 995) on this loopback port of `--bind`'s address; 0 picks a free
    /// one. The default avoids 10024-10995, the real-servers recipe's ports.
    #[arg(long, value_name = "PORT", default_value_t = 1995)]
    pops_port: u16,
    /// IMAP over implicit TLS (Exchange's 993) on this loopback port of `--bind`'s address; 0 picks a free
    /// one.
    #[arg(long, value_name = "PORT", default_value_t = 1993)]
    imaps_port: u16,
    /// Plain IMAP offering STARTTLS (Exchange has none; clients that insist on 143 use it) on this loopback
    /// port; 0 picks a free one.
    #[arg(long, value_name = "PORT", default_value_t = 1143)]
    imap_port: u16,
    /// SMTP submission with STARTTLS (Exchange's 587) on this loopback port; 0 picks a free one.
    #[arg(long, value_name = "PORT", default_value_t = 1587)]
    smtp_port: u16,
    /// SMTP submission over implicit TLS (465) on this loopback port; 0 picks a free one.
    #[arg(long, value_name = "PORT", default_value_t = 1465)]
    smtps_port: u16,
    /// Let every listener pick a free port (`--bind`'s included); `--json` and `--config-out` say which.
    #[arg(long)]
    free_ports: bool,
    /// Write a ready m365mail config with profiles for the demo tenant (sandbox-user, sandbox-device,
    /// sandbox-daemon, sandbox-cert, sandbox-shared); secrets go to 0600 files next to it.
    #[arg(long, value_name = "FILE")]
    config_out: Option<PathBuf>,
    /// Serve the identity listener over plain HTTP instead of HTTPS (MSAL needs HTTPS; curl and m365mail work
    /// with either).
    #[arg(long)]
    http: bool,
    /// Tenant file (TOML, see `m365mail sandbox tenant`). Default: the built-in demo tenant.
    #[arg(long)]
    tenant_file: Option<PathBuf>,
    /// Where to write the generated CA certificate (PEM) that clients must trust.
    #[arg(long, default_value = "m365mail-sandbox-ca.pem")]
    ca_out: PathBuf,
    /// Access-token lifetime in seconds, the same for every token (short values make expiry
    /// testable). Default: random between 60 and 90 minutes for each token, as Entra's.
    #[arg(long)]
    access_token_lifetime: Option<u64>,
    /// Minimum seconds between device-code polls (`interval`).
    #[arg(long, default_value_t = 5)]
    device_poll_interval: u64,
    /// Serve the tenant where `m365mail setup` begins: only an administrator and one user with a mailbox
    /// (`sandbox tenant --empty` prints it, passwords included); `--config-out` then writes the
    /// administrator's profile `sandbox-admin`.
    #[arg(long, conflicts_with = "tenant_file")]
    empty_tenant: bool,
    /// Load the mailboxes from DIR: DIR/<mailbox address>/*.eml and *.mbox go to that mailbox's Inbox
    /// (kept in memory; UIDLs derive from the content). Default: the demo mail (a welcome message per
    /// mailbox, and a realistic Inbox for Adele).
    #[arg(long, value_name = "DIR")]
    mail_dir: Option<PathBuf>,
}

pub(crate) async fn run(command: SandboxCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let result = match command {
        SandboxCommand::Serve(args) => serve(args, global).await,
        SandboxCommand::Tenant(args) => tenant(&args, global),
        SandboxCommand::Exchange(args) => exchange(args).await,
    };
    if let Err(err) = &result
        && global.json
    {
        println!("{}", crate::exit::error_json(err));
    }
    result
}

/// `sandbox tenant`: the demo (or empty) tenant as TOML, or with `--json` as JSON.
fn tenant(args: &TenantArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let demo = if args.empty {
        TenantModel::empty()
    } else {
        TenantModel::demo()
    };
    if global.json {
        let toml_value: toml::Value = toml::from_str(&demo.to_toml_string()?)?;
        println!("{}", serde_json::to_string_pretty(&toml_value)?);
    } else {
        print!("{}", demo.to_toml_string()?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The line `serve` puts first in the CA and config files it writes, naming its process.
const OWNER_MARK: &str = "# m365mail sandbox serve pid ";

/// The running sandbox (pid, URL) that wrote `path`, if it is not this process and still runs.
fn owner_alive(path: &Path) -> Option<(u32, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix(OWNER_MARK))?;
    let (pid, url) = line.split_once(" at ").unwrap_or((line, "?"));
    let pid: u32 = pid.trim().parse().ok()?;
    if pid == std::process::id() {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("m365mail")
        .then(|| (pid, url.trim().to_owned()))
}

/// Refuses to overwrite `path` when another running sandbox wrote it: its clients trust that CA and use
/// those profiles.
fn refuse_if_owned(path: &Path, flag: &str) -> anyhow::Result<()> {
    match owner_alive(path) {
        Some((pid, url)) => Err(usage(format!(
            "{} belongs to the sandbox running as pid {pid} at {url}, and its clients use it; stop that \
             sandbox, or give this one its own files ({flag} OTHER; --ca-out and --config-out name them)",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// A bind failure names the flag of the port that clashed and `--free-ports`.
fn explain_bind(err: SandboxError, args: &ServeArgs) -> anyhow::Error {
    let SandboxError::Bind { addr, source } = &err else {
        return err.into();
    };
    let flag = if addr.port() == args.bind.port() {
        "--bind"
    } else if addr.port() == args.pops_port {
        "--pops-port"
    } else if addr.port() == args.imaps_port {
        "--imaps-port"
    } else if addr.port() == args.imap_port {
        "--imap-port"
    } else if addr.port() == args.smtp_port {
        "--smtp-port"
    } else if addr.port() == args.smtps_port {
        "--smtps-port"
    } else {
        "the port flags"
    };
    usage(format!(
        "cannot listen on {addr}: {source}; another program (another sandbox?) has it: choose another port with \
         {flag}, or pass --free-ports to let every listener pick a free one"
    ))
}

async fn serve(args: ServeArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let tenant = match &args.tenant_file {
        Some(path) => TenantModel::from_file(path)
            .with_context(|| format!("loading the tenant file {}", path.display()))?,
        None if args.empty_tenant => TenantModel::empty(),
        None => TenantModel::demo(),
    };
    let mut bind = args.bind;
    let mut pop3s = SocketAddr::new(bind.ip(), args.pops_port);
    let mut imaps = SocketAddr::new(bind.ip(), args.imaps_port);
    let mut imap = SocketAddr::new(bind.ip(), args.imap_port);
    let mut smtp = SocketAddr::new(bind.ip(), args.smtp_port);
    let mut smtps = SocketAddr::new(bind.ip(), args.smtps_port);
    if args.free_ports {
        smtp.set_port(0);
        smtps.set_port(0);
        imap.set_port(0);
        bind.set_port(0);
        pop3s.set_port(0);
        imaps.set_port(0);
    }
    let config = SandboxConfig {
        bind,
        pop3s: vec![pop3s],
        imaps: vec![imaps],
        imap: vec![imap],
        smtp: vec![smtp],
        smtps: vec![smtps],
        mail: match &args.mail_dir {
            Some(dir) => MailSeed::Dir(dir.clone()),
            None if args.empty_tenant => MailSeed::Welcome,
            None => MailSeed::Demo,
        },
        tls: !args.http,
        tenant,
        lifetimes: Lifetimes {
            access_token: args
                .access_token_lifetime
                .map(|seconds| AccessTokenLifetime::Fixed(Duration::from_secs(seconds)))
                .unwrap_or_default(),
            device_poll_interval: Duration::from_secs(args.device_poll_interval),
            ..Lifetimes::default()
        },
        ..SandboxConfig::default()
    };
    let ca_file = absolute(&args.ca_out)?;
    refuse_if_owned(&ca_file, "--ca-out")?;
    if let Some(path) = &args.config_out {
        refuse_if_owned(&absolute(path)?, "--config-out")?;
    }
    let sandbox = Sandbox::start(config)
        .await
        .map_err(|err| explain_bind(err, &args))?;
    write_file(
        &ca_file,
        &format!(
            "{OWNER_MARK}{} at {}\n{}",
            std::process::id(),
            sandbox.base_url(),
            sandbox.ca_pem()
        ),
        0o644,
    )?;
    let config_file = match &args.config_out {
        Some(path) => {
            let path = absolute(path)?;
            let ca = (!args.http).then_some(ca_file.as_path());
            if args.empty_tenant {
                write_admin_config(&sandbox, &path, ca)?;
            } else {
                write_config(&sandbox, &path, ca)?;
            }
            Some(path)
        }
        None => None,
    };
    if global.json {
        let tenant = sandbox
            .admin()
            .tenant_model()
            .tenants
            .first()
            .map(|t| t.id.clone());
        println!(
            "{}",
            json!({
                "tenant": tenant,
                "ca_file": ca_file,
                "config_file": config_file,
                "endpoints": endpoints(&sandbox),
                "admin": args.empty_tenant.then(|| json!({
                    "upn": demo::ADMIN_UPN,
                    "client_id": m365mail_sandbox::tenant::GRAPH_COMMAND_LINE_TOOLS_APP_ID,
                    "profile": config_file.as_ref().map(|_| "sandbox-admin"),
                })),
            })
        );
    } else {
        let mut summary = sandbox.summary();
        summary.push_str(&format!("  CA certificate:  {}\n", ca_file.display()));
        if let Some(path) = &config_file {
            summary.push_str(&format!(
                "  config file:     {} (try: m365mail --config {} -p sandbox-user token get)\n",
                path.display(),
                path.display()
            ));
        }
        summary.push_str("Press Ctrl-C to stop.\n");
        print!("{summary}");
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    sandbox.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `{"identity": URL, "pop3s": "host:port", …}`: every bound service, the first listener of each.
fn endpoints(sandbox: &Sandbox) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("identity".into(), json!(sandbox.base_url().as_str()));
    for listener in sandbox.listeners() {
        if listener.service != "identity" && !map.contains_key(listener.service) {
            map.insert(listener.service.into(), json!(listener.addr.to_string()));
        }
    }
    serde_json::Value::Object(map)
}

/// The address of the first listener of `service`.
fn service_addr(sandbox: &Sandbox, service: &str) -> Option<SocketAddr> {
    sandbox
        .listeners()
        .iter()
        .find(|l| l.service == service)
        .map(|l| l.addr)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// A TOML string literal.
fn toml_str(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// The `--config-out` file: profiles for the demo tenant, pointing at this sandbox. The demo's password,
/// secret, certificate and key are written to 0600 files next to it (`<stem>.<name>`) and named by the
/// profiles; the config itself holds no secret. Each profile has its own token cache (`<stem>.<profile>.
/// token-cache.json`), apart from real ones, and `read` keeps its checkpoints in `<stem>.checkpoints.sqlite`.
fn write_config(sandbox: &Sandbox, path: &Path, ca_file: Option<&Path>) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sandbox".to_owned());
    let beside = |name: &str| dir.join(format!("{stem}.{name}"));
    let password_file = beside("adele.password");
    let secret_file = beside("daemon.secret");
    let certificate_file = beside("daemon.crt");
    let key_file = beside("daemon.key");
    let state_file = beside("checkpoints.sqlite");
    write_file(&password_file, &format!("{}\n", demo::USER_PASSWORD), 0o600)?;
    write_file(
        &secret_file,
        &format!("{}\n", demo::CONFIDENTIAL_APP_SECRET),
        0o600,
    )?;
    let certificate = demo::certificate();
    write_file(&certificate_file, &certificate.certificate_pem, 0o644)?;
    write_file(&key_file, &certificate.private_key_pem, 0o600)?;

    let shown = |p: &Path| toml_str(&p.display().to_string());
    // `read` keeps the sandbox's checkpoints beside this config, away from real ones.
    let mut common = format!(
        "authority = {}\ntenant = {}\nstate = {}\n",
        toml_str(sandbox.base_url().as_str()),
        toml_str(demo::TENANT_ID),
        shown(&state_file)
    );
    if let Some(ca) = ca_file {
        common.push_str(&format!("ca_file = {}\n", shown(ca)));
    }
    if let Some(addr) = service_addr(sandbox, "smtp") {
        common.push_str(&format!(
            "smtp = {}\nsmtp_tls = \"starttls\"\n",
            toml_str(&addr.to_string())
        ));
    }
    if let Some(addr) = service_addr(sandbox, "imaps") {
        common.push_str(&format!(
            "imap = {}\nimap_tls = \"implicit\"\n",
            toml_str(&addr.to_string())
        ));
    }
    if let Some(addr) = service_addr(sandbox, "pop3s") {
        common.push_str(&format!(
            "pop = {}\npop_tls = \"implicit\"\n",
            toml_str(&addr.to_string())
        ));
    }
    // One token cache per profile: a cache serves a token of the same app, account and scopes whatever
    // credential earned it, so profiles sharing one would show one flow's token as another's.
    let profile = |name: &str, comment: &str, body: String| {
        let cache = shown(&beside(&format!("{name}.token-cache.json")));
        format!("\n# {comment}\n[profiles.{name}]\n{common}cache = {cache}\n{body}")
    };
    let mut text = format!(
        "{OWNER_MARK}{} at {}\n\
         # Written by `m365mail sandbox serve` for its demo tenant at {}.\n\
         # Valid while that sandbox runs. Secrets are in the 0600 files these profiles name.\n\
         default_profile = \"sandbox-user\"\n",
        std::process::id(),
        sandbox.base_url(),
        sandbox.base_url()
    );
    text.push_str(&profile(
        "sandbox-user",
        "Adele, password flow (ROPC), public client",
        format!(
            "client_id = {}\nflow = \"password\"\nusername = {}\npassword_file = {}\n",
            toml_str(demo::PUBLIC_APP_ID),
            toml_str(demo::USER_UPN),
            shown(&password_file)
        ),
    ));
    text.push_str(&profile(
        "sandbox-device",
        "Adele, device code: approve with POST /_sandbox/admin/device-codes/{user_code}/approve {\"username\": …}",
        format!(
            "client_id = {}\nflow = \"device-code\"\nusername = {}\n",
            toml_str(demo::PUBLIC_APP_ID),
            toml_str(demo::USER_UPN)
        ),
    ));
    text.push_str(&profile(
        "sandbox-shared",
        "Adele opening the shared mailbox (delegated FullAccess), password flow",
        format!(
            "client_id = {}\nflow = \"password\"\nusername = {}\npassword_file = {}\nmailbox = {}\n",
            toml_str(demo::PUBLIC_APP_ID),
            toml_str(demo::USER_UPN),
            shown(&password_file),
            toml_str(demo::SHARED_MAILBOX)
        ),
    ));
    text.push_str(&profile(
        "sandbox-daemon",
        "The daemon app, client credentials with a secret, app-only access to Adele's mailbox",
        format!(
            "client_id = {}\nflow = \"client-secret\"\nclient_secret_file = {}\nmailbox = {}\n",
            toml_str(demo::CONFIDENTIAL_APP_ID),
            shown(&secret_file),
            toml_str(demo::USER_UPN)
        ),
    ));
    text.push_str(&profile(
        "sandbox-cert",
        "The daemon app, client credentials with its certificate (RS256 + x5t)",
        format!(
            "client_id = {}\nflow = \"client-certificate\"\ncertificate = {}\nprivate_key = {}\nmailbox = {}\n",
            toml_str(demo::CONFIDENTIAL_APP_ID),
            shown(&certificate_file),
            shown(&key_file),
            toml_str(demo::USER_UPN)
        ),
    ));
    // The bridge's accounts and generated certificate stay beside this file; no pacing, since the sandbox
    // does not throttle (Exchange Online's 30 a minute would only slow tests down).
    text.push_str(&format!(
        "\n# `m365mail bridge`: accounts and a generated certificate beside this file, no pacing against the sandbox\n\
         [bridge]\naccounts = {}\nstate_dir = {}\nrate_per_minute = 0\n",
        shown(&beside("bridge-accounts.json")),
        shown(dir)
    ));
    write_file(path, &text, 0o644)
}

/// The `--config-out` file of `--empty-tenant`: the administrator's profile `sandbox-admin` (the Microsoft
/// Graph Command Line Tools, device code: approve with `POST /_sandbox/admin/device-codes/{user_code}/approve`
/// or sign in at `/devicelogin`), the administrator's and the user's passwords in 0600 files beside it.
/// Setup adds the connector's profiles to it (`m365mail demo` starts its last step from one).
pub(crate) fn write_admin_config(
    sandbox: &Sandbox,
    path: &Path,
    ca_file: Option<&Path>,
) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sandbox".to_owned());
    let beside = |name: &str| dir.join(format!("{stem}.{name}"));
    let admin_password_file = beside("admin.password");
    let user_password_file = beside("adele.password");
    write_file(
        &admin_password_file,
        &format!("{}\n", demo::ADMIN_PASSWORD),
        0o600,
    )?;
    write_file(
        &user_password_file,
        &format!("{}\n", demo::USER_PASSWORD),
        0o600,
    )?;
    let shown = |p: &Path| toml_str(&p.display().to_string());
    let mut text = format!(
        "{OWNER_MARK}{} at {}\n\
         # Written by `m365mail sandbox serve --empty-tenant` for its empty tenant at {}.\n\
         # {} (its password in {}) has a mailbox; `m365mail setup -p sandbox-admin` starts here.\n\
         default_profile = \"sandbox-admin\"\n\n\
         # The administrator through the Microsoft Graph Command Line Tools, device code\n\
         [profiles.sandbox-admin]\nauthority = {}\ntenant = {}\nclient_id = {}\nflow = \"device-code\"\n\
         username = {}\npassword_file = {}\ncache = {}\n",
        std::process::id(),
        sandbox.base_url(),
        sandbox.base_url(),
        demo::USER_UPN,
        user_password_file.display(),
        toml_str(sandbox.base_url().as_str()),
        toml_str(demo::TENANT_ID),
        toml_str(m365mail_sandbox::tenant::GRAPH_COMMAND_LINE_TOOLS_APP_ID),
        toml_str(demo::ADMIN_UPN),
        shown(&admin_password_file),
        shown(&beside("sandbox-admin.token-cache.json")),
    );
    if let Some(ca) = ca_file {
        text.push_str(&format!("ca_file = {}\n", shown(ca)));
    }
    // The mail endpoints too: `setup` copies this profile's connection into the profiles it writes.
    for (key, service, tls) in [
        ("smtp", "smtp", "starttls"),
        ("imap", "imaps", "implicit"),
        ("pop", "pop3s", "implicit"),
    ] {
        if let Some(addr) = service_addr(sandbox, service) {
            text.push_str(&format!(
                "{key} = {}\n{key}_tls = \"{tls}\"\n",
                toml_str(&addr.to_string())
            ));
        }
    }
    write_file(path, &text, 0o644)
}

/// `sandbox exchange …`: one admin API call, its JSON answer printed; an error answer fails.
async fn exchange(args: ExchangeArgs) -> anyhow::Result<ExitCode> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if args.url.scheme() == "https" {
        let pem = std::fs::read(&args.ca_file)
            .with_context(|| format!("reading the sandbox CA {}", args.ca_file.display()))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("parsing the sandbox CA {}", args.ca_file.display()))?;
        builder = builder.tls_certs_only([ca]);
    }
    let client = builder.build().context("building the HTTP client")?;
    let segment = |text: &str| {
        url::form_urlencoded::byte_serialize(text.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    let (get, path, body) = match &args.command {
        ExchangeCommand::NewServicePrincipal {
            app_id,
            object_id,
            display_name,
        } => (
            false,
            "exchange/service-principals".to_owned(),
            json!({"AppId": app_id, "ObjectId": object_id, "DisplayName": display_name}),
        ),
        ExchangeCommand::GetServicePrincipal { identity } => (
            true,
            match identity {
                Some(identity) => format!("exchange/service-principals/{}", segment(identity)),
                None => "exchange/service-principals".to_owned(),
            },
            json!(null),
        ),
        ExchangeCommand::RemoveServicePrincipal { identity } => (
            false,
            format!("exchange/service-principals/{}/remove", segment(identity)),
            json!({}),
        ),
        ExchangeCommand::AddMailboxPermission { mailbox, user } => (
            false,
            format!("mailboxes/{}/permissions", segment(mailbox)),
            json!({"User": user, "AccessRights": ["FullAccess"]}),
        ),
        ExchangeCommand::RemoveMailboxPermission { mailbox, user } => (
            false,
            format!("mailboxes/{}/permissions/remove", segment(mailbox)),
            json!({"User": user, "AccessRights": ["FullAccess"]}),
        ),
        ExchangeCommand::GetMailboxPermission { mailbox } => (
            true,
            format!("mailboxes/{}/permissions", segment(mailbox)),
            json!(null),
        ),
        ExchangeCommand::AddRecipientPermission { mailbox, trustee } => (
            false,
            format!("mailboxes/{}/recipient-permissions", segment(mailbox)),
            json!({"Trustee": trustee, "AccessRights": ["SendAs"]}),
        ),
        ExchangeCommand::RemoveRecipientPermission { mailbox, trustee } => (
            false,
            format!(
                "mailboxes/{}/recipient-permissions/remove",
                segment(mailbox)
            ),
            json!({"Trustee": trustee, "AccessRights": ["SendAs"]}),
        ),
        ExchangeCommand::SetCasMailbox {
            mailbox,
            imap_enabled,
            pop_enabled,
            smtp_client_authentication_disabled,
        } => {
            let mut change = serde_json::Map::new();
            for (name, value) in [
                ("ImapEnabled", imap_enabled),
                ("PopEnabled", pop_enabled),
                (
                    "SmtpClientAuthenticationDisabled",
                    smtp_client_authentication_disabled,
                ),
            ] {
                if let Some(value) = value {
                    change.insert(name.into(), json!(value));
                }
            }
            (
                false,
                format!("mailboxes/{}/cas-mailbox", segment(mailbox)),
                serde_json::Value::Object(change),
            )
        }
        ExchangeCommand::SetTransportConfig {
            smtp_client_authentication_disabled,
        } => (
            false,
            "exchange/transport-config".to_owned(),
            json!({"SmtpClientAuthenticationDisabled": smtp_client_authentication_disabled}),
        ),
        ExchangeCommand::TestServicePrincipalAuthorization { identity, resource } => (
            true,
            match resource {
                Some(mailbox) => format!(
                    "exchange/service-principals/{}/authorization?resource={}",
                    segment(identity),
                    segment(mailbox)
                ),
                None => format!(
                    "exchange/service-principals/{}/authorization",
                    segment(identity)
                ),
            },
            json!(null),
        ),
    };
    let url = args
        .url
        .join(&format!("_sandbox/admin/{path}"))
        .context("building the admin URL")?;
    let request = if get {
        client.get(url)
    } else {
        client.post(url).json(&body)
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("calling the sandbox at {}", args.url))?;
    let status = response.status();
    let text = response.text().await.context("reading the answer")?;
    if !status.is_success() {
        return Err(usage(format!("the sandbox refused ({status}): {text}")));
    }
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
