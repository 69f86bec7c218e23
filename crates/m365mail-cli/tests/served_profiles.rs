//! The newcomer's path, end to end: `m365mail sandbox serve --free-ports --config-out cfg.toml --json`, then
//! `m365mail --config cfg.toml -p <profile> token get` for every written profile, with nothing else — the
//! device code approved through the served admin API over HTTPS.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt as _;
use m365mail_sandbox::demo;

mod common;
use common::Served;
use serde_json::Value;

fn token_get(config: &Path, profile: &str) -> Command {
    let mut c = Command::cargo_bin("m365mail").unwrap();
    c.args(["--json", "--config"])
        .arg(config)
        .args(["-p", profile, "token", "get"])
        .env_remove("M365MAIL_PASSWORD")
        .env_remove("M365MAIL_CLIENT_SECRET")
        .env_remove("M365MAIL_PROFILE")
        .env("M365MAIL_LOG", "error")
        .env("M365MAIL_NO_BROWSER", "1")
        .stdin(Stdio::null());
    c
}

fn json_of(output: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn served_sandbox_config_profiles_work_with_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path());
    let line = &served.line;

    // One line: absolute paths, the identity URL, no mail endpoint that is not served.
    let config = PathBuf::from(line["config_file"].as_str().unwrap());
    let ca = PathBuf::from(line["ca_file"].as_str().unwrap());
    assert!(config.is_absolute() && ca.is_absolute(), "{line}");
    assert_eq!(config, dir.path().canonicalize().unwrap().join("cfg.toml"));
    assert_eq!(line["tenant"], demo::TENANT_ID);
    let identity = line["endpoints"]["identity"].as_str().unwrap();
    assert!(identity.starts_with("https://127.0.0.1:"), "{line}");
    assert_ne!(
        identity, "https://127.0.0.1:8443/",
        "--free-ports picks a free port"
    );
    // The identity listener, POP3 and IMAP over TLS, plain IMAP with STARTTLS; nothing that is not served.
    let pop3s = line["endpoints"]["pop3s"].as_str().unwrap().to_owned();
    assert!(
        pop3s.starts_with("127.0.0.1:") && !pop3s.ends_with(":1995"),
        "{line}"
    );
    let imaps = line["endpoints"]["imaps"].as_str().unwrap().to_owned();
    assert!(
        imaps.starts_with("127.0.0.1:") && !imaps.ends_with(":1993"),
        "{line}"
    );
    assert!(
        line["endpoints"]["imap"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{line}"
    );
    for service in ["smtp", "smtps"] {
        assert!(
            line["endpoints"][service]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{line}"
        );
    }
    assert_eq!(line["endpoints"].as_object().unwrap().len(), 6, "{line}");

    // The config holds no secret; the secret files next to it are 0600.
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains(demo::USER_PASSWORD) && !text.contains(demo::CONFIDENTIAL_APP_SECRET));
    for name in ["cfg.adele.password", "cfg.daemon.secret", "cfg.daemon.key"] {
        assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
    }

    // Password, client secret, certificate: each profile has its own token cache, so each runs its own flow
    // the first time (the cert profile's token is never the secret profile's) and is served from its cache
    // the second time.
    for (profile, flow, account, origin) in [
        ("sandbox-user", "password", demo::USER_UPN, "flow"),
        ("sandbox-daemon", "client-secret", "app", "flow"),
        ("sandbox-cert", "client-certificate", "app", "flow"),
        ("sandbox-shared", "password", demo::USER_UPN, "flow"),
        ("sandbox-cert", "client-certificate", "app", "cache"),
    ] {
        let output = token_get(&config, profile).output().unwrap();
        let json = json_of(&output);
        assert!(output.status.success(), "{profile}: {json}");
        assert_eq!(json["flow"], flow, "{profile}: {json}");
        assert_eq!(
            json["account"],
            account.to_ascii_lowercase(),
            "{profile}: {json}"
        );
        assert_eq!(json["origin"], origin, "{profile}: {json}");
    }

    // One sign-in serves every protocol: after sandbox-user's IMAP sign-in, an SMTP token comes from the
    // account's refresh token.
    let output = token_get(&config, "sandbox-user")
        .args(["--flow", "refresh", "--target", "smtp"])
        .output()
        .unwrap();
    let json = json_of(&output);
    assert!(output.status.success(), "{json}");
    assert_eq!(json["origin"], "refresh", "{json}");
    assert!(
        json["scope"].as_str().unwrap().contains("SMTP.Send"),
        "{json}"
    );
    // --no-cache never claims a token was cached.
    let output = token_get(&config, "sandbox-user")
        .arg("--no-cache")
        .output()
        .unwrap();
    let json = json_of(&output);
    assert_eq!(
        (json["origin"].as_str(), json["cache"].as_str()),
        (Some("flow"), None),
        "{json}"
    );
    assert_eq!(
        json["refresh_token"], "received, not kept (--no-cache)",
        "{json}"
    );
    let mut text = token_get(&config, "sandbox-user");
    let text = text.arg("--no-cache").env_remove("M365MAIL_LOG");
    let args: Vec<_> = text
        .get_args()
        .filter(|a| *a != "--json")
        .map(|a| a.to_owned())
        .collect();
    let output = Command::cargo_bin("m365mail")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(!shown.contains("cached"), "{shown}");
    assert!(shown.contains("cache:          off"), "{shown}");

    // Device code: the prompt goes to stderr; the code is approved through the served admin API (--force:
    // sign in even if this profile's cache held a token).
    let mut child = token_get(&config, "sandbox-device")
        .arg("--force")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut message = String::new();
    stderr.read_line(&mut message).unwrap();
    let user_code = message
        .split("enter the code ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no user code in {message:?}"))
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ca_pem = std::fs::read(&ca).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only(vec![reqwest::Certificate::from_pem(&ca_pem).unwrap()])
        .build()
        .unwrap();
    let url = format!("{identity}_sandbox/admin/device-codes/{user_code}/approve");
    let approved: Value = runtime.block_on(async {
        let reply = http
            .post(&url)
            .json(&serde_json::json!({ "username": demo::USER_UPN }))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        reply.json().await.unwrap()
    });
    assert_eq!(approved["status"], "approved", "{approved}");
    let output = child.wait_with_output().unwrap();
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    let json = json_of(&output);
    assert!(output.status.success(), "{json} {rest}");
    assert_eq!(json["flow"], "device-code");
    assert_eq!(json["signed_in_as"], demo::USER_UPN.to_ascii_lowercase());

    // `profile show` resolves what the profile points at without reading a secret.
    let output = Command::cargo_bin("m365mail")
        .unwrap()
        .args(["--json", "--config"])
        .arg(&config)
        .args(["-p", "sandbox-daemon", "profile", "show"])
        .output()
        .unwrap();
    let shown = json_of(&output);
    assert_eq!(shown["mailbox"], demo::USER_UPN, "{shown}");
    assert_eq!(
        shown["pop"]["endpoint"],
        format!("{pop3s} (implicit)"),
        "{shown}"
    );
    assert_eq!(shown["pop"]["source"], "profile", "{shown}");
    // What the sandbox does not serve is not invented from the custom authority's host.
    assert_eq!(
        shown["imap"]["endpoint"],
        format!("{imaps} (implicit)"),
        "{shown}"
    );
    let smtp = line["endpoints"]["smtp"].as_str().unwrap();
    assert_eq!(
        shown["smtp"]["endpoint"],
        format!("{smtp} (starttls)"),
        "{shown}"
    );
    assert_eq!(shown["graph_url"]["source"], "not configured", "{shown}");
    assert_eq!(shown["graph_url"]["endpoint"], Value::Null, "{shown}");
    assert_eq!(shown["missing_files"], serde_json::json!([]), "{shown}");

    // The certificate profile shows its files; a missing one is a warning, and an error with --check.
    let cert = |extra: &[&str]| {
        Command::cargo_bin("m365mail")
            .unwrap()
            .arg("--config")
            .arg(&config)
            .args(["-p", "sandbox-cert", "profile", "show"])
            .args(extra)
            .output()
            .unwrap()
    };
    let output = cert(&[]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("certificate: ") && text.contains("cfg.daemon.crt"),
        "{text}"
    );
    assert!(
        text.contains("private key: ") && text.contains("cfg.daemon.key"),
        "{text}"
    );
    assert!(text.contains("graph:      not configured"), "{text}");
    std::fs::rename(
        dir.path().join("cfg.daemon.key"),
        dir.path().join("moved.key"),
    )
    .unwrap();
    let output = cert(&[]);
    assert!(output.status.success());
    let warning = String::from_utf8_lossy(&output.stderr);
    assert!(
        warning.contains("warning: private_key") && warning.contains("does not exist"),
        "{warning}"
    );
    assert_eq!(cert(&["--check"]).status.code(), Some(2));
    std::fs::rename(
        dir.path().join("moved.key"),
        dir.path().join("cfg.daemon.key"),
    )
    .unwrap();
    assert_eq!(cert(&["--check"]).status.code(), Some(0));
    assert_eq!(
        shown["authority"],
        format!("{identity}{}/", demo::TENANT_ID)
    );
    assert!(
        shown["secret_from"]
            .as_str()
            .unwrap()
            .starts_with("client_secret_file "),
        "{shown}"
    );
}
