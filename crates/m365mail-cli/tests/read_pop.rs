//! `m365mail read --protocol pop` and `m365mail checkpoint` as a user runs them: a served sandbox loaded with
//! `--mail-dir`, the `--config-out` profiles, records on stdout and in `--out-dir`, checkpoints, deletes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use assert_cmd::cargo::CommandCargoExt as _;
use m365mail_sandbox::demo;
use serde_json::Value;

mod common;
use common::Served;

fn m365mail(dir: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("m365mail")
        .unwrap()
        .current_dir(dir)
        .args(["--config", "cfg.toml"])
        .args(args)
        .env_remove("M365MAIL_PASSWORD")
        .env_remove("M365MAIL_CLIENT_SECRET")
        .env_remove("M365MAIL_PROFILE")
        .env("M365MAIL_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `m365mail -p PROFILE read --protocol pop ARGS…` in `dir`.
fn read(dir: &Path, profile: &str, args: &[&str]) -> Output {
    let mut full = vec!["-p", profile, "read", "--protocol", "pop"];
    full.extend_from_slice(args);
    m365mail(dir, &full)
}

fn records(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn ok(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    );
}

/// A mail directory: `adele` gets `n` messages (one with an attachment every fifth), `support` 3.
fn mail_dir(root: &Path, n: usize) -> PathBuf {
    let mail = root.join("mail");
    for (address, count) in [(demo::USER_UPN, n), (demo::SHARED_MAILBOX, 3)] {
        let dir = mail.join(address);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..count {
            let body = if i % 5 == 0 {
                format!(
                    "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nmessage {i}\r\n--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=\"report {i}.csv\"\r\n\r\na,b\r\n{i},2\r\n--b--\r\n"
                )
            } else {
                format!("\r\nmessage {i}\r\n")
            };
            std::fs::write(
                dir.join(format!("{i:04}.eml")),
                format!(
                    "From: Sender {i} <s{i}@fabrikam.example>\r\nTo: {address}\r\nSubject: Message {i:04}\r\nDate: Mon, 07 Dec 2026 06:{:02}:00 +0000\r\nMessage-ID: <m{i}@fabrikam.example>\r\n{body}",
                    i % 60
                ),
            )
            .unwrap();
        }
    }
    mail
}

#[test]
fn reads_each_message_once_with_every_served_profile() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mail = mail_dir(work, 20);
    let _served = Served::start_with(work, &["--mail-dir", mail.to_str().unwrap()]);

    // Adele, password flow: 20 records on stdout and in the directory, the summary on stderr.
    let first = read(
        work,
        "sandbox-user",
        &["--state", "st.sqlite", "--out-dir", "out"],
    );
    ok(&first);
    let got = records(&first);
    assert_eq!(got.len(), 20);
    assert_eq!(got[0]["subject"], "Message 0000");
    assert_eq!(got[0]["attachments"][0]["name"], "report 0.csv");
    let path = got[0]["attachments"][0]["path"].as_str().unwrap();
    assert!(path.ends_with("/1-report_0.csv"), "{path}");
    assert_eq!(
        std::fs::read(work.join("out").join(path)).unwrap(),
        b"a,b\r\n0,2"
    );
    assert!(
        stderr(&first).contains("read 20 new of 20 messages"),
        "{}",
        stderr(&first)
    );
    let json_files = || {
        std::fs::read_dir(work.join("out"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
    };
    assert_eq!(json_files(), 20);

    // Again: nothing new.
    let second = read(work, "sandbox-user", &["--state", "st.sqlite"]);
    ok(&second);
    assert!(second.stdout.is_empty());
    assert!(stderr(&second).contains("read 0 new of 20 messages"));

    // The shared mailbox through Adele's delegation, newest first, at most 2.
    let shared = m365mail(
        work,
        &[
            "-p",
            "sandbox-shared",
            "read",
            "--protocol",
            "pop3",
            "--state",
            "st.sqlite",
            "--order",
            "newest",
            "--limit",
            "2",
        ],
    );
    ok(&shared);
    let got = records(&shared);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["subject"], "Message 0002");
    assert_eq!(got[0]["source"]["account"], demo::SHARED_MAILBOX);

    // Checkpoints: two sources; a reset of Adele's makes her mail new again, the directory unchanged.
    let list = m365mail(
        work,
        &["--json", "checkpoint", "list", "--state", "st.sqlite"],
    );
    ok(&list);
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    let sources = listed["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{listed}");
    let adele = sources
        .iter()
        .find(|s| s["account"] == demo::USER_UPN)
        .unwrap();
    assert_eq!(adele["seen"], 20);
    let reset = m365mail(
        work,
        &[
            "checkpoint",
            "reset",
            "--state",
            "st.sqlite",
            "--account",
            demo::USER_UPN,
        ],
    );
    ok(&reset);
    assert!(String::from_utf8_lossy(&reset.stdout).contains("forgot 20"));
    let again = read(
        work,
        "sandbox-user",
        &["--state", "st.sqlite", "--out-dir", "out"],
    );
    ok(&again);
    assert_eq!(records(&again).len(), 20);
    assert_eq!(json_files(), 20, "the same files, rewritten");

    // App-only (the Exchange service principal's FullAccess on Adele's mailbox, the profile's `mailbox`),
    // with its own checkpoints, deleting what it read: the maildrop ends empty.
    let daemon = read(
        work,
        "sandbox-daemon",
        &["--state", "daemon.sqlite", "--then", "delete"],
    );
    ok(&daemon);
    assert_eq!(records(&daemon).len(), 20);
    assert!(
        stderr(&daemon).contains("20 deleted"),
        "{}",
        stderr(&daemon)
    );
    let empty = read(work, "sandbox-daemon", &["--state", "daemon.sqlite"]);
    ok(&empty);
    assert!(
        stderr(&empty).contains("of 0 messages"),
        "{}",
        stderr(&empty)
    );

    // Alex's mailbox is not the app's: Exchange's one line, exit 4, and what to check.
    let refused = read(
        work,
        "sandbox-daemon",
        &[
            "--state",
            "daemon.sqlite",
            "--mailbox",
            demo::SECOND_USER_UPN,
        ],
    );
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("-ERR Authentication failure"),
        "{}",
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains("remedy: check, in order"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn filters_size_limits_from_now_and_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mail = mail_dir(work, 12);
    let _served = Served::start_with(work, &["--mail-dir", mail.to_str().unwrap()]);
    let read_adele = |extra: &[&str]| {
        let mut args = vec!["--state", "st.sqlite"];
        args.extend_from_slice(extra);
        read(work, "sandbox-user", &args)
    };

    // Client-side filters: not output, not checkpointed (the CRLF before a boundary is the boundary's).
    let filtered = read_adele(&["--subject", "message 001", "--from", "FABRIKAM"]);
    ok(&filtered);
    let got = records(&filtered);
    assert_eq!(
        got.iter()
            .map(|r| r["subject"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["Message 0010", "Message 0011"]
    );
    assert!(
        stderr(&filtered).contains("10 filtered out"),
        "{}",
        stderr(&filtered)
    );
    let dated = read_adele(&[
        "--since",
        "2026-12-07T06:05:00Z",
        "--before",
        "2026-12-07T06:07:00Z",
    ]);
    ok(&dated);
    assert_eq!(records(&dated).len(), 2, "06:05 and 06:06");

    // A size bound every message is over: skipped records with the header's fields, no body, no hash.
    let bounded = read_adele(&["--max-size", "100", "--limit", "3"]);
    ok(&bounded);
    let got = records(&bounded);
    assert_eq!(got.len(), 3);
    assert!(
        got.iter()
            .all(|r| r["skipped"] == "too large" && r["sha256"].is_null())
    );
    assert!(
        got.iter()
            .all(|r| r["subject"].as_str().unwrap().starts_with("Message"))
    );

    // From now: the rest is marked, nothing printed; a later message is read.
    let from_now = read_adele(&["--from-now"]);
    ok(&from_now);
    assert!(from_now.stdout.is_empty());
    assert!(
        stderr(&from_now).contains("marked seen"),
        "{}",
        stderr(&from_now)
    );
    assert!(read_adele(&[]).stdout.is_empty());

    // Input errors: exit 2, nothing read.
    for (args, needle) in [
        (
            vec!["--protocol", "smtp"],
            "expected imap, pop (pop3) or graph",
        ),
        (vec!["--max-size", "lots"], "--max-size"),
        (vec!["--since", "yesterday"], "--since"),
    ] {
        let mut full = vec!["-p", "sandbox-user", "read", "--state", "st.sqlite"];
        if args[0] != "--protocol" {
            full.extend(["--protocol", "pop"]);
        }
        full.extend(args.iter().copied());
        let out = m365mail(work, &full);
        assert_eq!(out.status.code(), Some(2), "{full:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{full:?}: {}", stderr(&out));
    }
    // A custom authority has no default POP3 server: a profile without `pop` is told so, nothing is sent.
    let config = std::fs::read_to_string(work.join("cfg.toml")).unwrap();
    let without_pop: String = config
        .lines()
        .filter(|l| !l.starts_with("pop"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(work.join("nopop.toml"), without_pop).unwrap();
    let out = Command::cargo_bin("m365mail")
        .unwrap()
        .current_dir(work)
        .args([
            "--config",
            "nopop.toml",
            "-p",
            "sandbox-user",
            "read",
            "--protocol",
            "pop",
        ])
        .env("M365MAIL_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("POP3 is not configured for profile sandbox-user"),
        "{}",
        stderr(&out)
    );

    // App-only without a mailbox: the daemon profile names one; without it, exit 2.
    let no_mailbox = read(
        work,
        "sandbox-daemon",
        &["--state", "st.sqlite", "--mailbox", ""],
    );
    assert_ne!(no_mailbox.status.code(), Some(0), "{}", stderr(&no_mailbox));
}

#[test]
#[ignore = "needs Python's jsonschema (scripts/test.sh installs it)"]
fn every_record_validates_against_the_committed_schema() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // The demo mail: every shape the sandbox seeds (attachments, inline image, malformed, 5 MB).
    let _served = Served::start(work);
    let stdout = read(
        work,
        "sandbox-user",
        &[
            "--state",
            "st.sqlite",
            "--out-dir",
            "out",
            "--eml",
            "--max-size",
            "1MB",
        ],
    );
    ok(&stdout);
    assert_eq!(records(&stdout).len(), 12);
    std::fs::write(work.join("stdout.ndjson"), &stdout.stdout).unwrap();
    let validator = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/schema/validate.py");
    let mut files: Vec<PathBuf> = vec![work.join("stdout.ndjson")];
    files.extend(
        std::fs::read_dir(work.join("out"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json")),
    );
    let run = Command::new("python3")
        .arg(&validator)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "valid 24");

    // The validator is not a rubber stamp: a record of another version fails.
    let mut bad: Value = records(&stdout)[0].clone();
    bad["schema_version"] = 2.into();
    std::fs::write(work.join("bad.json"), bad.to_string()).unwrap();
    let run = Command::new("python3")
        .arg(&validator)
        .arg(work.join("bad.json"))
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
}

/// The same command against Dovecot (scripts/realservers.sh; scripts/test.sh starts it and exports
/// `REALSERVERS_*`): a profile for the local token issuer, POP3 with STLS, deletes.
#[test]
#[ignore = "needs Dovecot and the token server (scripts/realservers.sh; scripts/test.sh starts them)"]
fn reads_from_dovecot_with_a_profile_over_stls() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let port = common::realservers_env("REALSERVERS_POP3_PORT");
    common::dovecot_profile(
        work,
        "cli-read",
        30,
        &format!(
            "pop = \"localhost:{port}\"\npop_tls = \"starttls\"\nprotocol = \"pop\"\nstate = \"{}\"\n",
            work.join("st.sqlite").display()
        ),
    );
    // `protocol` and `state` come from the profile.
    let first = m365mail(
        work,
        &[
            "-p",
            "dovecot",
            "read",
            "--out-dir",
            "out",
            "--then",
            "delete",
        ],
    );
    ok(&first);
    let got = records(&first);
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|r| {
        r["source"]["server"]
            .as_str()
            .unwrap()
            .starts_with("localhost:")
    }));
    assert!(stderr(&first).contains("30 deleted"), "{}", stderr(&first));
    let second = m365mail(work, &["-p", "dovecot", "read"]);
    ok(&second);
    assert!(second.stdout.is_empty());
    assert!(
        stderr(&second).contains("of 0 messages"),
        "{}",
        stderr(&second)
    );
}
