//! `m365mail folders --protocol graph`, `read --protocol graph` and `send --via graph` as a user runs them,
//! with the served sandbox's `--config-out` profiles: the delta query's rounds and checkpoint, filters,
//! after-processing, the daemon reading another mailbox, large attachments through upload sessions, and the
//! round trip — a message sent through Graph read back over Graph, IMAP and POP3 with the same bytes; and
//! `read --watch`, which keeps reading pass after pass until SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Output;

use m365mail_sandbox::demo;
use serde_json::Value;

mod common;
use common::Served;

fn m365mail(dir: &Path, args: &[&str]) -> Output {
    common::run_cfg(dir, args)
}

/// `m365mail -p PROFILE read --protocol graph ARGS…` in `dir`.
fn read_graph(dir: &Path, profile: &str, args: &[&str]) -> Output {
    let mut full = vec!["-p", profile, "read", "--protocol", "graph"];
    full.extend_from_slice(args);
    m365mail(dir, &full)
}

use common::records;

fn subjects(output: &Output) -> Vec<String> {
    records(output)
        .iter()
        .map(|r| r["subject"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn ok(output: &Output) {
    assert!(output.status.success(), "{}", common::describe(output));
}

/// Adele's Inbox gets `n` messages (an attachment every fifth), and an `Archive/2026` folder one.
fn mail_dir(root: &Path, n: usize) -> PathBuf {
    let mail = root.join("mail");
    let inbox = mail.join(demo::USER_UPN);
    let nested = inbox.join("Projects");
    std::fs::create_dir_all(&nested).unwrap();
    for i in 0..n {
        let body = if i % 5 == 0 {
            format!(
                "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nmessage {i}\r\n--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=\"report {i}.csv\"\r\n\r\na,b\r\n{i},2\r\n--b--\r\n"
            )
        } else {
            format!("\r\nmessage {i}\r\n")
        };
        std::fs::write(
            inbox.join(format!("{i:04}.eml")),
            format!(
                "From: Sender {i} <s{i}@fabrikam.example>\r\nTo: {}\r\nSubject: Message {i:04}\r\nDate: Mon, 07 Dec 2026 06:{:02}:00 +0000\r\nMessage-ID: <g{i}@fabrikam.example>\r\n{body}",
                demo::USER_UPN,
                i % 60
            ),
        )
        .unwrap();
    }
    std::fs::write(
        nested.join("0.eml"),
        "From: a@b.example\r\nSubject: Project plan\r\nMessage-ID: <p0@b.example>\r\n\r\nplan\r\n",
    )
    .unwrap();
    mail
}

fn sha256_of(records: &[Value]) -> Vec<String> {
    let mut sums: Vec<String> = records
        .iter()
        .map(|r| r["sha256"].as_str().unwrap().to_owned())
        .collect();
    sums.sort();
    sums
}

/// `POST /_sandbox/admin/faults/graph` on the served sandbox.
fn inject_graph_fault(work: &Path, served: &Served, fault: Value) {
    common::admin_post(work, served, "faults/graph", fault);
}

#[test]
fn graph_reads_a_folder_once_with_filters_actions_and_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mail = mail_dir(work, 20);
    let served = Served::start_with(work, &["--mail-dir", mail.to_str().unwrap()]);

    // `folders --protocol graph`: paths, counts and ids.
    let listed = m365mail(
        work,
        &["-p", "sandbox-user", "folders", "--protocol", "graph"],
    );
    ok(&listed);
    let table = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(table.starts_with("FOLDER"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("Inbox ") && l.contains(" 20 ")),
        "{table}"
    );
    let json = m365mail(
        work,
        &[
            "--json",
            "-p",
            "sandbox-user",
            "folders",
            "--protocol",
            "graph",
        ],
    );
    ok(&json);
    let folders: Vec<Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        folders
            .iter()
            .any(|f| f["path"] == "Inbox/Projects" || f["path"] == "Projects"),
        "{folders:?}"
    );

    // The first read: the attachments only (a filter Graph's delta cannot apply, checked here).
    let attached = read_graph(
        work,
        "sandbox-user",
        &["--has-attachment", "--then", "mark-read"],
    );
    ok(&attached);
    assert_eq!(
        subjects(&attached),
        [
            "Message 0000",
            "Message 0005",
            "Message 0010",
            "Message 0015"
        ]
    );
    assert!(
        stderr(&attached).contains("read 4 new of 20"),
        "{}",
        stderr(&attached)
    );
    // The round is complete: the next run finds nothing new (the filtered ones are behind the delta link).
    let again = read_graph(work, "sandbox-user", &[]);
    // However the folder is named — its well-known name in another case, its display name — it is one
    // source: nothing is handed on again.
    for spelling in ["Inbox", "INBOX"] {
        let named = read_graph(work, "sandbox-user", &["--folder", spelling]);
        ok(&named);
        assert!(
            named.stdout.is_empty(),
            "--folder {spelling}: {}",
            String::from_utf8_lossy(&named.stdout)
        );
    }
    ok(&again);
    assert!(
        again.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // Graph forgets the round (410 syncStateNotFound): the folder is read again from a new round; the four
    // handed on are recognised, the sixteen the filter left are new to this reader.
    inject_graph_fault(
        work,
        &served,
        serde_json::json!({ "fault": "sync_state_not_found" }),
    );
    let resync = m365mail(
        work,
        &[
            "--json",
            "-p",
            "sandbox-user",
            "read",
            "--protocol",
            "graph",
        ],
    );
    ok(&resync);
    assert_eq!(records(&resync).len(), 16);
    let summary: Value = serde_json::from_str(stderr(&resync).lines().last().unwrap()).unwrap();
    assert_eq!(summary["summary"]["already_delivered"], 4, "{summary}");
    assert_eq!(summary["summary"]["listed"], 20, "{summary}");

    // What was marked read over Graph is \Seen over IMAP: 16 unseen left.
    let unseen = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "read",
            "--unseen",
            "--state",
            "imap.sqlite",
        ],
    );
    ok(&unseen);
    assert_eq!(records(&unseen).len(), 16);

    // A new message (sent through Graph by Adele to herself) is the next round: it alone, moved to Archive.
    let sent = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "send",
            "--via",
            "graph",
            "--no-pacing",
            "--to",
            demo::USER_UPN,
            "--subject",
            "Fresh",
            "--text",
            "new",
        ],
    );
    ok(&sent);
    let fresh = read_graph(
        work,
        "sandbox-user",
        &["--then", "move", "--to-folder", "Archive"],
    );
    ok(&fresh);
    assert_eq!(subjects(&fresh), ["Fresh"]);
    assert!(stderr(&fresh).contains("1 moved"), "{}", stderr(&fresh));
    let archive = m365mail(
        work,
        &[
            "--json",
            "-p",
            "sandbox-user",
            "folders",
            "--protocol",
            "graph",
        ],
    );
    let folders: Vec<Value> = serde_json::from_slice(&archive.stdout).unwrap();
    let count = |path: &str| {
        folders.iter().find(|f| f["path"] == path).unwrap()["totalItemCount"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count("Archive"), 1);
    assert_eq!(count("Inbox"), 20);

    // The daemon (app-only Mail.ReadWrite) reads Adele's Inbox with its own checkpoint: every message, the
    // same bytes IMAP gives.
    let daemon = read_graph(
        work,
        "sandbox-daemon",
        &["--mailbox", demo::USER_UPN, "--state", "daemon.sqlite"],
    );
    ok(&daemon);
    let over_imap = m365mail(
        work,
        &["-p", "sandbox-user", "read", "--state", "imap-all.sqlite"],
    );
    ok(&over_imap);
    assert_eq!(records(&daemon).len(), 20);
    assert_eq!(
        sha256_of(&records(&daemon)),
        sha256_of(&records(&over_imap))
    );

    // A folder by path; an unknown one is a usage-class error naming the way to list them.
    let nested = read_graph(work, "sandbox-user", &["--folder", "Projects"]);
    ok(&nested);
    assert_eq!(subjects(&nested), ["Project plan"]);
    let missing = read_graph(work, "sandbox-user", &["--folder", "Nowhere"]);
    assert_eq!(
        missing.status.code(),
        Some(2),
        "{}",
        common::describe(&missing)
    );
    assert!(
        stderr(&missing).contains("folders --protocol graph"),
        "{}",
        stderr(&missing)
    );

    // Flags that belong to IMAP are refused before anything is read.
    let imap_flag = read_graph(work, "sandbox-user", &["--order", "newest"]);
    assert_eq!(imap_flag.status.code(), Some(2));
}

#[test]
fn graph_sends_json_mime_and_large_attachments_and_every_protocol_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let _served = Served::start(work);
    // Adele's Inbox starts with the demo messages: mark them as seen by each reader first.
    for (protocol, state) in [
        ("graph", "g.sqlite"),
        ("imap", "i.sqlite"),
        ("pop", "p.sqlite"),
    ] {
        ok(&m365mail(
            work,
            &[
                "-p",
                "sandbox-user",
                "read",
                "--protocol",
                protocol,
                "--state",
                state,
                "--from-now",
            ],
        ));
    }
    let small: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let large: Vec<u8> = (0..1_000_000u32)
        .flat_map(|i| i.wrapping_mul(7919).to_le_bytes())
        .collect(); // 4 MB
    std::fs::write(work.join("small.bin"), &small).unwrap();
    std::fs::write(work.join("large.bin"), &large).unwrap();

    let send = |extra: &[&str]| {
        let mut args = vec![
            "--json",
            "-p",
            "sandbox-user",
            "send",
            "--via",
            "graph",
            "--no-pacing",
            "--to",
            demo::USER_UPN,
        ];
        args.extend_from_slice(extra);
        let output = m365mail(work, &args);
        ok(&output);
        let line: Value =
            serde_json::from_slice(output.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(line["status"], "sent", "{line}");
        line
    };
    let json_form = send(&[
        "--subject",
        "JSON form",
        "--text",
        "hello",
        "--attach",
        "small.bin",
    ]);
    assert_eq!(json_form["graph_form"], "json");
    let mime_form = send(&[
        "--subject",
        "MIME form",
        "--text",
        "hello",
        "--attach",
        "small.bin",
        "--graph-mime",
    ]);
    assert_eq!(mime_form["graph_form"], "mime");
    let both_bodies = send(&[
        "--subject",
        "Two bodies",
        "--text",
        "plain",
        "--html",
        "<p>rich</p>",
    ]);
    assert_eq!(both_bodies["graph_form"], "mime");
    assert!(
        both_bodies["mime_because"]
            .as_str()
            .unwrap()
            .contains("HTML")
    );
    let draft = send(&[
        "--subject",
        "Large",
        "--text",
        "see attached",
        "--attach",
        "large.bin",
        "--attach",
        "small.bin",
    ]);
    assert_eq!(draft["graph_form"], "draft");
    assert_eq!(draft["upload_requests"], 2, "4 MB in pieces of 3.75 MiB");

    // --save-to-sent-items false cannot be kept by a draft or the MIME form: refused before sending.
    let refused = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "send",
            "--via",
            "graph",
            "--to",
            demo::USER_UPN,
            "--subject",
            "x",
            "--text",
            "y",
            "--graph-mime",
            "--save-to-sent-items",
            "false",
        ],
    );
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        common::describe(&refused)
    );

    // Read back over Graph, IMAP and POP3: the same four messages, byte for byte, with the attachments'
    // bytes intact.
    let mut seen = Vec::new();
    for (protocol, state) in [
        ("graph", "g.sqlite"),
        ("imap", "i.sqlite"),
        ("pop", "p.sqlite"),
    ] {
        let output = m365mail(
            work,
            &[
                "-p",
                "sandbox-user",
                "read",
                "--protocol",
                protocol,
                "--state",
                state,
            ],
        );
        ok(&output);
        let got = records(&output);
        let mut names: Vec<String> = got
            .iter()
            .map(|r| r["subject"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["JSON form", "Large", "MIME form", "Two bodies"],
            "{protocol}"
        );
        let large_record = got.iter().find(|r| r["subject"] == "Large").unwrap();
        let sums: Vec<&str> = large_record["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["sha256"].as_str().unwrap())
            .collect();
        assert!(
            sums.contains(&m365mail::mime::sha256_hex(&large).as_str()),
            "{protocol}: {sums:?}"
        );
        assert!(
            sums.contains(&m365mail::mime::sha256_hex(&small).as_str()),
            "{protocol}"
        );
        // Every form keeps the Message-ID the result line gave (JSON sets internetMessageId).
        for (subject, line) in [
            ("JSON form", &json_form),
            ("MIME form", &mime_form),
            ("Large", &draft),
        ] {
            let record = got.iter().find(|r| r["subject"] == subject).unwrap();
            assert_eq!(
                record["message_id"], line["message_id"],
                "{protocol} {subject}"
            );
        }
        seen.push(sha256_of(&got));
    }
    assert_eq!(seen[0], seen[1], "Graph and IMAP give the same bytes");
    assert_eq!(seen[1], seen[2], "IMAP and POP3 give the same bytes");
}

/// `read --watch 60` (IMAP, the default): the Inbox once, then a message delivered later arrives as the next
/// pass's record within seconds, not at the next poll (the session waits in IDLE between passes); SIGTERM ends
/// the run with exit 0, and nothing was handed on twice.
#[test]
fn watch_reads_new_mail_as_it_arrives_and_stops_on_sigterm() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let served = Served::start(work);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("m365mail"))
        .current_dir(work)
        .args([
            "--config",
            "cfg.toml",
            "-p",
            "sandbox-user",
            "read",
            "--watch",
            "1",
            "--state",
            "w.sqlite",
            "--out-dir",
            "out",
        ])
        .env_remove("M365MAIL_PASSWORD")
        .env_remove("M365MAIL_PROFILE")
        .env("M365MAIL_LOG", "error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> Value {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no record for {what} within 30 s"));
        serde_json::from_str(&line).unwrap()
    };
    // The first pass: the demo Inbox's 12 messages.
    let first: Vec<Value> = (0..12)
        .map(|i| next(&format!("demo message {i}")))
        .collect();
    assert_eq!(first.len(), 12);
    // A message delivered while it watches is the next pass's record.
    let url = format!(
        "{}_sandbox/admin/mailboxes/{}/messages",
        served.line["endpoints"]["identity"].as_str().unwrap(),
        demo::USER_UPN
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(work.join("ca.pem")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let status = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async {
            http.post(&url)
                .body("From: late@fabrikam.example\r\nSubject: Arrived while watching\r\nMessage-ID: <watch@fabrikam.example>\r\n\r\nhello\r\n")
                .send()
                .await
        })
        .unwrap()
        .status();
    assert!(status.is_success());
    let delivered_at = std::time::Instant::now();
    let arrived = next("the late message");
    assert_eq!(arrived["subject"], "Arrived while watching");
    // IDLE, not the 60 s poll (the sandbox pushes EXISTS within a second).
    assert!(
        delivered_at.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        delivered_at.elapsed()
    );
    // SIGTERM: the pass under way ends, then the run, with exit 0.
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 15 s after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // Exactly once in the output directory.
    let records = std::fs::read_dir(work.join("out"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(records, 13);
    // --from-now makes no sense pass after pass: refused.
    let refused = m365mail(
        work,
        &["-p", "sandbox-user", "read", "--watch", "1", "--from-now"],
    );
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        common::describe(&refused)
    );
}
