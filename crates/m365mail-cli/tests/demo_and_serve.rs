//! `m365mail demo` and `m365mail sandbox serve` end to end, and the served sandbox driven by curl (a client
//! nobody here wrote) with the token then judged by `m365mail token inspect`.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command as StdCommand, Stdio},
    time::{Duration, Instant},
};

use assert_cmd::{Command, cargo::CommandCargoExt};
use m365mail_sandbox::demo;
use serde_json::Value;

#[test]
fn demo_runs_every_flow_and_single_flight_sends_one_request() {
    let output = Command::cargo_bin("m365mail")
        .unwrap()
        .args(["--json", "demo", "--callers", "100"])
        .env("M365MAIL_LOG", "error")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let steps = report["steps"].as_array().unwrap();
    let named = |name: &str| {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .unwrap_or_else(|| panic!("no step {name} in {report}"))
    };

    for (step, protocol) in [
        ("ropc", "imap"),
        ("refresh", "smtp"),
        ("device-code", "pop"),
        ("auth-code-pkce", "imap"),
        ("client-secret", "imap"),
        ("client-certificate-rs256", "smtp"),
        ("client-certificate-ps256", "graph-send"),
    ] {
        let s = named(step);
        assert_eq!(s["ok"], true, "{s}");
        let verdicts = s["claims"]["verdicts"].as_array().unwrap();
        let verdict = verdicts.iter().find(|v| v["protocol"] == protocol).unwrap();
        assert_eq!(
            verdict["usable"], true,
            "{step} cannot serve {protocol}: {s}"
        );
    }
    // Delegated tokens carry the user; app-only ones the app roles.
    assert_eq!(named("ropc")["claims"]["user"], demo::USER_UPN);
    assert_eq!(named("device-code")["claims"]["user"], demo::MFA_USER_UPN);
    assert_eq!(
        named("auth-code-pkce")["claims"]["user"],
        demo::SECOND_USER_UPN
    );
    assert!(
        named("client-secret")["claims"]["roles"]
            .as_array()
            .unwrap()
            .contains(&Value::from("IMAP.AccessAsApp"))
    );

    // The demo Inbox read over POP3: 12 records (one skipped as over 1 MB), then nothing new.
    let mail = named("pop3-read");
    assert_eq!(mail["first"]["records"], 12, "{mail}");
    assert_eq!(mail["first"]["skipped"], 1, "{mail}");
    assert_eq!(mail["second"]["records"], 0, "{mail}");
    assert_eq!(mail["second"]["listed"], 12, "{mail}");
    assert_eq!(mail["records"].as_array().unwrap().len(), 12);

    // The same Inbox over IMAP, moved to Archive once read (the one over 1 MB stays): then nothing new.
    let imap = named("imap-read");
    assert_eq!(imap["first"]["records"], 12, "{imap}");
    assert_eq!(imap["first"]["moved"], 11, "{imap}");
    assert_eq!(imap["second"]["records"], 0, "{imap}");
    assert_eq!(imap["second"]["listed"], 1, "{imap}");
    assert_eq!(
        imap["archive_after"].as_u64().unwrap(),
        imap["archive_before"].as_u64().unwrap() + 11
    );

    // Graph: the users (app-only), and a sendMail read back over IMAP exactly as sent.
    let graph = named("graph");
    assert!(graph["users"].as_u64().unwrap() >= 2, "{graph}");
    assert_eq!(graph["read_back_identical"], true, "{graph}");
    assert_eq!(graph["read_back_over_graph_identical"], true, "{graph}");

    // A message sent over SMTP comes back over POP3 exactly as sent.
    let sent = named("smtp-send");
    assert_eq!(sent["read_back_identical"], true, "{sent}");
    assert!(
        sent["reply"]
            .as_str()
            .unwrap()
            .starts_with("250 2.0.0 OK <"),
        "{sent}"
    );
    assert_eq!(sent["attachments"], serde_json::json!(["q4-figures.csv"]));

    for (step, code) in [
        ("ropc-mfa-user", 50076),
        ("secret-id-instead-of-value", 7000215),
        ("ropc-no-consent", 65001),
    ] {
        let s = named(step);
        assert_eq!(s["ok"], false, "{s}");
        assert!(
            s["aadsts"].as_array().unwrap().contains(&Value::from(code)),
            "{step}: expected AADSTS{code} in {s}"
        );
        assert!(!s["remedy"].as_str().unwrap().is_empty());
    }

    let rounds = named("single-flight")["rounds"].as_array().unwrap();
    assert_eq!(rounds[0]["callers"], 100);
    assert_eq!(rounds[0]["token_requests"], 1, "cold cache: {rounds:?}");
    assert_eq!(rounds[1]["token_requests"], 0, "warm cache: {rounds:?}");

    // Step 14, on the empty tenant: setup and the script's Exchange steps reach a green doctor, the new
    // app-only profile's mail comes back as sent over every protocol, and IMAP switched off is named by
    // doctor with its remedy, then put back.
    let story = named("setup-doctor");
    assert_eq!(story["ok"], true, "{story}");
    assert_eq!(story["kind"], "setup", "{story}");
    assert!(story["actions"].as_u64().unwrap() >= 5, "{story}");
    let client_id = story["client_id"].as_str().unwrap();
    let principal = story["service_principal_id"].as_str().unwrap();
    assert_ne!(client_id, principal);
    let exchange: Vec<&str> = story["exchange"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line.as_str().unwrap())
        .collect();
    assert!(
        exchange[0].starts_with(&format!(
            "New-ServicePrincipal -AppId '{client_id}' -ObjectId '{principal}'"
        )),
        "{exchange:?}"
    );
    assert!(
        exchange[1].starts_with(&format!(
            "Add-MailboxPermission -Identity '{}' -User '{principal}'",
            demo::USER_UPN
        )),
        "{exchange:?}"
    );
    assert_eq!(story["doctor_failed"], 0, "{story}");
    assert_eq!(story["doctor_passed"], 12, "{story}");
    for protocol in ["imap", "pop3", "graph"] {
        assert_eq!(
            story["mail"][format!("{protocol}_identical")],
            2,
            "{protocol}: {story}"
        );
    }
    assert_eq!(story["broken_step"], "imap", "{story}");
    assert!(
        story["broken_remedy"]
            .as_str()
            .unwrap()
            .contains("Set-CASMailbox -ImapEnabled $true"),
        "{story}"
    );
    assert_eq!(story["restored_failed"], 0, "{story}");
    assert_eq!(story["restored_passed"], 12, "{story}");

    // Nothing secret reaches the terminal.
    let text = String::from_utf8_lossy(&output.stdout);
    for secret in [
        demo::USER_PASSWORD,
        demo::CONFIDENTIAL_APP_SECRET,
        demo::SECOND_USER_PASSWORD,
        demo::ADMIN_PASSWORD,
    ] {
        assert!(!text.contains(secret), "demo output contains a secret");
    }
    assert!(!text.contains("eyJ"), "demo output contains a JWT");
    // Nor step 14's new client secret, whose value has Entra's shape (three characters, a digit, `Q~`, …).
    assert!(
        !text
            .as_bytes()
            .windows(3)
            .any(|w| w[0].is_ascii_digit() && &w[1..] == b"Q~"),
        "demo output contains a client secret"
    );
}

/// A `m365mail sandbox serve` child, stopped with SIGINT (its Ctrl-C path) when dropped.
struct Served {
    child: Child,
    base_url: String,
}

impl Served {
    fn start(dir: &Path) -> Self {
        let mut child = StdCommand::cargo_bin("m365mail")
            .unwrap()
            .args([
                "sandbox",
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--pops-port",
                "0",
                "--ca-out",
            ])
            .arg(dir.join("ca.pem"))
            .env("M365MAIL_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut base_url = None;
        // The summary ends with "Press Ctrl-C to stop."; the CA is written before it is printed.
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(url) = line.trim().strip_prefix("base URL:") {
                base_url = Some(url.trim().to_owned());
            }
            if line.contains("Ctrl-C") || Instant::now() > deadline {
                break;
            }
        }
        Self {
            child,
            base_url: base_url.expect("sandbox serve printed no base URL"),
        }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let killed = StdCommand::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "sandbox serve ignored SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn curl_token(served: &Served, ca: &Path, form: &[(&str, &str)]) -> Value {
    let mut cmd = StdCommand::new("curl");
    cmd.args(["--silent", "--show-error", "--cacert"]).arg(ca);
    for (name, value) in form {
        cmd.arg("--data-urlencode").arg(format!("{name}={value}"));
    }
    cmd.arg(format!(
        "{}{}/oauth2/v2.0/token",
        served.base_url,
        demo::TENANT_ID
    ));
    let output = cmd.output().expect("curl is installed by scripts/test.sh");
    assert!(output.status.success(), "curl: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
#[ignore = "needs curl (installed by scripts/test.sh)"]
fn served_sandbox_answers_curl_and_cli_inspects_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path());
    let ca = dir.path().join("ca.pem");
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    // ROPC with curl: curl verifies the sandbox's TLS certificate against the written CA.
    let granted = curl_token(
        &served,
        &ca,
        &[
            ("grant_type", "password"),
            ("client_id", demo::PUBLIC_APP_ID),
            ("username", demo::USER_UPN),
            ("password", demo::USER_PASSWORD),
            ("scope", &format!("{} offline_access", demo::IMAP_SCOPE)),
        ],
    );
    assert_eq!(granted["token_type"], "Bearer");
    let access_token = granted["access_token"].as_str().unwrap();

    // The CLI reads the token from stdin (never argv) and says it serves IMAP but not SMTP.
    let inspected = Command::cargo_bin("m365mail")
        .unwrap()
        .args(["--json", "token", "inspect"])
        .write_stdin(access_token)
        .env("M365MAIL_LOG", "error")
        .output()
        .unwrap();
    assert!(inspected.status.success(), "{inspected:?}");
    let report: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    let text = report.to_string();
    assert!(text.contains(demo::USER_UPN), "{text}");
    let verdicts = report
        .pointer("/verdicts")
        .or_else(|| report.pointer("/inspection/verdicts"))
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no verdicts in {text}"));
    let usable = |protocol: &str| {
        verdicts
            .iter()
            .find(|v| v["protocol"] == protocol)
            .map(|v| v["usable"] == true)
            .unwrap()
    };
    assert!(usable("imap"));
    assert!(!usable("smtp"));

    // A wrong password gets Entra's error body with AADSTS50126, trace suffix and ids.
    let refused = curl_token(
        &served,
        &ca,
        &[
            ("grant_type", "password"),
            ("client_id", demo::PUBLIC_APP_ID),
            ("username", demo::USER_UPN),
            ("password", "not-the-password"),
            ("scope", demo::IMAP_SCOPE),
        ],
    );
    assert_eq!(refused["error"], "invalid_grant");
    assert_eq!(refused["error_codes"], serde_json::json!([50126]));
    assert!(
        refused["error_description"]
            .as_str()
            .unwrap()
            .contains("\r\nTrace ID: ")
    );

    let status = served.stop();
    assert!(status.success(), "sandbox serve exited with {status}");
}
