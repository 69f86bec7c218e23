//! `m365mail sandbox serve | tenant`: the offline Microsoft 365 tenant as a server.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use m365mail_sandbox::{AccessTokenLifetime, Lifetimes, SandboxConfig, TenantModel};

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
    /// Access-token lifetime in seconds, the same for every token (short values make expiry
    /// testable). Default: random between 60 and 90 minutes for each token, as Entra's.
    #[arg(long)]
    access_token_lifetime: Option<u64>,
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
            access_token: args
                .access_token_lifetime
                .map(|seconds| AccessTokenLifetime::Fixed(Duration::from_secs(seconds)))
                .unwrap_or_default(),
            device_poll_interval: Duration::from_secs(args.device_poll_interval),
            ..Lifetimes::default()
        },
        ..SandboxConfig::default()
    };
    m365mail_sandbox::serve(config, Some(args.ca_out)).await?;
    Ok(ExitCode::SUCCESS)
}
