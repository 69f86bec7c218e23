//! `m365mail profile show`: the selected profile resolved the way every command resolves it — authority,
//! client, flow, mailbox, the IMAP/POP/SMTP endpoints with their TLS mode and the Graph URL (defaults from
//! the cloud table) — without reading a secret or sending anything.

use std::process::ExitCode;

use serde_json::json;

use crate::GlobalArgs;
use crate::config::FlowName;
use crate::session::{ProfileArgs, load_profile, settings};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ProfileCommand {
    /// Print the resolved profile (no secret is read, nothing is sent).
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Exit 2 when a file the profile names (CA, certificate, key, password or secret file) is missing.
    #[arg(long)]
    check: bool,
}

/// Where an endpoint of a profile comes from.
pub(crate) enum EndpointSource {
    /// The profile sets it.
    Profile(String),
    /// A Microsoft cloud's default.
    Default(String),
    /// A custom authority (the sandbox, a test issuer) and no profile key: nothing to connect to.
    NotConfigured,
}

/// `key`'s endpoint: the profile's value, the cloud's default, or nothing for a custom authority.
pub(crate) fn endpoint_source(
    given: Option<&str>,
    cloud: &m365mail::auth::Cloud,
    resolved: &m365mail::endpoint::MailEndpoint,
) -> EndpointSource {
    let text = format!("{} ({})", resolved.address, resolved.tls);
    match (given, cloud) {
        (Some(_), _) => EndpointSource::Profile(text),
        (None, m365mail::auth::Cloud::Custom(_)) => EndpointSource::NotConfigured,
        (None, _) => EndpointSource::Default(text),
    }
}

impl EndpointSource {
    fn shown(&self) -> String {
        match self {
            Self::Profile(text) => text.clone(),
            Self::Default(text) => format!("{text}, the cloud's default"),
            Self::NotConfigured => "not configured".into(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Self::Profile(text) => json!({"endpoint": text, "source": "profile"}),
            Self::Default(text) => json!({"endpoint": text, "source": "default"}),
            Self::NotConfigured => json!({"endpoint": null, "source": "not configured"}),
        }
    }
}

pub(crate) fn run(command: ProfileCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let result = match command {
        ProfileCommand::Show(args) => show(&args, global),
    };
    if let Err(err) = &result
        && global.json
    {
        println!("{}", crate::exit::error_json(err));
    }
    result
}

fn show(args: &ShowArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let (name, profile) = load_profile(global)?;
    let s = settings(&profile, &args.profile)?;
    let endpoints = profile.mail_spec().resolve(&s.authority.cloud)?;
    let cloud = &s.authority.cloud;
    let imap = endpoint_source(profile.imap.as_deref(), cloud, &endpoints.imap);
    let pop = endpoint_source(profile.pop.as_deref(), cloud, &endpoints.pop);
    let smtp = endpoint_source(profile.smtp.as_deref(), cloud, &endpoints.smtp);
    let graph = match (&profile.graph_url, cloud) {
        (Some(url), _) => EndpointSource::Profile(url.clone()),
        (None, m365mail::auth::Cloud::Custom(_)) => EndpointSource::NotConfigured,
        (None, _) => EndpointSource::Default(endpoints.graph_url.to_string()),
    };
    // Every file the profile names, and whether it is there.
    let files: Vec<(&str, &std::path::Path)> = [
        ("ca_file", s.ca_file.as_deref()),
        ("certificate", profile.certificate.as_deref()),
        ("private_key", profile.private_key.as_deref()),
        ("password_file", profile.password_file.as_deref()),
        ("client_secret_file", profile.client_secret_file.as_deref()),
    ]
    .into_iter()
    .filter_map(|(key, path)| path.map(|p| (key, p)))
    .collect();
    let missing: Vec<&(&str, &std::path::Path)> =
        files.iter().filter(|(_, p)| !p.exists()).collect();
    for (key, path) in &missing {
        eprintln!("m365mail: warning: {key} {} does not exist", path.display());
    }
    let flow = profile.flow.unwrap_or(FlowName::DeviceCode);
    let mailbox = profile
        .mailbox
        .clone()
        .or_else(|| (!flow.is_app_only()).then(|| s.username.clone()).flatten());
    let secret_source = match flow {
        FlowName::Password => match (&profile.password_file, &profile.password_command) {
            (Some(path), _) => Some(format!("password_file {}", path.display())),
            (None, Some(argv)) => Some(format!(
                "password_command {}",
                argv.first().map_or("", String::as_str)
            )),
            (None, None) => Some("M365MAIL_PASSWORD, --password-stdin or a prompt".to_owned()),
        },
        FlowName::ClientSecret => {
            match (&profile.client_secret_file, &profile.client_secret_command) {
                (Some(path), _) => Some(format!("client_secret_file {}", path.display())),
                (None, Some(argv)) => Some(format!(
                    "client_secret_command {}",
                    argv.first().map_or("", String::as_str)
                )),
                (None, None) => {
                    Some("M365MAIL_CLIENT_SECRET, --secret-file or a prompt".to_owned())
                }
            }
        }
        _ => None,
    };
    if global.json {
        println!(
            "{}",
            json!({
                "ok": true,
                "profile": name,
                "authority": s.authority.to_string(),
                "client_id": s.client_id,
                "flow": flow.as_str(),
                "username": s.username,
                "mailbox": mailbox,
                "secret_from": secret_source,
                "ca_file": s.ca_file,
                "certificate": profile.certificate,
                "private_key": profile.private_key,
                "missing_files": missing.iter().map(|(key, path)| json!({"key": key, "path": path})).collect::<Vec<_>>(),
                "imap": imap.json(),
                "pop": pop.json(),
                "smtp": smtp.json(),
                "graph_url": graph.json(),
            })
        );
        return Ok(exit_for(args.check, &missing));
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    println!("profile:    {name}");
    println!("authority:  {}", s.authority);
    println!("client id:  {}", s.client_id);
    println!("flow:       {}", flow.as_str());
    println!("username:   {}", or_dash(s.username.clone()));
    println!("mailbox:    {}", or_dash(mailbox));
    if let Some(source) = secret_source {
        println!("secret:     from {source}");
    }
    println!(
        "CA file:    {}",
        or_dash(s.ca_file.as_ref().map(|p| p.display().to_string()))
    );
    if let Some(path) = &profile.certificate {
        println!("certificate: {}", path.display());
    }
    if let Some(path) = &profile.private_key {
        println!("private key: {}", path.display());
    }
    println!("imap:       {}", imap.shown());
    println!("pop:        {}", pop.shown());
    println!("smtp:       {}", smtp.shown());
    println!("graph:      {}", graph.shown());
    Ok(exit_for(args.check, &missing))
}

fn exit_for(check: bool, missing: &[&(&str, &std::path::Path)]) -> ExitCode {
    if check && !missing.is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
