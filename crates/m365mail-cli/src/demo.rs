//! `m365mail demo`. (Placeholder.)
use std::process::ExitCode;

use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {}

pub(crate) async fn run(_args: DemoArgs, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
