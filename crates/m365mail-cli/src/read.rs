//! `m365mail read`, `m365mail folders` and `m365mail checkpoint list | reset`.
//!
//! `read` signs in with the profile's flow and reads over IMAP (the default: a folder, server-side filters,
//! after-processing, through [`m365mail::read::imap::read_imap`]) or POP3 (the maildrop, through
//! [`m365mail::read::read_pop`]), printing one JSON record per new message on stdout (NDJSON); with
//! `--out-dir` the records (and attachments, and with `--eml` the raw messages) are also files. A one-line
//! summary and, at a terminal, a progress bar go to stderr.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use m365mail::auth::Target;
use m365mail::imap::{ImapClient as _, ImapConnection, ImapOptions, SearchQuery};
use m365mail::pop3::{Pop3Connection, Pop3Options};
use m365mail::read::graph::{GraphAction, GraphReadOptions, read_graph};
use m365mail::read::imap::{ImapAction, ImapReadOptions, Xoauth2Connector, read_imap};
use m365mail::read::sink::{DirSink, LineSink, Sink, Tee};
use m365mail::read::{After, Filter, Order, Progress, ReadOptions, ReadSummary, read_pop};
use m365mail::store::{CheckpointStore, SourceKey};
use m365mail::time::{SystemClock, rfc3339};
use serde_json::json;

use crate::GlobalArgs;
use crate::config::usage;
use crate::session::{self, AuthArgs, ProfileArgs, ScopeChoice, load_profile};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OrderArg {
    Oldest,
    Newest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ThenArg {
    /// Leave it (IMAP opens the folder read-only).
    None,
    /// IMAP: set \Seen.
    MarkRead,
    /// IMAP: set \Flagged.
    Flag,
    /// IMAP: move it to --to-folder.
    Move,
    /// IMAP: copy it to --to-folder.
    Copy,
    /// IMAP: move it to Deleted Items (the folder marked \Trash).
    Trash,
    /// Delete it for good (POP3: DELE; IMAP: \Deleted + UID EXPUNGE, not into Deleted Items).
    Delete,
}

/// `m365mail read`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReadArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// imap (the default) or pop (alias pop3). Default: the profile's `protocol`, else imap.
    #[arg(long)]
    protocol: Option<String>,
    /// The mailbox to read (XOAUTH2 user=). Default: the profile's `mailbox`, else the signed-in user.
    #[arg(long)]
    mailbox: Option<String>,
    /// The IMAP server as host:port (default: the profile's `imap`, else the cloud's).
    #[arg(long, value_name = "HOST:PORT")]
    imap: Option<String>,
    /// implicit (IMAPS, 993) or starttls (143). Default: the profile's `imap_tls`, else implicit.
    #[arg(long, value_name = "MODE")]
    imap_tls: Option<String>,
    /// The POP3 server as host:port (default: the profile's `pop`, else the cloud's).
    #[arg(long, value_name = "HOST:PORT")]
    pop: Option<String>,
    /// implicit (POP3S, 995) or starttls (STLS on 110). Default: the profile's `pop_tls`, else implicit.
    #[arg(long, value_name = "MODE")]
    pop_tls: Option<String>,
    /// IMAP: the folder to read, as `m365mail folders` shows it (localised names welcome). Default INBOX.
    #[arg(long, value_name = "NAME")]
    folder: Option<String>,
    /// At most this many records.
    #[arg(long)]
    limit: Option<usize>,
    /// Which new messages first.
    #[arg(long, value_enum, default_value = "oldest")]
    order: OrderArg,
    /// Only messages received on or after this (YYYY-MM-DD, UTC, or RFC 3339): IMAP's INTERNALDATE (by the
    /// server, then exactly), POP3's Date header (client-side).
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// Only messages received before this (as --since).
    #[arg(long, value_name = "DATE")]
    before: Option<String>,
    /// Only messages whose From contains this (case-insensitive; IMAP: by the server).
    #[arg(long = "from", value_name = "TEXT")]
    from_filter: Option<String>,
    /// IMAP: only messages whose To contains this (by the server).
    #[arg(long = "to", value_name = "TEXT")]
    to_filter: Option<String>,
    /// Only messages whose Subject contains this (case-insensitive; IMAP: by the server).
    #[arg(long, value_name = "TEXT")]
    subject: Option<String>,
    /// IMAP: only messages without \Seen (by the server).
    #[arg(long)]
    unseen: bool,
    /// IMAP: only messages larger than SIZE (K, M, G = 1024-based; by the server).
    #[arg(long, value_name = "SIZE")]
    larger_than: Option<String>,
    /// IMAP: only messages with an attachment (from the server's BODYSTRUCTURE).
    #[arg(long)]
    has_attachment: bool,
    /// Larger messages are not downloaded: a record with "skipped": "too large" (K, M, G = 1024-based).
    #[arg(long, default_value = "50MB", value_name = "SIZE")]
    max_size: String,
    /// Also write DIR/<key>.json and attachments as DIR/<key>/<n>-<name> (atomic, idempotent).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// With --out-dir: keep every raw message as DIR/<key>.eml.
    #[arg(long, requires = "out_dir")]
    eml: bool,
    /// After a message's record and checkpoint are committed (POP3: none or delete).
    #[arg(long, value_enum, default_value = "none")]
    then: ThenArg,
    /// IMAP: the destination folder of --then move and --then copy.
    #[arg(long, value_name = "NAME")]
    to_folder: Option<String>,
    /// IMAP: use COPY + \Deleted + UID EXPUNGE even when the server offers MOVE.
    #[arg(long, hide = true)]
    no_move: bool,
    /// The checkpoint store (SQLite). Default: the profile's `state`, else the user data dir's
    /// m365mail/checkpoints.sqlite.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Mark every message on the server now as seen, without reading it: later runs read only newer mail.
    #[arg(long)]
    from_now: bool,
    /// Keep running: read again every SECONDS (each pass as one run: its records, checkpoints and summary
    /// line). Ctrl-C or SIGTERM stops it after the pass under way. A pass that fails for a passing reason
    /// (network, throttling, a session lost) is logged and the next one tries again; any other failure ends it.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    watch: Option<u64>,
}

/// `m365mail folders`.
#[derive(Debug, clap::Args)]
pub(crate) struct FoldersArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// The mailbox (XOAUTH2 user=). Default: the profile's `mailbox`, else the signed-in user.
    #[arg(long)]
    mailbox: Option<String>,
    /// imap (the default) or graph (Mail.Read): where to list from. Default: the profile's `protocol`
    /// when it is graph, else imap.
    #[arg(long)]
    protocol: Option<String>,
    /// The IMAP server as host:port (default: the profile's `imap`, else the cloud's).
    #[arg(long, value_name = "HOST:PORT")]
    imap: Option<String>,
    /// implicit (IMAPS, 993) or starttls (143). Default: the profile's `imap_tls`, else implicit.
    #[arg(long, value_name = "MODE")]
    imap_tls: Option<String>,
}

/// `folders --protocol graph`: every mail folder with its path, counts and id.
async fn graph_folders(args: FoldersArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    if args.imap.is_some() || args.imap_tls.is_some() {
        return Err(usage("--imap and --imap-tls are for --protocol imap"));
    }
    let session = session::build(
        global,
        &args.profile,
        &args.auth,
        ScopeChoice::Graph(&["Mail.Read"]),
    )?;
    let client = session::graph_client(&session)?;
    let token = session.provider.token().await?;
    let mailbox = mailbox(args.mailbox.as_deref(), &session, token.account.as_deref())?;
    let list = client.folders(&token.token, &mailbox).await?;
    if global.json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = list
        .iter()
        .map(|f| f.path.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    println!(
        "{:width$}  {:>8}  {:>6}  ID",
        "FOLDER", "MESSAGES", "UNREAD"
    );
    for folder in &list {
        println!(
            "{:width$}  {:>8}  {:>6}  {}",
            folder.path, folder.total_item_count, folder.unread_item_count, folder.id
        );
    }
    eprintln!("{} folders in {mailbox} (Graph)", list.len());
    Ok(ExitCode::SUCCESS)
}

/// Runs `folders`: every folder with its attributes and message and unseen counts.
pub(crate) async fn folders(args: FoldersArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let protocol = match &args.protocol {
        Some(protocol) => protocol.to_ascii_lowercase(),
        None => load_profile(global)?
            .1
            .protocol
            .filter(|p| p.eq_ignore_ascii_case("graph"))
            .unwrap_or_else(|| "imap".into())
            .to_ascii_lowercase(),
    };
    match protocol.as_str() {
        "imap" => {}
        "graph" => {
            let result = graph_folders(args, global).await;
            if let Err(err) = &result
                && global.json
            {
                println!("{}", crate::exit::error_json(err));
            }
            return result;
        }
        other => {
            return Err(usage(format!(
                "--protocol {other:?}: folders are listed over imap or graph"
            )));
        }
    }
    let result = async {
        let (mut imap, mailbox) = imap_session(
            global,
            &args.profile,
            &args.auth,
            [args.imap.as_deref(), args.imap_tls.as_deref()],
            args.mailbox.as_deref(),
        )
        .await?;
        let list = imap.folders(true).await?;
        let _ = imap.logout().await;
        anyhow::Ok((mailbox, list))
    }
    .await;
    let (mailbox, list) = match result {
        Ok(found) => found,
        Err(err) => {
            if global.json {
                println!("{}", crate::exit::error_json(&err));
            }
            return Err(err);
        }
    };
    if global.json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = list
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    println!(
        "{:width$}  {:>8}  {:>6}  ATTRIBUTES",
        "FOLDER", "MESSAGES", "UNSEEN"
    );
    let count = |n: Option<u32>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    for folder in &list {
        println!(
            "{:width$}  {:>8}  {:>6}  {}",
            folder.name,
            count(folder.messages),
            count(folder.unseen),
            folder.attributes.join(" ")
        );
    }
    eprintln!("{} folders in {mailbox}", list.len());
    Ok(ExitCode::SUCCESS)
}

/// `m365mail checkpoint`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CheckpointCommand {
    /// List every source (protocol, server, account, folder) with its counts.
    List(StateArgs),
    /// Forget sources: their messages will be read again.
    Reset(ResetArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct StateArgs {
    /// The checkpoint store (default as for `read`: the profile's `state`, else the user data dir's).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ResetArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Only this account (mailbox).
    #[arg(long)]
    account: Option<String>,
    /// Only this server (host:port).
    #[arg(long)]
    server: Option<String>,
    /// Only this protocol (pop3).
    #[arg(long)]
    protocol: Option<String>,
    /// Every source.
    #[arg(long, conflicts_with_all = ["account", "server", "protocol"])]
    all: bool,
}

/// `--max-size`: a number of bytes with an optional K, M or G (1024-based, `B` optional).
pub(crate) fn parse_size(text: &str) -> anyhow::Result<u64> {
    let upper = text.trim().to_ascii_uppercase();
    let number = upper.trim_end_matches('B');
    let (digits, unit) = match number.chars().last() {
        Some('K') => (&number[..number.len() - 1], 1u64 << 10),
        Some('M') => (&number[..number.len() - 1], 1 << 20),
        Some('G') => (&number[..number.len() - 1], 1 << 30),
        _ => (number, 1),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| {
            usage(format!(
                "--max-size {text:?}: expected a size such as 50MB, 512K or 1048576"
            ))
        })
}

/// `--since` / `--before`: `YYYY-MM-DD` (midnight UTC) or RFC 3339 (`2026-12-07T06:00:00+01:00`).
pub(crate) fn parse_date(flag: &str, text: &str) -> anyhow::Result<i64> {
    let bad = || {
        usage(format!(
            "{flag} {text:?}: expected YYYY-MM-DD or an RFC 3339 time such as 2026-12-07T06:00:00Z"
        ))
    };
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let (date, time) = match text.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts[..] else {
        return Err(bad());
    };
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return Err(bad());
    }
    // Days from civil (proleptic Gregorian).
    let y_adj = if m <= 2 { y - 1 } else { y };
    let era = y_adj.div_euclid(400);
    let yoe = y_adj - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut secs = days * 86_400;
    if let Some(time) = time {
        let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
            Some(at) => time.split_at(at),
            None => return Err(bad()),
        };
        let hms: Vec<&str> = clock.split(':').collect();
        let [h, mi, s] = hms[..] else {
            return Err(bad());
        };
        let s = s.split('.').next().unwrap_or("0");
        secs += num(h)? * 3600 + num(mi)? * 60 + num(s)?;
        if !offset.eq_ignore_ascii_case("z") {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (oh, om) = offset[1..].split_once(':').ok_or_else(bad)?;
            secs -= sign * (num(oh)? * 3600 + num(om)? * 60);
        }
    }
    Ok(secs)
}

fn state_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    given
        .or_else(CheckpointStore::default_path)
        .ok_or_else(|| usage("no user data directory here: pass --state FILE"))
}

/// Runs `read`.
pub(crate) async fn run(args: ReadArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let result = match args.watch {
        Some(seconds) => watch(&args, global, std::time::Duration::from_secs(seconds)).await,
        None => read(&args, global).await,
    };
    if let Err(err) = &result
        && global.json
    {
        println!("{}", crate::exit::error_json(err));
    }
    result
}

/// `read --watch`: passes every `interval` until Ctrl-C or SIGTERM, which ends the run after the pass under
/// way (the signal is taken from the start, so it never cuts a pass short).
async fn watch(
    args: &ReadArgs,
    global: &GlobalArgs,
    interval: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    if args.from_now {
        return Err(usage(
            "--from-now with --watch would mark every new message as seen, pass after pass: run --from-now once, \
             then --watch",
        ));
    }
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::bridge::wait_for_stop().await;
        let _ = stop_tx.send(true);
    });
    loop {
        // IMAP: a second session opens the folder before the pass, so that mail arriving during the pass or
        // after it is reported when that session then waits in IDLE: the next pass starts at once.
        let waiter = match imap_waiter(args, global).await {
            Ok(waiter) => waiter,
            Err(error) => {
                tracing::debug!(error = %format!("{error:#}"), "no IDLE between passes; polling");
                None
            }
        };
        match read(args, global).await {
            Ok(_) => {}
            Err(err)
                if crate::exit::classified(&err)
                    .is_some_and(|c| c.class() == m365mail::ErrorClass::Transient) =>
            {
                // The next pass starts from the checkpoint: nothing is lost by waiting for it.
                tracing::warn!(error = %format!("{err:#}"), "read pass failed; trying again at the next pass");
                if global.json {
                    println!("{}", crate::exit::error_json(&err));
                }
            }
            Err(err) => return Err(err),
        }
        if *stop_rx.borrow() {
            return Ok(ExitCode::SUCCESS);
        }
        let started = std::time::Instant::now();
        let idled = match waiter {
            // Servers end an IDLE after about 30 minutes: a longer interval is waited in parts.
            Some(imap) => tokio::select! {
                waited = imap.idle_until_change(interval.min(IDLE_AT_MOST)) => waited.is_ok(),
                _ = stop_rx.changed() => return Ok(ExitCode::SUCCESS),
            },
            None => false,
        };
        if !idled {
            tokio::select! {
                () = tokio::time::sleep(interval.saturating_sub(started.elapsed())) => {}
                _ = stop_rx.changed() => return Ok(ExitCode::SUCCESS),
            }
        }
    }
}

/// The longest single IDLE between `--watch` passes (Exchange and others end one at about 30 minutes).
const IDLE_AT_MOST: std::time::Duration = std::time::Duration::from_secs(25 * 60);

/// For `--watch` over IMAP: a signed-in session with the folder selected (read-only), to wait in IDLE after
/// the pass; `None` for the other protocols.
async fn imap_waiter(
    args: &ReadArgs,
    global: &GlobalArgs,
) -> anyhow::Result<Option<ImapConnection>> {
    let (_, profile) = load_profile(global)?;
    let protocol = args
        .protocol
        .clone()
        .or(profile.protocol.clone())
        .unwrap_or_else(|| "imap".to_owned());
    if !protocol.eq_ignore_ascii_case("imap") {
        return Ok(None);
    }
    let (mut imap, _) = imap_session(
        global,
        &args.profile,
        &args.auth,
        [args.imap.as_deref(), args.imap_tls.as_deref()],
        args.mailbox.as_deref(),
    )
    .await?;
    imap.select(args.folder.as_deref().unwrap_or("INBOX"), true)
        .await?;
    Ok(Some(imap))
}

/// A signed-in IMAP session for `folders` and `--watch`: the profile's IMAP scope and endpoint (`imap` is
/// `--imap` and `--imap-tls`), the mailbox as `read` chooses it. The session and the mailbox.
async fn imap_session(
    global: &GlobalArgs,
    profile: &ProfileArgs,
    auth: &AuthArgs,
    imap: [Option<&str>; 2],
    given_mailbox: Option<&str>,
) -> anyhow::Result<(ImapConnection, String)> {
    let session = session::build(global, profile, auth, ScopeChoice::Mail(Target::Imap))?;
    let endpoint = session::mail_endpoint(&session, Target::Imap, imap[0], imap[1])?;
    let token = session.provider.token().await?;
    let mailbox = mailbox(given_mailbox, &session, token.account.as_deref())?;
    let options = ImapOptions::new(endpoint, session.trust.clone());
    let connection = ImapConnection::connect(&options, &mailbox, &token.token).await?;
    Ok((connection, mailbox))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Imap,
    Pop,
    Graph,
}

async fn read(args: &ReadArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let (_, profile) = load_profile(global)?;
    let protocol = args
        .protocol
        .clone()
        .or(profile.protocol.clone())
        .unwrap_or_else(|| "imap".to_owned());
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "imap" => Protocol::Imap,
        "pop" | "pop3" => Protocol::Pop,
        "graph" => Protocol::Graph,
        other => {
            return Err(usage(format!(
                "--protocol {other:?}: expected imap, pop (pop3) or graph"
            )));
        }
    };
    check_flags(args, protocol)?;
    let since = args
        .since
        .as_deref()
        .map(|d| parse_date("--since", d))
        .transpose()?;
    let before = args
        .before
        .as_deref()
        .map(|d| parse_date("--before", d))
        .transpose()?;
    let order = match args.order {
        OrderArg::Oldest => Order::Oldest,
        OrderArg::Newest => Order::Newest,
    };
    let max_size = parse_size(&args.max_size)?;
    let state = state_path(args.state.clone().or(profile.state.clone()))?;
    let target = match protocol {
        Protocol::Imap => Target::Imap,
        Protocol::Pop => Target::Pop,
        Protocol::Graph => Target::Graph,
    };
    let choice = match (protocol, args.then) {
        // Least privilege: reading alone needs Mail.Read; an action after it, Mail.ReadWrite.
        (Protocol::Graph, ThenArg::None) => ScopeChoice::Graph(&["Mail.Read"]),
        (Protocol::Graph, _) => ScopeChoice::Graph(&["Mail.ReadWrite"]),
        _ => ScopeChoice::Mail(target),
    };
    let session = session::build(global, &args.profile, &args.auth, choice)?;
    if protocol == Protocol::Graph {
        let state = state_path(args.state.clone().or(profile.state.clone()))?;
        return read_graph_command(args, global, &session, since, before, max_size, &state).await;
    }
    let endpoint = match protocol {
        Protocol::Imap => session::mail_endpoint(
            &session,
            Target::Imap,
            args.imap.as_deref(),
            args.imap_tls.as_deref(),
        )?,
        Protocol::Pop => session::mail_endpoint(
            &session,
            Target::Pop,
            args.pop.as_deref(),
            args.pop_tls.as_deref(),
        )?,
        Protocol::Graph => unreachable!("read over Graph above"),
    };
    let token = session.provider.token().await?;
    let mailbox = mailbox(args.mailbox.as_deref(), &session, token.account.as_deref())?;
    let mut store = CheckpointStore::open(&state)?;
    // Host names are case-insensitive: one source however the host is typed.
    let source = SourceKey {
        protocol: match protocol {
            Protocol::Imap => "imap".into(),
            _ => "pop3".into(),
        },
        server: endpoint.address.to_string().to_ascii_lowercase(),
        account: mailbox.to_ascii_lowercase(),
        folder: args.folder.clone().unwrap_or_else(|| "INBOX".into()),
    };
    let _one_reader = store.lock_source(&source)?;
    let mut sink = sink(args)?;
    let started = Instant::now();
    let bar = std::io::stderr().is_terminal().then(progress_bar);
    let mut on_progress = progress_handler(bar.as_ref());
    let summary = match protocol {
        Protocol::Graph => unreachable!("read over Graph above"),
        Protocol::Pop => {
            let options = ReadOptions {
                limit: args.limit,
                order,
                filter: Filter {
                    since,
                    before,
                    from: args.from_filter.clone(),
                    subject: args.subject.clone(),
                },
                max_size,
                then: match args.then {
                    ThenArg::Delete => After::Delete,
                    _ => After::None,
                },
                from_now: args.from_now,
            };
            let mut pop_options = Pop3Options::new(endpoint, session.trust.clone());
            // Leave room above --max-size: LIST sizes are the server's estimate.
            pop_options.limits.max_message =
                options.max_size.saturating_mul(2).saturating_add(1 << 20);
            let mut pop = Pop3Connection::connect(&pop_options).await?;
            pop.authenticate(&mailbox, &token.token).await?;
            read_pop(
                pop,
                &source,
                &mut store,
                sink.as_mut(),
                &options,
                &SystemClock,
                &mut on_progress,
            )
            .await?
        }
        Protocol::Imap => {
            const DAY: i64 = 86_400;
            let options = ImapReadOptions {
                folder: source.folder.clone(),
                limit: args.limit,
                order,
                // SINCE and BEFORE compare days in each message's own time zone: the server is asked a day
                // wider on each side, and the exact instants are checked here against INTERNALDATE.
                search: SearchQuery {
                    unseen: args.unseen,
                    since: since.map(|s| s - DAY),
                    before: before.map(|b| b + DAY),
                    from: args.from_filter.clone(),
                    to: args.to_filter.clone(),
                    subject: args.subject.clone(),
                    larger_than: args.larger_than.as_deref().map(parse_size).transpose()?,
                },
                since,
                before,
                has_attachment: args.has_attachment,
                max_size,
                then: match args.then {
                    ThenArg::None => ImapAction::None,
                    ThenArg::MarkRead => ImapAction::MarkRead,
                    ThenArg::Flag => ImapAction::Flag,
                    ThenArg::Move => ImapAction::Move(args.to_folder.clone().unwrap_or_default()),
                    ThenArg::Copy => ImapAction::Copy(args.to_folder.clone().unwrap_or_default()),
                    ThenArg::Trash => ImapAction::Trash,
                    ThenArg::Delete => ImapAction::Delete,
                },
                prefer_move: !args.no_move,
                from_now: args.from_now,
            };
            // Validated before anything is read: a bad filter is a usage error, not a failure mid-run.
            options.search.to_arguments()?;
            let provider = &session.provider;
            let mut connector = Xoauth2Connector {
                options: ImapOptions::new(endpoint, session.trust.clone()),
                user: mailbox.clone(),
                tokens: |renew: bool| async move {
                    let token = if renew {
                        provider.force_renew().await?
                    } else {
                        provider.token().await?
                    };
                    Ok(token.token)
                },
            };
            read_imap(
                &mut connector,
                &source,
                &mut store,
                sink.as_mut(),
                &options,
                &SystemClock,
                &mut on_progress,
            )
            .await?
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    report(&summary, started, &mailbox, &source, &state, global);
    Ok(ExitCode::SUCCESS)
}

/// Flags that belong to the other protocol, or that need each other, are usage errors.
fn check_flags(args: &ReadArgs, protocol: Protocol) -> anyhow::Result<()> {
    match protocol {
        Protocol::Pop => {
            let imap_only = [
                (args.imap.is_some(), "--imap"),
                (args.imap_tls.is_some(), "--imap-tls"),
                (args.folder.is_some(), "--folder"),
                (args.to_filter.is_some(), "--to"),
                (args.unseen, "--unseen"),
                (args.larger_than.is_some(), "--larger-than"),
                (args.has_attachment, "--has-attachment"),
                (args.to_folder.is_some(), "--to-folder"),
                (
                    !matches!(args.then, ThenArg::None | ThenArg::Delete),
                    "--then other than none or delete",
                ),
            ];
            if let Some((_, flag)) = imap_only.iter().find(|(used, _)| *used) {
                return Err(usage(format!(
                    "{flag} is for IMAP; POP3 reads the Inbox and can only delete (use --protocol imap)"
                )));
            }
        }
        Protocol::Imap | Protocol::Graph => {
            if args.pop.is_some() || args.pop_tls.is_some() {
                return Err(usage("--pop and --pop-tls are for --protocol pop"));
            }
            if protocol == Protocol::Graph {
                let imap_only = [
                    (args.imap.is_some(), "--imap"),
                    (args.imap_tls.is_some(), "--imap-tls"),
                    (args.no_move, "--no-move"),
                    (
                        matches!(args.order, OrderArg::Newest),
                        "--order newest (Graph's delta lists in its own order)",
                    ),
                ];
                if let Some((_, flag)) = imap_only.iter().find(|(used, _)| *used) {
                    return Err(usage(format!("{flag} is not for --protocol graph")));
                }
            }
            let needs_folder = matches!(args.then, ThenArg::Move | ThenArg::Copy);
            match (&args.to_folder, needs_folder) {
                (None, true) => {
                    return Err(usage(
                        "--then move and --then copy need --to-folder NAME (e.g. Archive)",
                    ));
                }
                (Some(_), false) => {
                    return Err(usage("--to-folder goes with --then move or --then copy"));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// `read --protocol graph`: the folder's new messages through Graph's delta query.
#[allow(clippy::too_many_arguments)] // read's parsed flags, handed over once
async fn read_graph_command(
    args: &ReadArgs,
    global: &GlobalArgs,
    session: &session::Session,
    since: Option<i64>,
    before: Option<i64>,
    max_size: u64,
    state: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let client = session::graph_client(session)?;
    let token = session.provider.token().await?;
    let mailbox = mailbox(args.mailbox.as_deref(), session, token.account.as_deref())?;
    let folder_name = args.folder.clone().unwrap_or_else(|| "inbox".into());
    // Names become ids before anything is read: a record whose action cannot run would leave it owed forever.
    let folder = client
        .resolve_folder(&token.token, &mailbox, &folder_name)
        .await?;
    let destination = match &args.to_folder {
        Some(name) => Some(client.resolve_folder(&token.token, &mailbox, name).await?),
        None => None,
    };
    let options = GraphReadOptions {
        folder,
        limit: args.limit,
        since,
        before,
        unseen: args.unseen,
        has_attachment: args.has_attachment,
        from: args.from_filter.clone(),
        to: args.to_filter.clone(),
        subject: args.subject.clone(),
        larger_than: args.larger_than.as_deref().map(parse_size).transpose()?,
        max_size,
        then: match args.then {
            ThenArg::None => GraphAction::None,
            ThenArg::MarkRead => GraphAction::MarkRead,
            ThenArg::Flag => GraphAction::Flag,
            ThenArg::Move => GraphAction::Move(destination.clone().unwrap_or_default()),
            ThenArg::Copy => GraphAction::Copy(destination.clone().unwrap_or_default()),
            ThenArg::Trash => GraphAction::Move("deleteditems".into()),
            ThenArg::Delete => GraphAction::Delete,
        },
        from_now: args.from_now,
    };
    let mut store = CheckpointStore::open(state)?;
    let base = client.base();
    let source = SourceKey {
        protocol: "graph".into(),
        server: format!(
            "{}:{}",
            base.host_str().unwrap_or_default(),
            base.port_or_known_default().unwrap_or(443)
        )
        .to_ascii_lowercase(),
        account: mailbox.to_ascii_lowercase(),
        // The folder's id, not its name as typed: `inbox`, `Inbox` and the id are one source (one cursor,
        // one seen-set), so no spelling reads the folder again.
        folder: options.folder.clone(),
    };
    let _one_reader = store.lock_source(&source)?;
    let mut sink = sink(args)?;
    let started = Instant::now();
    let bar = std::io::stderr().is_terminal().then(progress_bar);
    let mut on_progress = progress_handler(bar.as_ref());
    let provider = &session.provider;
    let mut tokens = |renew: bool| async move {
        let token = if renew {
            provider.force_renew().await?
        } else {
            provider.token().await?
        };
        Ok(token.token)
    };
    let summary = read_graph(
        &client,
        &mut tokens,
        &mailbox,
        &source,
        &mut store,
        sink.as_mut(),
        &options,
        &SystemClock,
        &mut on_progress,
    )
    .await?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    // The summary names the folder as the user did (the source holds its id).
    let named = SourceKey {
        folder: folder_name,
        ..source
    };
    report(&summary, started, &mailbox, &named, state, global);
    Ok(ExitCode::SUCCESS)
}

/// The mailbox to read: --mailbox, the profile's, else (delegated) the signed-in user.
fn mailbox(
    given: Option<&str>,
    session: &session::Session,
    token_account: Option<&str>,
) -> anyhow::Result<String> {
    session::default_mailbox(given, session, token_account).ok_or_else(|| {
        usage("which mailbox? an app-only token reads the mailbox named by --mailbox (or the profile's `mailbox`)")
    })
}

/// Standard output (synced after each record when it is a file: the checkpoint and an action follow), and
/// with --out-dir the directory too.
fn sink(args: &ReadArgs) -> anyhow::Result<Box<dyn Sink>> {
    let stdout = match stdout_file() {
        Some(file) => LineSink::synced(std::io::stdout(), file),
        None => LineSink::new(std::io::stdout()),
    };
    Ok(match &args.out_dir {
        Some(dir) => Box::new(Tee(vec![
            Box::new(DirSink::new(dir, args.eml)?),
            Box::new(stdout),
        ])),
        None => Box::new(stdout),
    })
}

/// What the readers report, shown on `bar` (none when stderr is not a terminal).
fn progress_handler(bar: Option<&indicatif::ProgressBar>) -> impl FnMut(Progress) + '_ {
    let mut bytes = 0u64;
    move |event| {
        if let Some(bar) = bar {
            match event {
                Progress::Start { new } => bar.set_length(new),
                Progress::Message { bytes: b } => {
                    bytes += b;
                    bar.inc(1);
                    bar.set_message(format!("{bytes}"));
                }
            }
        }
    }
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} messages {bytes} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The one-line summary (or its JSON) on stderr.
fn report(
    summary: &ReadSummary,
    started: Instant,
    mailbox: &str,
    source: &SourceKey,
    state: &std::path::Path,
    global: &GlobalArgs,
) {
    let seconds = started.elapsed().as_secs_f64();
    if global.json {
        eprintln!(
            "{}",
            json!({ "summary": summary, "seconds": seconds, "mailbox": mailbox, "server": source.server,
                    "folder": source.folder, "state": state })
        );
        return;
    }
    let mut line = format!(
        "read {} new of {} messages ({} bytes) from {mailbox}{} in {seconds:.2} s",
        summary.records,
        summary.listed,
        summary.bytes,
        if source.protocol != "pop3" {
            format!(" {}", source.folder)
        } else {
            String::new()
        }
    );
    for (n, what) in [
        (summary.skipped, "skipped as too large"),
        (summary.unreadable, "unreadable (kept raw)"),
        (summary.filtered_out, "filtered out"),
        (summary.deleted, "deleted"),
        (summary.moved, "moved"),
        (summary.copied, "copied"),
        (summary.marked_read, "marked read"),
        (summary.flagged, "flagged"),
        (summary.owed_actions, "owed actions done"),
        (
            summary.already_delivered,
            "already delivered before a UIDVALIDITY change",
        ),
        (summary.reconnects, "sessions reopened"),
        (
            summary.refused,
            "refused by the server (recorded, left there)",
        ),
        (summary.marked, "marked seen (--from-now)"),
    ] {
        if n > 0 {
            line.push_str(&format!("; {n} {what}"));
        }
    }
    eprintln!("{line}");
}

/// Standard output as a file, when it is a regular file (not a terminal or a pipe).
fn stdout_file() -> Option<std::fs::File> {
    use std::os::fd::AsFd as _;
    let file = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned().ok()?);
    file.metadata().ok()?.is_file().then_some(file)
}

/// Runs `checkpoint list | reset`.
pub(crate) fn checkpoint(
    command: CheckpointCommand,
    global: &GlobalArgs,
) -> anyhow::Result<ExitCode> {
    // The same store `read` uses: --state, else the profile's `state`, else the user data dir's.
    let (_, profile) = load_profile(global)?;
    match command {
        CheckpointCommand::List(args) => {
            let path = state_path(args.state.or(profile.state))?;
            if !path.exists() {
                if global.json {
                    println!("{}", json!({ "state": path, "sources": [] }));
                } else {
                    println!("no checkpoints yet ({} does not exist)", path.display());
                }
                return Ok(ExitCode::SUCCESS);
            }
            let sources = CheckpointStore::open(&path)?.list()?;
            if global.json {
                println!("{}", json!({ "state": path, "sources": sources }));
            } else {
                println!("{}", path.display());
                for s in &sources {
                    println!(
                        "  {}://{}@{}/{}  seen {}  pending {}  skipped {}  updated {}",
                        s.key.protocol,
                        s.key.account,
                        s.key.server,
                        s.key.folder,
                        s.seen,
                        s.pending,
                        s.skipped,
                        rfc3339(s.updated.max(0) as u64)
                    );
                }
                if sources.is_empty() {
                    println!("  (no sources)");
                }
            }
        }
        CheckpointCommand::Reset(args) => {
            if !args.all
                && args.account.is_none()
                && args.server.is_none()
                && args.protocol.is_none()
            {
                return Err(usage(
                    "checkpoint reset needs --account, --server, --protocol (any combination) or --all",
                ));
            }
            let path = state_path(args.state.state.or(profile.state))?;
            let mut store = CheckpointStore::open(&path)?;
            let protocol = args
                .protocol
                .map(|p| match p.to_ascii_lowercase().as_str() {
                    "pop" => "pop3".to_string(),
                    other => other.to_string(),
                });
            let forgotten = store.reset(|key| {
                args.account
                    .as_ref()
                    .is_none_or(|a| a.eq_ignore_ascii_case(&key.account))
                    && args.server.as_ref().is_none_or(|s| *s == key.server)
                    && protocol.as_ref().is_none_or(|p| *p == key.protocol)
            })?;
            if global.json {
                println!(
                    "{}",
                    json!({ "ok": true, "forgotten": forgotten, "state": path })
                );
            } else {
                println!(
                    "forgot {forgotten} message checkpoint(s) in {}",
                    path.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50MB").unwrap(), 50 << 20);
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("--since", "1970-01-01").unwrap(), 0);
        assert_eq!(parse_date("--since", "2026-12-07").unwrap(), 1_796_601_600);
        assert_eq!(
            parse_date("--since", "2026-12-07T06:00:01+01:00").unwrap(),
            1_796_619_601
        );
        assert_eq!(
            parse_date("--since", "2026-12-07T05:00:01Z").unwrap(),
            1_796_619_601
        );
        assert_eq!(parse_date("--since", "2024-02-29").unwrap(), 1_709_164_800);
        for bad in ["yesterday", "2026-13-01", "2026-12-07T05:00", "07.12.2026"] {
            assert!(parse_date("--since", bad).is_err(), "{bad}");
        }
    }
}
