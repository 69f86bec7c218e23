//! `m365mail send`: messages from flags, or from JSON in the schema `read` emits (`--input FILE|-`, one
//! message or NDJSON), built by [`m365mail::mime::build`] and submitted over SMTP with XOAUTH2
//! ([`m365mail::smtp`]). One JSON line per message on stdout (`status` sent or failed, with the error's
//! cause and remedy); a summary on stderr; one bad message does not stop a batch. The exit code is 0 when
//! every message was sent, else the class of the first failure.

use std::io::{BufRead as _, Read as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use m365mail::Classified;
use m365mail::auth::Target;
use m365mail::mime::{self, BuiltMessage, Mailbox, Outgoing, OutgoingPart};
use m365mail::smtp::{SmtpOptions, SmtpSender, Submit as _};
use m365mail::time::{Clock as _, SystemClock};
use serde::Deserialize;
use serde_json::json;

use crate::GlobalArgs;
use crate::config::usage;
use crate::session::{self, AuthArgs, ProfileArgs, ScopeChoice, load_profile};

/// A token this close to expiry is renewed (and the connection signed in again) before the next message.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// `m365mail send`.
#[derive(Debug, clap::Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// From address. Default: the profile's `mailbox`, else the signed-in user.
    #[arg(long, value_name = "ADDRESS")]
    from: Option<String>,
    /// Recipient (repeatable, or comma-separated).
    #[arg(long, value_name = "ADDRESS", value_delimiter = ',')]
    to: Vec<String>,
    /// Copy recipient (repeatable, or comma-separated).
    #[arg(long, value_name = "ADDRESS", value_delimiter = ',')]
    cc: Vec<String>,
    /// Blind copy recipient: in the envelope only (repeatable, or comma-separated).
    #[arg(long, value_name = "ADDRESS", value_delimiter = ',')]
    bcc: Vec<String>,
    /// Reply-To address (repeatable).
    #[arg(long, value_name = "ADDRESS", value_delimiter = ',')]
    reply_to: Vec<String>,
    /// Subject (non-ASCII is RFC 2047-encoded).
    #[arg(long)]
    subject: Option<String>,
    /// Plain-text body.
    #[arg(long, conflicts_with = "text_file")]
    text: Option<String>,
    /// Plain-text body from a file (UTF-8).
    #[arg(long, value_name = "FILE")]
    text_file: Option<PathBuf>,
    /// HTML body.
    #[arg(long, conflicts_with = "html_file")]
    html: Option<String>,
    /// HTML body from a file (UTF-8).
    #[arg(long, value_name = "FILE")]
    html_file: Option<PathBuf>,
    /// Attach a file (repeatable); its content type comes from the extension.
    #[arg(long, value_name = "FILE")]
    attach: Vec<PathBuf>,
    /// An inline part (an image the HTML shows as cid:<file name>) (repeatable).
    #[arg(long, value_name = "FILE")]
    inline: Vec<PathBuf>,
    /// A further header, "Name: value" (repeatable).
    #[arg(long, value_name = "NAME: VALUE")]
    header: Vec<String>,
    /// Answer this message: sets In-Reply-To and References (the Message-ID, brackets optional).
    #[arg(long, value_name = "MESSAGE-ID")]
    in_reply_to: Option<String>,
    /// Messages as JSON (the schema `read` emits; one object, or one per line), from a file or - for stdin.
    #[arg(long, value_name = "FILE|-", conflicts_with_all = [
        "to", "cc", "bcc", "reply_to", "subject", "text", "text_file", "html", "html_file", "attach", "inline",
        "header", "in_reply_to",
    ])]
    input: Option<String>,
    /// Relative attachment paths in --input are resolved against this directory (the --out-dir of the `read`
    /// that wrote the records). Default: the --input file's directory, or the current one for stdin.
    #[arg(long, value_name = "DIR", requires = "input")]
    files_dir: Option<PathBuf>,
    /// Print each message's MIME instead of sending it (nothing is signed in or sent).
    #[arg(long)]
    dry_run: bool,
    /// How to send: smtp, graph (Microsoft Graph: sendMail with a JSON message; attachments of 3 MB and more
    /// through a draft and upload sessions), or auto (SMTP, and Graph when SMTP AUTH is off: 535 5.7.139).
    /// Default: the profile's `via`, else smtp.
    #[arg(long, value_name = "VIA")]
    via: Option<String>,
    /// Graph: send the message's MIME (the bytes SMTP would send; at most 3 MB) instead of JSON.
    #[arg(long)]
    graph_mime: bool,
    /// Graph: keep a copy in Sent Items (default true; the MIME form and drafts always keep one).
    #[arg(long, value_name = "BOOL")]
    save_to_sent_items: Option<bool>,
    /// The mailbox to sign in as (XOAUTH2 user=). Default: the profile's `mailbox`, else the signed-in user;
    /// app-only: --from.
    #[arg(long)]
    mailbox: Option<String>,
    /// The SMTP server as host:port (default: the profile's `smtp`, else the cloud's, smtp.office365.com:587).
    #[arg(long, value_name = "HOST:PORT")]
    smtp: Option<String>,
    /// starttls (587) or implicit (465). Default: the profile's `smtp_tls`, else starttls.
    #[arg(long, value_name = "MODE")]
    smtp_tls: Option<String>,
    /// Messages per minute at most (Exchange Online takes 30 per mailbox).
    #[arg(long, default_value_t = 30, value_name = "N")]
    rate: u32,
    /// Send as fast as the server answers (the sandbox, tests).
    #[arg(long, conflicts_with = "rate")]
    no_pacing: bool,
}

/// A mailbox in input JSON: `{"name": …, "address": …}` as `read` writes it, or a plain address string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InputMailbox {
    Address(String),
    Full {
        name: Option<String>,
        address: Option<String>,
    },
}

impl From<InputMailbox> for Mailbox {
    fn from(m: InputMailbox) -> Self {
        match m {
            InputMailbox::Address(address) => Mailbox {
                name: None,
                address: Some(address),
            },
            InputMailbox::Full { name, address } => Mailbox { name, address },
        }
    }
}

/// An attachment in input JSON: a file (`path`, as `read --out-dir` writes it) or inline bytes
/// (`data_base64`).
#[derive(Debug, Deserialize)]
struct InputAttachment {
    name: Option<String>,
    content_type: Option<String>,
    #[serde(default)]
    inline: bool,
    content_id: Option<String>,
    path: Option<PathBuf>,
    data_base64: Option<String>,
}

/// One message of `--input`. Fields `read` writes that make no sense to send (uid, size, source…) are
/// ignored; `from` may be a list, as in a record.
#[derive(Debug, Deserialize)]
struct InputMessage {
    id: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "one_or_many")]
    from: Vec<InputMailbox>,
    #[serde(default)]
    to: Vec<InputMailbox>,
    #[serde(default)]
    cc: Vec<InputMailbox>,
    #[serde(default)]
    bcc: Vec<InputMailbox>,
    #[serde(default)]
    reply_to: Vec<InputMailbox>,
    subject: Option<String>,
    text: Option<String>,
    html: Option<String>,
    #[serde(default)]
    attachments: Vec<InputAttachment>,
    /// `[name, value]` pairs, as in a record.
    #[serde(default)]
    headers: Vec<[String; 2]>,
    in_reply_to: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<InputMailbox>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(InputMailbox),
        Many(Vec<InputMailbox>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(m)) => vec![m],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// A message to send, with the id its result line carries.
struct Pending {
    id: serde_json::Value,
    outgoing: Result<Outgoing, String>,
}

fn read_file(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| usage(format!("{flag} {}: {e}", path.display())))
}

fn read_text(flag: &str, path: &Path) -> anyhow::Result<String> {
    String::from_utf8(read_file(flag, path)?)
        .map_err(|_| usage(format!("{flag} {}: not UTF-8 text", path.display())))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "attachment".into())
}

fn mailboxes(addresses: &[String]) -> Vec<Mailbox> {
    addresses
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(|a| Mailbox {
            name: None,
            address: Some(a.to_owned()),
        })
        .collect()
}

fn strip_brackets(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// The message the flags describe.
fn from_flags(args: &SendArgs) -> anyhow::Result<Outgoing> {
    if args.to.is_empty() && args.cc.is_empty() && args.bcc.is_empty() {
        return Err(usage(
            "no recipient: pass --to (or --cc, --bcc), or messages with --input FILE",
        ));
    }
    let mut parts = Vec::new();
    for path in &args.attach {
        let name = file_name(path);
        parts.push(OutgoingPart {
            content_type: mime::content_type_for(&name).into(),
            data: read_file("--attach", path)?,
            content_id: None,
            name,
        });
    }
    for path in &args.inline {
        let name = file_name(path);
        parts.push(OutgoingPart {
            content_type: mime::content_type_for(&name).into(),
            data: read_file("--inline", path)?,
            content_id: Some(name.clone()),
            name,
        });
    }
    let mut headers = Vec::new();
    for header in &args.header {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| usage(format!("--header {header:?}: expected \"Name: value\"")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Outgoing {
        from: args.from.as_deref().map(|a| Mailbox {
            name: None,
            address: Some(a.to_owned()),
        }),
        to: mailboxes(&args.to),
        cc: mailboxes(&args.cc),
        bcc: mailboxes(&args.bcc),
        reply_to: mailboxes(&args.reply_to),
        subject: args.subject.clone(),
        text: match &args.text_file {
            Some(path) => Some(read_text("--text-file", path)?),
            None => args.text.clone(),
        },
        html: match &args.html_file {
            Some(path) => Some(read_text("--html-file", path)?),
            None => args.html.clone(),
        },
        parts,
        headers,
        in_reply_to: args.in_reply_to.as_deref().map(strip_brackets),
        references: Vec::new(),
        message_id: None,
    })
}

/// One `--input` message as an [`Outgoing`]; a problem with it (an unreadable attachment, bad base64) is
/// this message's failure, not the batch's.
fn from_input(message: InputMessage, base: &Path) -> Result<Outgoing, String> {
    use base64::Engine as _;
    let mut parts = Vec::new();
    for (n, a) in message.attachments.into_iter().enumerate() {
        let data = match (&a.path, &a.data_base64) {
            (_, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("attachments[{n}].data_base64: {e}"))?,
            (Some(path), None) => {
                let path = if path.is_relative() {
                    base.join(path)
                } else {
                    path.clone()
                };
                std::fs::read(&path)
                    .map_err(|e| format!("attachments[{n}].path {}: {e}", path.display()))?
            }
            (None, None) => {
                return Err(format!(
                    "attachments[{n}] has neither path nor data_base64 (records carry attachment paths when \
                     read with --out-dir)"
                ));
            }
        };
        let name = a
            .name
            .or_else(|| a.path.as_deref().map(file_name))
            .unwrap_or_else(|| format!("attachment-{}", n + 1));
        parts.push(OutgoingPart {
            content_type: a
                .content_type
                .unwrap_or_else(|| mime::content_type_for(&name).into()),
            data,
            content_id: if a.inline {
                Some(
                    a.content_id
                        .map_or_else(|| name.clone(), |c| strip_brackets(&c)),
                )
            } else {
                None
            },
            name,
        });
    }
    Ok(Outgoing {
        from: message.from.into_iter().next().map(Into::into),
        to: message.to.into_iter().map(Into::into).collect(),
        cc: message.cc.into_iter().map(Into::into).collect(),
        bcc: message.bcc.into_iter().map(Into::into).collect(),
        reply_to: message.reply_to.into_iter().map(Into::into).collect(),
        subject: message.subject,
        text: message.text,
        html: message.html,
        parts,
        // A record carries every header of the message it was read from: keep the ones a new message may.
        headers: message
            .headers
            .into_iter()
            .filter(|[name, _]| mime::is_resendable_header(name))
            .map(|[name, value]| (name, value))
            .collect(),
        in_reply_to: message.in_reply_to.as_deref().map(strip_brackets),
        references: Vec::new(),
        // A record's own Message-ID is never sent again: Exchange drops a second message with the same id as
        // a duplicate (after a 250), and threads would point at the wrong message. A new one is generated.
        message_id: None,
    })
}

/// The messages of `--input`: one JSON object, or one per line. A line that is not a message is that
/// message's failure.
fn read_input(source: &str, files_dir: Option<&Path>) -> anyhow::Result<Vec<Pending>> {
    let (text, base) = if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .read_to_string(&mut text)
            .context("reading --input from standard input")?;
        (text, PathBuf::from("."))
    } else {
        let path = Path::new(source);
        let text = read_text("--input", path)?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        (text, base)
    };
    let base = files_dir.map_or(base, Path::to_path_buf);
    // A single pretty-printed object is one message; otherwise one message per non-empty line.
    let documents: Vec<(usize, String)> =
        if serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v.is_object()) {
            vec![(1, text)]
        } else {
            text.as_bytes()
                .lines()
                .enumerate()
                .filter_map(|(n, line)| {
                    let line = line.ok()?;
                    (!line.trim().is_empty()).then_some((n + 1, line))
                })
                .collect()
        };
    if documents.is_empty() {
        return Err(usage(format!("--input {source}: no messages")));
    }
    Ok(documents
        .into_iter()
        .map(
            |(line, document)| match serde_json::from_str::<InputMessage>(&document) {
                Ok(message) => Pending {
                    id: message.id.clone().unwrap_or_else(|| json!(line)),
                    outgoing: from_input(message, &base),
                },
                Err(e) => Pending {
                    id: json!(line),
                    outgoing: Err(format!("line {line}: not a message: {e}")),
                },
            },
        )
        .collect())
}

/// Runs `send`.
pub(crate) async fn run(args: SendArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let result = send(args, global).await;
    if let Err(err) = &result
        && global.json
    {
        println!("{}", crate::exit::error_json(err));
    }
    result
}

/// `--via graph`: each message's MIME (the same builder as SMTP, Bcc as a header) through Graph's `sendMail`
/// as the mailbox; one result line per message, as for SMTP.
async fn send_graph(
    args: &SendArgs,
    global: &GlobalArgs,
    pending: Vec<Pending>,
    fallback_from: Option<&str>,
) -> anyhow::Result<ExitCode> {
    // A draft (attachments of 3 MB or more) needs Mail.ReadWrite besides Mail.Send.
    let drafts = !args.graph_mime
        && pending.iter().any(|p| {
            p.outgoing.as_ref().is_ok_and(|o| {
                o.parts
                    .iter()
                    .any(|part| part.data.len() >= m365mail::graph::mail::INLINE_ATTACHMENT_LIMIT)
            })
        });
    let scopes: &'static [&'static str] = if drafts {
        &["Mail.Send", "Mail.ReadWrite"]
    } else {
        &["Mail.Send"]
    };
    let session = session::build(
        global,
        &args.profile,
        &args.auth,
        ScopeChoice::Graph(scopes),
    )?;
    let client = session::graph_client(&session)?;
    let token = session.provider.token().await?;
    let mailbox = sending_mailbox(args, &session, token.account.as_deref())?;
    let started = Instant::now();
    let (mut sent, mut failed) = (0usize, 0usize);
    let mut first_failure: Option<u8> = None;
    let save = args.save_to_sent_items.unwrap_or(true);
    for p in pending {
        let prepared = p.outgoing.clone().and_then(|mut o| {
            fill_from(&mut o, Some(&mailbox))?;
            let message = mime::build(&o, now_secs()).map_err(|e| e.to_string())?;
            let bytes = mime::with_bcc_header(&o, &message);
            Ok((o, message.message_id, bytes))
        });
        let prepared = prepared.and_then(|(outgoing, message_id, bytes)| {
            graph_form(&outgoing, &message_id, bytes.len(), args.graph_mime, save)?;
            Ok((outgoing, message_id, bytes))
        });
        let (outgoing, message_id, bytes) = match prepared {
            Ok(prepared) => prepared,
            Err(text) => {
                if args.input.is_none() {
                    return Err(usage(text));
                }
                failed += 1;
                first_failure.get_or_insert(2);
                emit(&json!({ "id": p.id, "status": "failed", "via": "graph",
                              "error": { "class": "input", "message": text } }))?;
                continue;
            }
        };
        let form = graph_form(&outgoing, &message_id, bytes.len(), args.graph_mime, save)
            .expect("checked above");
        let outcome = match &form {
            GraphForm::Mime { .. } => client
                .send_mime(&token.token, &mailbox, &bytes)
                .await
                .map(|()| 0),
            GraphForm::Json(message) if message.large.is_empty() => client
                .send_json(&token.token, &mailbox, message.message.clone(), save)
                .await
                .map(|()| 0),
            GraphForm::Json(message) => {
                m365mail::outbound::send_draft(&client, &token.token, &mailbox, message).await
            }
        };
        let form_name = match &form {
            GraphForm::Mime { .. } => "mime",
            GraphForm::Json(message) if message.large.is_empty() => "json",
            GraphForm::Json(_) => "draft",
        };
        match outcome {
            Ok(uploads) => {
                sent += 1;
                let mut line = json!({ "id": p.id, "message_id": message_id, "status": "sent", "via": "graph",
                                       "graph_form": form_name });
                if uploads > 0 {
                    line["upload_requests"] = json!(uploads);
                }
                if let GraphForm::Mime {
                    reason: Some(reason),
                } = &form
                {
                    line["mime_because"] = json!(reason);
                }
                if let Some(reply) = fallback_from {
                    line["fallback_from"] = json!({ "via": "smtp", "reply": reply });
                }
                emit(&line)?;
            }
            Err(e) => {
                failed += 1;
                first_failure.get_or_insert(e.class().exit_code());
                emit(
                    &json!({ "id": p.id, "message_id": message_id, "status": "failed", "via": "graph",
                              "graph_form": form_name,
                              "error": { "class": e.class(), "message": e.to_string(),
                                         "cause": Classified::cause(&e), "remedy": e.remedy() } }),
                )?;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if global.json {
        eprintln!(
            "{}",
            json!({ "sent": sent, "failed": failed, "seconds": seconds, "mailbox": mailbox,
                    "via": "graph", "server": client.base().as_str() })
        );
    } else {
        eprintln!(
            "sent {sent} of {} messages as {mailbox} through Graph {} in {seconds:.2} s{}",
            sent + failed,
            client.base(),
            if failed > 0 {
                format!("; {failed} failed (see their lines)")
            } else {
                String::new()
            }
        );
    }
    Ok(first_failure.map_or(ExitCode::SUCCESS, ExitCode::from))
}

/// How a message goes through Graph.
enum GraphForm<'a> {
    /// `sendMail` with the MIME; `reason` says why, when the JSON form was asked for but cannot carry it.
    Mime { reason: Option<String> },
    /// `sendMail` with JSON, or (with large attachments) a draft, upload sessions and `send`.
    Json(m365mail::graph::mail::JsonMessage<'a>),
}

/// Chooses the form: JSON unless --graph-mime, or unless the message holds what JSON cannot carry (then
/// MIME, which takes 3 MB at most). Messages whose wishes cannot be met are refused here, before sending.
fn graph_form<'a>(
    outgoing: &'a Outgoing,
    message_id: &str,
    mime_size: usize,
    graph_mime: bool,
    save_to_sent_items: bool,
) -> Result<GraphForm<'a>, String> {
    let reason = if graph_mime {
        None
    } else {
        match m365mail::graph::mail::json_message(outgoing, message_id) {
            Ok(message) if message.large.is_empty() || save_to_sent_items => {
                return Ok(GraphForm::Json(message));
            }
            Ok(_) => {
                return Err(
                    "--save-to-sent-items false: a message with attachments of 3 MB or more \
                            goes as a draft, and a sent draft is always saved to Sent Items"
                        .into(),
                );
            }
            Err(reason) => Some(reason),
        }
    };
    if !save_to_sent_items {
        return Err(format!(
            "--save-to-sent-items false needs the JSON form{}; the MIME form always saves to Sent Items",
            reason
                .as_deref()
                .map(|r| format!(", which cannot carry {r}"))
                .unwrap_or_default()
        ));
    }
    if mime_size > m365mail::graph::MAX_INLINE_MIME {
        return Err(format!(
            "a {mime_size}-byte message needs the MIME form{}, which takes {} bytes at most: send it \
             over SMTP",
            reason
                .as_deref()
                .map(|r| format!(" (for {r})"))
                .unwrap_or_default(),
            m365mail::graph::MAX_INLINE_MIME
        ));
    }
    Ok(GraphForm::Mime { reason })
}

/// The mailbox to send as: --mailbox, the profile's, the signed-in user; app-only has no user, so it signs in as
/// the mailbox it sends from (--from).
fn sending_mailbox(
    args: &SendArgs,
    session: &session::Session,
    token_account: Option<&str>,
) -> anyhow::Result<String> {
    session::default_mailbox(args.mailbox.as_deref(), session, token_account)
        .or(args.from.clone())
        .ok_or_else(|| {
            usage("which mailbox? an app-only token sends as --from or --mailbox (or the profile's `mailbox`)")
        })
}

fn now_secs() -> i64 {
    SystemClock.unix_now() as i64
}

async fn send(args: SendArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let via = match &args.via {
        Some(via) => via.clone(),
        None => load_profile(global)?
            .1
            .via
            .unwrap_or_else(|| "smtp".to_owned()),
    };
    let (via_graph, auto) = match via.to_ascii_lowercase().as_str() {
        "smtp" => (false, false),
        "graph" => (true, false),
        "auto" => (false, true),
        other => {
            return Err(usage(format!(
                "--via {other:?}: expected smtp, graph or auto"
            )));
        }
    };
    if args.rate == 0 {
        return Err(usage("--rate 0: give a positive number, or --no-pacing"));
    }
    let mut pending = match &args.input {
        Some(source) => read_input(source, args.files_dir.as_deref())?,
        None => vec![Pending {
            id: json!(1),
            outgoing: Ok(from_flags(&args)?),
        }],
    };

    if args.dry_run {
        let (_, profile) = load_profile(global)?;
        let default_from = args
            .from
            .clone()
            .or(profile.mailbox.clone())
            .or(args.profile.username.clone())
            .or(profile.username.clone());
        for p in &mut pending {
            let built = p.outgoing.clone().and_then(|mut o| {
                fill_from(&mut o, default_from.as_deref())?;
                mime::build(&o, now_secs()).map_err(|e| format!("{e}"))
            });
            match built {
                Ok(message) => {
                    println!("{}", String::from_utf8_lossy(&message.bytes));
                }
                Err(e) => {
                    return Err(usage(format!("message {}: {e}", p.id)));
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    if via_graph {
        return send_graph(&args, global, pending, None).await;
    }
    let session = session::build(
        global,
        &args.profile,
        &args.auth,
        ScopeChoice::Mail(Target::Smtp),
    )?;
    let endpoint = session::mail_endpoint(
        &session,
        Target::Smtp,
        args.smtp.as_deref(),
        args.smtp_tls.as_deref(),
    )?;
    let mut token = session.provider.token().await?;
    let mailbox = sending_mailbox(&args, &session, token.account.as_deref())?;
    // A message from flags that cannot be built is the command's error (exit 2), before any connection.
    if args.input.is_none()
        && let Some(Ok(outgoing)) = pending.first().map(|p| &p.outgoing)
    {
        let mut outgoing = outgoing.clone();
        fill_from(&mut outgoing, Some(&mailbox)).map_err(usage)?;
        mime::build(&outgoing, now_secs())?;
    }
    let options = SmtpOptions::new(endpoint, session.trust.clone());
    let mut sender = SmtpSender::new(&options, &mailbox, &token.token)?;

    let mut pacer = Pacer::new((!args.no_pacing).then_some(args.rate));
    let mut earlier_connections = 0;
    let started = Instant::now();
    let (mut sent, mut failed) = (0usize, 0usize);
    let mut first_failure: Option<u8> = None;
    let mut renewal_failed: Option<serde_json::Value> = None;
    let mut queue = pending.into_iter();
    while let Some(p) = queue.next() {
        if let Some(error) = &renewal_failed {
            failed += 1;
            emit(&json!({ "id": p.id, "status": "failed", "via": "smtp", "error": error }))?;
            continue;
        }
        let built: Result<BuiltMessage, (String, Option<serde_json::Value>, u8)> =
            p.outgoing.clone().map_err(|e| (e, None, 2)).and_then(|mut o| {
                fill_from(&mut o, Some(&mailbox)).map_err(|e| (e, None, 2))?;
                mime::build(&o, now_secs()).map_err(|e| {
                    (
                        e.to_string(),
                        Some(json!({ "class": e.class(), "cause": Classified::cause(&e), "remedy": e.remedy() })),
                        e.class().exit_code(),
                    )
                })
            });
        let message = match built {
            Ok(message) => message,
            Err((text, detail, code)) => {
                failed += 1;
                first_failure.get_or_insert(code);
                let mut error = detail.unwrap_or_else(|| json!({ "class": "input" }));
                error["message"] = json!(text);
                emit(&json!({ "id": p.id, "status": "failed", "via": "smtp", "error": error }))?;
                continue;
            }
        };
        let wait = pacer.wait(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        // A token about to expire: renew it and sign in again on a new connection.
        if token
            .expires_at
            .duration_since(SystemClock.now())
            .unwrap_or_default()
            < RENEW_BEFORE
        {
            let renewed = match session.provider.token().await {
                Ok(renewed) => renewed,
                Err(e) => {
                    // No token, no more sending: this message and the rest are reported, not dropped.
                    failed += 1;
                    first_failure.get_or_insert(e.class().exit_code());
                    let error = json!({ "class": e.class(), "message": e.to_string(),
                                        "cause": Classified::cause(&e), "remedy": e.remedy() });
                    emit(
                        &json!({ "id": p.id, "status": "failed", "via": "smtp", "error": error }),
                    )?;
                    renewal_failed = Some(error);
                    continue;
                }
            };
            // The provider hands out a cached token until its own margin: change connections only for a new one.
            if renewed.expires_at != token.expires_at {
                token = renewed;
                earlier_connections += sender.connections_opened();
                sender.close().await;
                sender = SmtpSender::new(&options, &mailbox, &token.token)?;
            }
        }
        match sender.submit(&message).await {
            // --via auto: SMTP AUTH is off for the tenant or the mailbox; this message and the rest go through Graph.
            Err(m365mail::smtp::SmtpError::Refused {
                rejection: m365mail::smtp::Rejection::SmtpAuthDisabled,
                ..
            }) if auto => {
                sender.close().await;
                eprintln!(
                    "SMTP AUTH is off for {mailbox} (535 5.7.139): sending {} through Graph",
                    if sent + failed == 0 {
                        "every message"
                    } else {
                        "the rest"
                    }
                );
                let rest: Vec<Pending> = std::iter::once(p).chain(queue).collect();
                return send_graph(&args, global, rest, Some("535 5.7.139")).await;
            }
            Ok(submitted) => {
                sent += 1;
                emit(
                    &json!({ "id": p.id, "message_id": submitted.message_id, "status": "sent",
                              "via": "smtp", "reply": submitted.reply }),
                )?;
            }
            Err(e) => {
                failed += 1;
                first_failure.get_or_insert(e.class().exit_code());
                // The connection broke after the data went out: it may have been delivered.
                let status = if matches!(e, m365mail::smtp::SmtpError::Unconfirmed { .. }) {
                    "unconfirmed"
                } else {
                    "failed"
                };
                emit(
                    &json!({ "id": p.id, "message_id": message.message_id, "status": status,
                              "via": "smtp",
                              "error": { "class": e.class(), "message": e.to_string(),
                                         "cause": Classified::cause(&e), "remedy": e.remedy() } }),
                )?;
            }
        }
    }
    let connections = earlier_connections + sender.connections_opened();
    sender.close().await;
    let seconds = started.elapsed().as_secs_f64();
    if global.json {
        eprintln!(
            "{}",
            json!({ "sent": sent, "failed": failed, "seconds": seconds, "mailbox": mailbox,
                    "server": sender.endpoint(), "connections": connections })
        );
    } else {
        eprintln!(
            "sent {sent} of {} messages as {mailbox} through {} ({connections} connection{}) in {seconds:.2} s{}",
            sent + failed,
            sender.endpoint(),
            if connections == 1 { "" } else { "s" },
            if failed > 0 {
                format!("; {failed} failed (see their lines)")
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::from(first_failure.unwrap_or(0)))
}

/// Writes one result line. Standard output closed (`send … | head -1`) stops the batch: sending on without
/// reporting would leave the caller guessing which messages went.
fn emit(line: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("writing a result to standard output (its message was already handled); stopped before the next message")
}

/// Spaces submissions evenly: at most `per_minute` a minute (Exchange Online takes 30 per mailbox); a message
/// that took longer than the interval is followed at once.
struct Pacer {
    interval: Option<Duration>,
    next: Option<Instant>,
}

impl Pacer {
    fn new(per_minute: Option<u32>) -> Self {
        Self {
            interval: per_minute.map(|n| Duration::from_secs(60) / n.max(1)),
            next: None,
        }
    }

    /// How long to wait at `now` before the next submission, which is then counted as made.
    fn wait(&mut self, now: Instant) -> Duration {
        let Some(interval) = self.interval else {
            return Duration::ZERO;
        };
        let wait = self
            .next
            .map_or(Duration::ZERO, |next| next.saturating_duration_since(now));
        self.next = Some(now + wait + interval);
        wait
    }
}

/// `From` defaults to the sending mailbox.
fn fill_from(outgoing: &mut Outgoing, default: Option<&str>) -> Result<(), String> {
    if outgoing
        .from
        .as_ref()
        .and_then(|m| m.address.as_ref())
        .is_none()
    {
        let address = default
            .ok_or("no From address: pass --from (or set the profile's `mailbox` or `username`)")?;
        let name = outgoing.from.take().and_then(|m| m.name);
        outgoing.from = Some(Mailbox {
            name,
            address: Some(address.to_owned()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_takes_read_records_and_plain_addresses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), b"x,y\n").unwrap();
        let record = r#"{"id":"r1","from":[{"name":"Adele","address":"adele@contoso.com"}],
            "to":["alex@contoso.com",{"name":null,"address":"b@contoso.com"}],"subject":"s","text":"t",
            "headers":[["X-Job","42"],["From","x@y.example"],["Received","from a by b"],["Content-Type","text/plain"]],"attachments":[{"name":"a.csv","content_type":"text/csv","path":"a.csv"},
            {"name":"logo.png","inline":true,"content_id":"<logo>","data_base64":"iVBORw=="}],
            "uid":"ignored","size":10}"#;
        let message: InputMessage = serde_json::from_str(record).unwrap();
        let outgoing = from_input(message, dir.path()).unwrap();
        assert_eq!(outgoing.from.unwrap().name.as_deref(), Some("Adele"));
        assert_eq!(outgoing.to.len(), 2);
        assert_eq!(outgoing.headers, [("X-Job".to_owned(), "42".to_owned())]);
        assert_eq!(outgoing.parts[0].data, b"x,y\n");
        assert_eq!(outgoing.parts[1].content_id.as_deref(), Some("logo"));
        assert_eq!(outgoing.parts[1].content_type, "image/png");

        let missing: InputMessage =
            serde_json::from_str(r#"{"to":["a@b.example"],"attachments":[{"path":"nope.pdf"}]}"#)
                .unwrap();
        let err = from_input(missing, dir.path()).unwrap_err();
        assert!(err.contains("attachments[0].path"), "{err}");
    }

    #[test]
    fn pacing_spaces_messages_at_the_rate_and_never_waits_after_a_slow_one() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut pacer = Pacer::new(Some(30));
        assert_eq!(pacer.wait(at(0)), Duration::ZERO, "the first goes at once");
        assert_eq!(pacer.wait(at(500)), Duration::from_millis(1500));
        // Sent at 2 s; the next one is ready only at 7 s: no wait.
        assert_eq!(pacer.wait(at(7000)), Duration::ZERO);
        assert_eq!(pacer.wait(at(7100)), Duration::from_millis(1900));
        // 30 messages back to back take 58 s of waiting: 30 a minute.
        let mut pacer = Pacer::new(Some(30));
        let mut now = at(0);
        for _ in 0..30 {
            now += pacer.wait(now);
        }
        assert_eq!(now - start, Duration::from_secs(58));
        let mut unpaced = Pacer::new(None);
        assert!((0..100).all(|_| unpaced.wait(at(0)).is_zero()));
    }

    #[test]
    fn the_sender_fills_an_empty_from_and_keeps_a_name() {
        let mut o = Outgoing {
            from: Some(Mailbox {
                name: Some("Reports".into()),
                address: None,
            }),
            ..Outgoing::default()
        };
        fill_from(&mut o, Some("adele@contoso.com")).unwrap();
        let from = o.from.unwrap();
        assert_eq!(from.name.as_deref(), Some("Reports"));
        assert_eq!(from.address.as_deref(), Some("adele@contoso.com"));
        assert!(fill_from(&mut Outgoing::default(), None).is_err());
    }
}
