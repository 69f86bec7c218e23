//! `m365mail setup`: an administrator signs in (the profile given with `-p`, by default through Microsoft
//! Graph Command Line Tools), and the app registration m365mail needs is created or brought up to date
//! ([`m365mail::setup::apply`]): permissions resolved at run time, public client flows, a client secret,
//! the service principal, admin consent. Then the connection profile is written into the config file, the
//! secret into a 0600 file beside it, and the Exchange Online script with every id filled in.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use m365mail::setup::{self, Access, Protocol, Request, ScriptInputs};
use serde_json::json;

use crate::GlobalArgs;
use crate::config::{FlowName, usage};
use crate::secrets::write_file;
use crate::session::{self, AuthArgs, ProfileArgs, ScopeChoice, load_profile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CredentialArg {
    /// A client secret (a 0600 file beside the config).
    Secret,
    /// A self-signed RSA certificate generated here (its key a 0600 file beside the config).
    Certificate,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AccessArg {
    AppOnly,
    Delegated,
    Both,
}

/// `m365mail setup`.
#[derive(Debug, clap::Args)]
pub(crate) struct SetupArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// The public client the administrator signs in with (default: the profile's `client_id`, else Microsoft
    /// Graph Command Line Tools, 14d82eec-204b-4c2f-b7e8-296a70dab67e).
    #[arg(long, value_name = "CLIENT-ID")]
    admin_client_id: Option<String>,
    /// How the administrator signs in (the same as --flow): device-code (the default), auth-code, or password.
    #[arg(long, value_enum, value_name = "FLOW")]
    admin_flow: Option<FlowName>,
    /// The app registration's display name (a second run finds it by this name).
    #[arg(long, default_value = "m365mail")]
    name: String,
    /// Who the tokens are for: app-only (a daemon), delegated (users), or both.
    #[arg(long, value_enum, default_value = "both")]
    access: AccessArg,
    /// The protocols, comma-separated: imap, pop, smtp, graph.
    #[arg(long, value_delimiter = ',', default_value = "imap,pop,smtp,graph")]
    protocols: Vec<String>,
    /// A mailbox the app opens (repeatable): the profile's `mailbox` (the first) and the script's
    /// Add-MailboxPermission lines.
    #[arg(long = "mailbox", value_name = "ADDRESS")]
    mailboxes: Vec<String>,
    /// An address the app sends as besides the mailboxes (repeatable): Add-RecipientPermission SendAs.
    #[arg(long, value_name = "ADDRESS")]
    send_as: Vec<String>,
    /// The profile to write into the config file (delegated access adds NAME-user).
    #[arg(long, default_value = "m365mail", value_name = "NAME")]
    write_profile: String,
    /// Where to write the Exchange Online script (default: beside the config file, NAME-exchange.ps1).
    #[arg(long, value_name = "FILE")]
    script_out: Option<PathBuf>,
    /// The app-only credential: a client secret, or a certificate generated here (no secret to copy or expire
    /// unseen; Microsoft's advice for daemons).
    #[arg(long, value_enum, default_value = "secret")]
    credential: CredentialArg,
    /// Also print the new client secret (it is always written to the 0600 file the profile names).
    #[arg(long)]
    show_secret: bool,
    /// Show what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
}

fn protocols(given: &[String]) -> anyhow::Result<Vec<Protocol>> {
    Protocol::parse_list(given).map_err(usage)
}

/// Runs `setup`.
pub(crate) async fn run(args: SetupArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let result = setup(args, global).await;
    if let Err(err) = &result
        && global.json
    {
        println!("{}", crate::exit::error_json(err));
    }
    result
}

async fn setup(mut args: SetupArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let (outcome, written) = apply(&mut args, global).await?;
    if global.json {
        println!(
            "{}",
            json!({
                "app_id": outcome.app_id, "object_id": outcome.object_id,
                "service_principal_id": outcome.service_principal_id, "actions": outcome.actions,
                "changed": !outcome.actions.is_empty(), "dry_run": args.dry_run, "written": written,
            })
        );
    } else {
        let verb = if args.dry_run { "would" } else { "did" };
        if outcome.actions.is_empty() {
            println!("{:?} is already as asked: nothing to change.", args.name);
        } else {
            println!("setup {verb}:");
            for action in &outcome.actions {
                println!("  {action}");
            }
        }
        if !outcome.app_id.is_empty() {
            println!(
                "client id {}, Enterprise application (service principal) {}",
                outcome.app_id, outcome.service_principal_id
            );
        }
        for path in &written {
            println!("wrote {path}");
        }
        if !args.dry_run {
            println!(
                "next: run the Exchange Online script as an Exchange administrator, then `m365mail -p {} doctor`",
                args.write_profile
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Does what `setup` does — the sign-in, the app registration, the secret, profile and script files — and
/// prints nothing (the demo shows it its own way): what changed, and the files written.
pub(crate) async fn apply(
    args: &mut SetupArgs,
    global: &GlobalArgs,
) -> anyhow::Result<(setup::Outcome, Vec<String>)> {
    let protocols = protocols(&args.protocols)?;
    for address in args.mailboxes.iter().chain(&args.send_as) {
        m365mail::bridge::accounts::validate_address(address)
            .map_err(|e| usage(format!("{address:?}: {e}")))?;
    }
    if args.name.trim().is_empty() || args.name.chars().any(char::is_control) {
        return Err(usage("--name: a display name without control characters"));
    }
    if !args
        .write_profile
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(usage(
            "--write-profile: letters, digits, - and _ only (it becomes a TOML key and file names)",
        ));
    }
    let access = match args.access {
        AccessArg::AppOnly => Access::AppOnly,
        AccessArg::Delegated => Access::Delegated,
        AccessArg::Both => Access::Both,
    };
    let (_, admin_profile) = load_profile(global)?;
    if args.profile.client_id.is_none() && admin_profile.client_id.is_none() {
        args.profile.client_id = Some(
            args.admin_client_id
                .clone()
                .unwrap_or_else(|| setup::GRAPH_CLI_TOOLS_APP_ID.to_owned()),
        );
    }
    if let Some(flow) = args.admin_flow {
        args.auth.flow = Some(flow);
    }
    if args.auth.flow.is_none() && admin_profile.flow.is_none() {
        args.auth.flow = Some(FlowName::DeviceCode);
    }
    let session = session::build(
        global,
        &args.profile,
        &args.auth,
        ScopeChoice::Graph(&setup::ADMIN_SCOPES),
    )?;
    if session.flow.is_app_only() {
        return Err(usage(
            "setup signs an administrator in (device code, auth code or password), not an app: use --flow \
             device-code",
        ));
    }
    let client = session::graph_client(&session)?;
    let token = session.provider.token().await?;

    let config_path = global
        .config
        .clone()
        .or_else(crate::config::default_path)
        .ok_or_else(|| usage("no config file location: pass --config FILE"))?;
    // Absolute: the profile names the secret file, and may be used from another directory.
    let dir = std::path::absolute(
        config_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    let secret_path = dir.join(format!("{}.secret", args.write_profile));
    let certificate_path = dir.join(format!("{}.crt", args.write_profile));
    let key_path = dir.join(format!("{}.key", args.write_profile));
    let app_only = matches!(access, Access::AppOnly | Access::Both);
    let wants_secret = app_only && args.credential == CredentialArg::Secret;
    // A certificate already kept beside the config is not replaced either.
    let new_certificate = if app_only
        && args.credential == CredentialArg::Certificate
        && !certificate_path.exists()
    {
        Some(
            setup::generate_certificate(&format!("m365mail {}", args.name))
                .map_err(|e| usage(format!("cannot generate a certificate: {e}")))?,
        )
    } else {
        None
    };
    let request = Request {
        display_name: args.name.clone(),
        access,
        protocols: protocols.clone(),
        public_client: matches!(access, Access::Delegated | Access::Both),
        // A secret already kept beside the config is not replaced: a second run changes nothing.
        add_secret: wants_secret && !secret_path.exists(),
        add_certificate: new_certificate.as_ref().map(|c| c.der.clone()),
    };
    let outcome = setup::apply(&client, &token.token, &request, args.dry_run).await?;

    let mut written = Vec::new();
    if !args.dry_run {
        if let Some(secret) = &outcome.secret {
            write_file(&secret_path, secret.expose(), 0o600)?;
            written.push(secret_path.display().to_string());
            if args.show_secret {
                eprintln!(
                    "client secret (shown once; also in {}): {}",
                    secret_path.display(),
                    secret.expose()
                );
            }
        }
        if let Some(certificate) = &new_certificate {
            write_file(&key_path, certificate.private_key_pem.expose(), 0o600)?;
            write_file(&certificate_path, &certificate.certificate_pem, 0o644)?;
            written.push(certificate_path.display().to_string());
            written.push(key_path.display().to_string());
        }
        let credential = if args.credential == CredentialArg::Certificate {
            Credential::Certificate {
                certificate: &certificate_path,
                private_key: &key_path,
            }
        } else {
            Credential::Secret(&secret_path)
        };
        let changed_profiles = write_profiles(
            &config_path,
            global.profile.as_deref(),
            args,
            &admin_profile,
            access,
            &outcome.app_id,
            credential,
        )?;
        if changed_profiles {
            written.push(config_path.display().to_string());
        }
        let tenant_domain = admin_profile
            .username
            .as_deref()
            .and_then(|u| u.split_once('@'))
            .map_or_else(
                || session.settings.authority.url().to_string(),
                |(_, domain)| domain.to_owned(),
            );
        let script = setup::exchange_script(&ScriptInputs {
            tenant_id: session.settings.authority.tenant.to_string(),
            tenant_domain,
            app_id: outcome.app_id.clone(),
            service_principal_id: outcome.service_principal_id.clone(),
            display_name: args.name.clone(),
            mailboxes: args.mailboxes.clone(),
            send_as: args.send_as.clone(),
            smtp: protocols.contains(&Protocol::Smtp),
            profile: args.write_profile.clone(),
        });
        let script_path = args
            .script_out
            .clone()
            .unwrap_or_else(|| dir.join(format!("{}-exchange.ps1", args.write_profile)));
        let unchanged = std::fs::read_to_string(&script_path).is_ok_and(|old| old == script);
        if !unchanged {
            write_file(&script_path, &script, 0o644)?;
            written.push(script_path.display().to_string());
        }
    }
    Ok((outcome, written))
}

/// Where an app-only profile's credential is.
#[derive(Clone, Copy)]
enum Credential<'a> {
    Secret(&'a Path),
    Certificate {
        certificate: &'a Path,
        private_key: &'a Path,
    },
}

/// The connection profile(s) for the new app: the admin profile's connection keys (authority, tenant, CA,
/// mail endpoints) with the app's client id and flow. Written only when missing or different; whether the
/// file changed.
fn write_profiles(
    config_path: &Path,
    admin_name: Option<&str>,
    args: &SetupArgs,
    admin: &crate::config::Profile,
    access: Access,
    app_id: &str,
    credential: Credential<'_>,
) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(config_path).unwrap_or_default();
    let mut config: toml::Table = text
        .parse()
        .map_err(|e| usage(format!("{}: {e}", config_path.display())))?;
    let admin_name = admin_name
        .map(str::to_owned)
        .or_else(|| std::env::var("M365MAIL_PROFILE").ok())
        .or_else(|| config.get("default_profile")?.as_str().map(str::to_owned));
    let base: toml::Table = admin_name
        .and_then(|name| config.get("profiles")?.get(&name)?.as_table().cloned())
        .unwrap_or_default();
    let mut connection = toml::Table::new();
    for key in [
        "authority",
        "cloud",
        "tenant",
        "ca_file",
        "imap",
        "imap_tls",
        "pop",
        "pop_tls",
        "smtp",
        "smtp_tls",
        "graph_url",
    ] {
        if let Some(value) = base.get(key) {
            connection.insert(key.into(), value.clone());
        }
    }
    if let Some(tenant) = &admin.tenant {
        connection.insert("tenant".into(), toml::Value::String(tenant.clone()));
    }
    connection.insert("client_id".into(), toml::Value::String(app_id.to_owned()));
    let mut wanted: Vec<(String, toml::Table)> = Vec::new();
    if matches!(access, Access::AppOnly | Access::Both) {
        let mut profile = connection.clone();
        let path = |p: &Path| toml::Value::String(p.display().to_string());
        match credential {
            Credential::Secret(secret) => {
                profile.insert("flow".into(), toml::Value::String("client-secret".into()));
                profile.insert("client_secret_file".into(), path(secret));
            }
            Credential::Certificate {
                certificate,
                private_key,
            } => {
                profile.insert(
                    "flow".into(),
                    toml::Value::String("client-certificate".into()),
                );
                profile.insert("certificate".into(), path(certificate));
                profile.insert("private_key".into(), path(private_key));
            }
        }
        if let Some(mailbox) = args.mailboxes.first() {
            profile.insert("mailbox".into(), toml::Value::String(mailbox.clone()));
        }
        wanted.push((args.write_profile.clone(), profile));
    }
    if matches!(access, Access::Delegated | Access::Both) {
        let mut profile = connection;
        profile.insert("flow".into(), toml::Value::String("device-code".into()));
        let name = if access == Access::Both {
            format!("{}-user", args.write_profile)
        } else {
            args.write_profile.clone()
        };
        wanted.push((name, profile));
    }
    let profiles = config
        .entry("profiles")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| usage("the config file's `profiles` is not a table"))?;
    let mut changed = false;
    for (name, profile) in wanted {
        if profiles.get(&name).and_then(toml::Value::as_table) != Some(&profile) {
            profiles.insert(name, toml::Value::Table(profile));
            changed = true;
        }
    }
    if changed {
        // The user's config, rewritten whole: atomically, keeping its mode (it may be 0600).
        let mode = std::fs::metadata(config_path).map_or(0o644, |m| {
            use std::os::unix::fs::PermissionsExt as _;
            m.permissions().mode() & 0o777
        });
        write_file(config_path, &toml::to_string(&config)?, mode)?;
    }
    Ok(changed)
}
