//! `m365mail folders` and `m365mail read` over IMAP (the default protocol) as a user runs them: a served
//! sandbox loaded with `--mail-dir`, the `--config-out` profiles, server-side filters, after-processing,
//! checkpoints, a localised folder name; and the same command against Dovecot.

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

/// `m365mail -p PROFILE read ARGS…` in `dir` (IMAP is the default protocol).
fn read(dir: &Path, profile: &str, args: &[&str]) -> Output {
    let mut full = vec!["-p", profile, "read"];
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
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    );
}

const LOCALISED: &str = "Éléments envoyés";

/// A mail directory: Adele's Inbox gets `n` messages (an attachment every fifth, a large body every seventh),
/// her localised folder two.
fn mail_dir(root: &Path, n: usize) -> PathBuf {
    let mail = root.join("mail");
    let inbox = mail.join(demo::USER_UPN);
    let localised = inbox.join(LOCALISED);
    std::fs::create_dir_all(&localised).unwrap();
    for i in 0..n {
        let body = if i % 5 == 0 {
            format!(
                "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nmessage {i}\r\n--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=\"report {i}.csv\"\r\n\r\na,b\r\n{i},2\r\n--b--\r\n"
            )
        } else if i % 7 == 0 {
            format!("\r\nmessage {i}\r\n{}\r\n", "x".repeat(20_000))
        } else {
            format!("\r\nmessage {i}\r\n")
        };
        let to = if i % 2 == 0 {
            "team@contoso.example"
        } else {
            demo::USER_UPN
        };
        std::fs::write(
            inbox.join(format!("{i:04}.eml")),
            format!(
                "From: Sender {i} <s{i}@fabrikam.example>\r\nTo: {to}\r\nSubject: Message {i:04}\r\nDate: Mon, 07 Dec 2026 06:{:02}:00 +0000\r\nMessage-ID: <m{i}@fabrikam.example>\r\n{body}",
                i % 60
            ),
        )
        .unwrap();
    }
    for i in 0..2 {
        std::fs::write(
            localised.join(format!("{i}.eml")),
            format!("From: a@b.example\r\nSubject: Envoyé {i}\r\nMessage-ID: <e{i}@b.example>\r\n\r\nbonjour\r\n"),
        )
        .unwrap();
    }
    mail
}

#[test]
fn folders_filters_and_moves_over_imap_with_the_served_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mail = mail_dir(work, 20);
    let _served = Served::start_with(work, &["--mail-dir", mail.to_str().unwrap()]);

    // `folders`: every folder with its counts; the localised name shown as Unicode.
    let listed = m365mail(work, &["-p", "sandbox-user", "folders"]);
    ok(&listed);
    let table = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(table.starts_with("FOLDER"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("INBOX") && l.contains(" 20 ")),
        "{table}"
    );
    assert!(table.contains(LOCALISED), "{table}");
    let json = m365mail(work, &["--json", "-p", "sandbox-user", "folders"]);
    ok(&json);
    let folders: Value = serde_json::from_slice(&json.stdout).unwrap();
    let archive = folders
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Archive")
        .unwrap();
    assert!(
        archive["attributes"]
            .as_array()
            .unwrap()
            .contains(&Value::from("\\Archive"))
    );

    // Server-side filters, no action: the folder stays as it was and nothing is handed on twice.
    let one = read(work, "sandbox-user", &["--subject", "message 0003"]);
    ok(&one);
    assert_eq!(subjects(&one), ["Message 0003"]);
    let attached = read(work, "sandbox-user", &["--has-attachment"]);
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
    let large = read(work, "sandbox-user", &["--larger-than", "10K"]);
    ok(&large);
    assert_eq!(subjects(&large), ["Message 0007", "Message 0014"]);
    let to = read(
        work,
        "sandbox-user",
        &["--to", "team@contoso", "--limit", "2"],
    );
    ok(&to);
    assert_eq!(subjects(&to), ["Message 0002", "Message 0004"]);

    // Then the rest, moved to Archive once each record and checkpoint is committed.
    let rest = read(
        work,
        "sandbox-user",
        &[
            "--then",
            "move",
            "--to-folder",
            "Archive",
            "--out-dir",
            "out",
        ],
    );
    ok(&rest);
    assert_eq!(records(&rest).len(), 20 - 1 - 4 - 2 - 2);
    assert!(stderr(&rest).contains(" moved"), "{}", stderr(&rest));
    let again = read(
        work,
        "sandbox-user",
        &["--then", "move", "--to-folder", "Archive"],
    );
    ok(&again);
    assert!(again.stdout.is_empty());
    let folders = m365mail(work, &["--json", "-p", "sandbox-user", "folders"]);
    let folders: Value = serde_json::from_slice(&folders.stdout).unwrap();
    let count = |name: &str| {
        folders
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()["messages"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count("INBOX"), 9, "the filtered runs left theirs");
    assert_eq!(count("Archive"), 11);

    // A localised folder by its Unicode name; the checkpoint's source names it.
    let envoyes = read(work, "sandbox-user", &["--folder", LOCALISED]);
    ok(&envoyes);
    let got = records(&envoyes);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["source"]["folder"], LOCALISED);
    assert!(got[0]["id"].as_str().unwrap().contains(LOCALISED));

    // The shared mailbox and the app-only daemon read other mailboxes with the same command.
    let shared = read(work, "sandbox-shared", &[]);
    ok(&shared);
    assert!(!records(&shared).is_empty());
    assert!(
        records(&shared)
            .iter()
            .all(|r| r["source"]["account"] == demo::SHARED_MAILBOX)
    );
    let daemon = read(
        work,
        "sandbox-daemon",
        &["--mailbox", demo::USER_UPN, "--folder", "Archive"],
    );
    ok(&daemon);
    assert_eq!(
        records(&daemon).len(),
        11,
        "Archive: what the user moved there"
    );

    // Input errors: exit 2, with the flag named, before anything is read.
    for (args, says) in [
        (vec!["--then", "move"], "--to-folder"),
        (vec!["--to-folder", "Archive"], "--then move"),
        (
            vec!["--protocol", "pop", "--unseen"],
            "--unseen is for IMAP",
        ),
        (
            vec!["--subject", "a\r\nA1 LOGOUT"],
            "cannot be sent to an IMAP server",
        ),
        (vec!["--folder", "Nope"], "no folder \"Nope\""),
        (
            vec!["--then", "copy", "--to-folder", "Nope"],
            "no folder \"Nope\"",
        ),
    ] {
        let refused = read(work, "sandbox-user", &args);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&refused)
        );
        assert!(
            stderr(&refused).contains(says),
            "{args:?}: {}",
            stderr(&refused)
        );
        assert!(refused.stdout.is_empty());
    }
}

/// IMAP's records are the POP3 reader's records: every one of the demo Inbox (attachments, an inline image,
/// a malformed message, one over --max-size) validates against docs/message.schema.json.
#[test]
#[ignore = "needs Python's jsonschema (scripts/test.sh installs it)"]
fn every_imap_record_validates_against_the_committed_schema() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let _served = Served::start(work);
    let stdout = read(
        work,
        "sandbox-user",
        &["--out-dir", "out", "--eml", "--max-size", "1MB"],
    );
    ok(&stdout);
    let got = records(&stdout);
    assert_eq!(got.len(), 12);
    assert_eq!(
        got.iter().filter(|r| r["skipped"] == "too large").count(),
        1
    );
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
}

/// The same command against Dovecot (scripts/realservers.sh; scripts/test.sh starts it and exports
/// `REALSERVERS_*`): a delegated profile for the local token issuer, IMAP with STARTTLS, folders, a filter,
/// a move, a delete and the checkpoints.
#[test]
#[ignore = "needs Dovecot and the token server (scripts/realservers.sh; scripts/test.sh starts them)"]
fn reads_from_dovecot_with_a_profile_over_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let port = common::realservers_env("REALSERVERS_IMAP_PORT");
    common::dovecot_profile(
        work,
        "cli-imap",
        30,
        &format!(
            "imap = \"localhost:{port}\"\nimap_tls = \"starttls\"\nstate = \"{}\"\n",
            work.join("st.sqlite").display()
        ),
    );
    let listed = m365mail(work, &["--json", "-p", "dovecot", "folders"]);
    ok(&listed);
    let folders: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let inbox = folders
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "INBOX")
        .unwrap();
    assert_eq!(inbox["messages"], 30, "{folders}");
    let archive = folders
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Archive");
    assert!(archive.is_some(), "{folders}");

    // A server-side filter (seed.py's first message is dated 2026-01-01, one every ~17 minutes).
    let filtered = read(work, "dovecot", &["--larger-than", "2K", "--limit", "5"]);
    ok(&filtered);
    let got = records(&filtered);
    assert_eq!(got.len(), 5);
    assert!(
        got.iter().all(|r| r["size"].as_u64().unwrap() > 2048),
        "{got:?}"
    );
    let moved = read(
        work,
        "dovecot",
        &[
            "--limit",
            "10",
            "--then",
            "move",
            "--to-folder",
            "Archive",
            "--out-dir",
            "out",
        ],
    );
    ok(&moved);
    assert_eq!(records(&moved).len(), 10);
    let deleted = read(work, "dovecot", &["--then", "delete"]);
    ok(&deleted);
    assert_eq!(records(&deleted).len(), 30 - 5 - 10);
    assert!(
        stderr(&deleted).contains(" deleted"),
        "{}",
        stderr(&deleted)
    );
    let again = read(work, "dovecot", &[]);
    ok(&again);
    assert!(again.stdout.is_empty());
    let after = m365mail(work, &["--json", "-p", "dovecot", "folders"]);
    let folders: Value = serde_json::from_slice(&after.stdout).unwrap();
    let count = |name: &str| {
        folders
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()["messages"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count("Archive"), 10);
    assert_eq!(
        count("INBOX"),
        5,
        "the filtered five stay; the rest were moved or deleted"
    );
}
