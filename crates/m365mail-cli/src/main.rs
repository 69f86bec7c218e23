//! `m365mail`: a thin command line over the `m365mail` library and the `m365mail-sandbox` tenant.
//!
//! Parse arguments, call the library, print. Errors are printed with their whole context chain and mapped to
//! an exit code by cause (see `exit`).
#![forbid(unsafe_code)]

mod bridge;
mod config;
mod demo;
mod doctor;
mod exit;
mod profile_cmd;
mod read;
mod sandbox_cmd;
mod secrets;
mod send;
mod session;
mod setup_cmd;
mod token;
mod users;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Read and send Microsoft 365 mail with OAuth 2.0, and run an offline Microsoft 365 sandbox.
#[derive(Debug, Parser)]
#[command(name = "m365mail", version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GlobalArgs {
    /// Config file (TOML with named profiles). Default: the user config dir's m365mail/config.toml.
    #[arg(long, global = true, env = "M365MAIL_CONFIG")]
    pub(crate) config: Option<std::path::PathBuf>,
    /// Profile name in the config file.
    #[arg(long, short = 'p', global = true, env = "M365MAIL_PROFILE")]
    pub(crate) profile: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Log filter for stderr (tracing syntax, e.g. `debug` or `m365mail=trace`). Secrets are never logged.
    /// The default shows m365mail's own warnings only: a dependency's log lines (a TLS verifier's ERROR for
    /// an unknown issuer, say) reach stderr only when asked for, since the error itself says what happened.
    #[arg(
        long,
        global = true,
        env = "M365MAIL_LOG",
        default_value = "m365mail=warn,m365mail_sandbox=warn"
    )]
    pub(crate) log: String,
    /// Log lines as JSON objects (one per line, on stderr), for a log collector.
    #[arg(long, global = true, env = "M365MAIL_LOG_JSON")]
    pub(crate) log_json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Get, inspect and clear OAuth 2.0 tokens from Microsoft Entra ID.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Show a profile as the commands will use it: authority, flow, mailbox and the mail endpoints.
    #[command(subcommand)]
    Profile(profile_cmd::ProfileCommand),
    /// Run the offline Microsoft 365 sandbox tenant.
    #[command(subcommand)]
    Sandbox(sandbox_cmd::SandboxCommand),
    /// Read new mail over IMAP (default) or POP3: one JSON record per message, checkpointed, then acted on.
    Read(Box<read::ReadArgs>),
    /// List the mailbox's folders (IMAP) with their attributes and message and unseen counts.
    Folders(Box<read::FoldersArgs>),
    /// List the tenant's users through Microsoft Graph (User.ReadBasic.All delegated, User.Read.All app-only).
    Users(Box<users::UsersArgs>),
    /// Send mail over SMTP with XOAUTH2: from flags or JSON (the schema `read` emits); one JSON line per message.
    Send(Box<send::SendArgs>),
    /// Check every step of the Microsoft 365 setup for a profile: tenant, app, credential, consent, tokens,
    /// IMAP, POP3, SMTP and Graph; each pass / fail with its cause and remedy. Changes nothing.
    Doctor(Box<doctor::DoctorArgs>),
    /// Create or update the app registration m365mail needs (an administrator signs in): permissions, public
    /// client flows, a client secret, the service principal, admin consent; write the profile and the
    /// Exchange Online script.
    Setup(Box<setup_cmd::SetupArgs>),
    /// Show or reset the read checkpoints.
    #[command(subcommand)]
    Checkpoint(read::CheckpointCommand),
    /// Run the demo on the embedded sandbox: every token flow, with decoded claims.
    Demo(demo::DemoArgs),
    /// A local SMTP bridge: password-only devices and apps send through it to Microsoft 365 (XOAUTH2).
    #[command(subcommand)]
    Bridge(bridge::BridgeCommand),
}

fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(message) = ignored_selection(&cli.command, &matches) {
        eprintln!("m365mail: {message}");
        return ExitCode::from(2);
    }
    // The bridge is a service: its audit lines (info) are its point, unless --log / M365MAIL_LOG says otherwise.
    let log = if matches!(
        cli.command,
        Command::Bridge(bridge::BridgeCommand::Serve(_))
    ) && matches.value_source("log") == Some(clap::parser::ValueSource::DefaultValue)
    {
        "m365mail=info,m365mail_sandbox=warn"
    } else {
        cli.global.log.as_str()
    };
    init_logging(log, cli.global.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("m365mail: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("m365mail: {err:#}");
            // The cause and what to do, on their own lines, in text mode too (JSON carries them as fields).
            if let Some(classified) = exit::classified(&err) {
                let width = terminal_width();
                eprintln!(
                    "{}",
                    wrap(
                        "  cause:  ",
                        &m365mail::Classified::cause(classified),
                        width
                    )
                );
                eprintln!("{}", wrap("  remedy: ", &classified.remedy(), width));
            }
            token::exit_code(&err)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Token(command) => token::run(command, &cli.global).await,
        Command::Profile(command) => profile_cmd::run(command, &cli.global),
        Command::Sandbox(command) => sandbox_cmd::run(command, &cli.global).await,
        Command::Read(args) => read::run(*args, &cli.global).await,
        Command::Folders(args) => read::folders(*args, &cli.global).await,
        Command::Users(args) => users::run(*args, &cli.global).await,
        Command::Send(args) => send::run(*args, &cli.global).await,
        Command::Doctor(args) => doctor::run(*args, &cli.global).await,
        Command::Setup(args) => setup_cmd::run(*args, &cli.global).await,
        Command::Checkpoint(command) => read::checkpoint(command, &cli.global),
        Command::Demo(args) => demo::run(args, &cli.global).await,
        Command::Bridge(command) => bridge::run(command, &cli.global).await,
    }
}

/// A `-p/--profile` or `--config` typed on the command line for a command that reads no profile: refused,
/// since the user expects it to matter. The same values from `M365MAIL_PROFILE` / `M365MAIL_CONFIG` are
/// fine: the environment is set once for every command.
fn ignored_selection(command: &Command, matches: &clap::ArgMatches) -> Option<String> {
    let name = match command {
        Command::Sandbox(_) => "sandbox",
        Command::Demo(_) => "demo",
        Command::Token(token::TokenCommand::Inspect(_)) => "token inspect",
        _ => return None,
    };
    // Global options may be typed before or after the subcommand: look at every level.
    let mut levels = vec![matches];
    while let Some((_, sub)) = levels.last().and_then(|m| m.subcommand()) {
        levels.push(sub);
    }
    let typed = |id: &str| {
        levels
            .iter()
            .any(|m| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
    };
    let flag = if typed("profile") {
        "-p/--profile"
    } else if typed("config") {
        "--config"
    } else {
        return None;
    };
    Some(format!("{flag} is not used by `m365mail {name}`; drop it"))
}

/// The width to wrap error text to: `COLUMNS` at a terminal (else 100); no wrapping when stderr is not a
/// terminal, so a log keeps one line per field.
fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let columns = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
    Some(columns.unwrap_or(100).max(40))
}

/// `label` then `text`, wrapped at word boundaries to `width` (when given) with continuation lines indented
/// under the text.
fn wrap(label: &str, text: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return format!("{label}{text}");
    };
    let indent = " ".repeat(label.chars().count());
    let mut out = label.to_string();
    let mut column = label.chars().count();
    for word in text.split_whitespace() {
        let length = word.chars().count();
        if column > indent.len() && column + 1 + length > width {
            out.push('\n');
            out.push_str(&indent);
            column = indent.len();
        } else if column > indent.len() {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += length;
    }
    out
}

fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("m365mail=warn,m365mail_sandbox=warn")
    });
    // Colour only for a person at a terminal: escape codes in a log file or a CI log are noise.
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wraps_under_the_label() {
        assert_eq!(super::wrap("  cause:  ", "a b c", None), "  cause:  a b c");
        assert_eq!(
            super::wrap("  x: ", "one two three four", Some(15)),
            "  x: one two\n     three four"
        );
        // A word longer than the line stays whole.
        assert_eq!(super::wrap("> ", "abcdefghij", Some(5)), "> abcdefghij");
    }
}
