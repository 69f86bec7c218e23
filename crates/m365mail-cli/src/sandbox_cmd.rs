//! `m365mail sandbox serve | tenant`: the offline Microsoft 365 tenant as a server.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use m365mail_sandbox::{Lifetimes, SandboxConfig, TenantModel};

use crate::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum SandboxCommand {
    /// Serve the sandbox tenant (Entra ID token endpoints, admin API) until Ctrl-C.
    Serve(ServeArgs),
    /// Print a tenant file (TOML): the built-in demo tenant, as a starting point for your own.
    Tenant,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    bind: SocketAddr,
    /// Serve plain HTTP instead of HTTPS (MSAL needs HTTPS; curl and m365mail work with either).
    #[arg(long)]
    http: bool,
    /// Tenant file (TOML, see `m365mail sandbox tenant`). Default: the built-in demo tenant.
    #[arg(long)]
    tenant_file: Option<PathBuf>,
    /// Where to write the generated CA certificate (PEM) that clients must trust.
    #[arg(long, default_value = "m365mail-sandbox-ca.pem")]
    ca_out: PathBuf,
    /// Access-token lifetime in seconds (short values make expiry testable).
    #[arg(long, default_value_t = 3600)]
    access_token_lifetime: u64,
    /// Minimum seconds between device-code polls (`interval`).
    #[arg(long, default_value_t = 5)]
    device_poll_interval: u64,
}

pub(crate) async fn run(command: SandboxCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match command {
        SandboxCommand::Serve(args) => serve(args, global).await,
        SandboxCommand::Tenant => {
            print!("{}", TenantModel::demo().to_toml_string()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(args: ServeArgs, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let tenant = match &args.tenant_file {
        Some(path) => TenantModel::from_file(path)
            .with_context(|| format!("loading the tenant file {}", path.display()))?,
        None => TenantModel::demo(),
    };
    let config = SandboxConfig {
        bind: args.bind,
        tls: !args.http,
        tenant,
        lifetimes: Lifetimes {
            access_token: Duration::from_secs(args.access_token_lifetime),
            device_poll_interval: Duration::from_secs(args.device_poll_interval),
            ..Lifetimes::default()
        },
        ..SandboxConfig::default()
    };
    m365mail_sandbox::serve(config, Some(args.ca_out)).await?;
    Ok(ExitCode::SUCCESS)
}
