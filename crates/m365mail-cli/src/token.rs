//! `m365mail token get | inspect | clear`. (Placeholder; filled by the auth work.)
use std::process::ExitCode;

use crate::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Get a token with the profile's flow.
    Get,
}

pub(crate) async fn run(_command: TokenCommand, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}

/// Exit code for an error, by cause.
pub(crate) fn exit_code(_err: &anyhow::Error) -> ExitCode {
    ExitCode::from(1)
}
