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
    Show(ProfileArgs),
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

fn show(args: &ProfileArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let (name, profile) = load_profile(global)?;
    let s = settings(&profile, args)?;
    let endpoints = profile.mail_spec().resolve(&s.authority.cloud)?;
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
    let endpoint = |e: &m365mail::endpoint::MailEndpoint| json!({"address": e.address.to_string(), "tls": e.tls});
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
                "imap": endpoint(&endpoints.imap),
                "pop": endpoint(&endpoints.pop),
                "smtp": endpoint(&endpoints.smtp),
                "graph_url": endpoints.graph_url.as_str(),
            })
        );
        return Ok(ExitCode::SUCCESS);
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
    println!(
        "imap:       {} ({})",
        endpoints.imap.address, endpoints.imap.tls
    );
    println!(
        "pop:        {} ({})",
        endpoints.pop.address, endpoints.pop.tls
    );
    println!(
        "smtp:       {} ({})",
        endpoints.smtp.address, endpoints.smtp.tls
    );
    println!("graph:      {}", endpoints.graph_url);
    Ok(ExitCode::SUCCESS)
}
