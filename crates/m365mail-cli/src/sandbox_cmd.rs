//! `m365mail sandbox serve`. (Placeholder.)
use std::process::ExitCode;

use crate::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum SandboxCommand {
    /// Serve the sandbox tenant until interrupted.
    Serve,
}

pub(crate) async fn run(
    _command: SandboxCommand,
    _global: &GlobalArgs,
) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
