//! Errors a person can act on, before anything is sent: missing config files, bad CA files, and log output
//! without colour codes when stderr is not a terminal.

use std::process::Command;

use assert_cmd::cargo::CommandCargoExt as _;

mod common;

fn m365mail(dir: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("m365mail").unwrap();
    c.current_dir(dir)
        .env_remove("M365MAIL_CONFIG")
        .env_remove("M365MAIL_PROFILE")
        .env_remove("M365MAIL_PASSWORD")
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
        .env("XDG_DATA_HOME", dir.join("xdg-data"));
    c
}

/// `token get` for the demo public app against a port nobody listens on (a request would fail with exit 7).
fn token_get_nowhere(dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut c = m365mail(dir);
    c.args(extra).args([
        "token",
        "get",
        "--tenant",
        "contoso.onmicrosoft.com",
        "--client-id",
        "c0ffee00-0000-4000-8000-00000000a001",
        "--authority",
        "https://127.0.0.1:9/",
        "--flow",
        "device-code",
        "--no-cache",
    ]);
    c
}

fn run(mut c: Command) -> (i32, String) {
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_missing_config_file_is_said_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = m365mail(dir.path());
    c.args(["--config", "nope.toml", "token", "get"]);
    let (code, text) = run(c);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no config file found at nope.toml"), "{text}");
    // A profile asked for without any config file.
    let mut c = m365mail(dir.path());
    c.args(["-p", "work", "profile", "show"]);
    let (code, text) = run(c);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("no config file found") && text.contains("no profile \"work\""),
        "{text}"
    );
}

#[test]
fn an_empty_or_non_certificate_ca_file_is_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    for file in ["empty.pem", "key.pem"] {
        let mut c = token_get_nowhere(dir.path(), &[]);
        c.args(["--ca-file", file]);
        let (code, text) = run(c);
        assert_eq!(code, 2, "{file}: {text}");
        assert!(text.contains("holds no PEM certificate"), "{file}: {text}");
        assert!(text.contains(file), "{text}");
    }
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = token_get_nowhere(dir.path(), &["--log", "debug"]);
    c.args(["--timeout", "2"]);
    let (code, text) = run(c);
    assert_eq!(code, 7, "{text}");
    assert!(text.contains("DEBUG"), "debug lines were logged: {text}");
    assert!(!text.contains('\x1b'), "{text:?}");
}

/// `token get` for the demo app, no `--flow`, no config: the flow comes from the credential flags.
fn token_get_without_flow(dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut c = m365mail(dir);
    c.args([
        "token",
        "get",
        "--tenant",
        "contoso.onmicrosoft.com",
        "--client-id",
        "c0ffee00-0000-4000-8000-00000000a001",
        "--authority",
        "https://127.0.0.1:9/",
        "--no-cache",
        "--timeout",
        "2",
    ])
    .args(extra)
    .stdin(std::process::Stdio::piped());
    c
}

#[test]
fn the_flow_follows_the_credential_flags() {
    let dir = tempfile::tempdir().unwrap();
    // --password-stdin without --flow: the password flow, said on stderr, and a request is made (the
    // unreachable port then fails with exit 7) — not a ten-minute device-code wait.
    let mut c = token_get_without_flow(
        dir.path(),
        &[
            "--username",
            "adele@contoso.onmicrosoft.com",
            "--password-stdin",
        ],
    );
    c.stdin(std::process::Stdio::null());
    let (code, text) = run(c);
    assert!(
        text.contains("using the password flow (--password-stdin was given)"),
        "{text}"
    );
    assert_ne!(code, 0, "{text}");
    assert!(!text.contains("devicelogin"), "{text}");

    // Nothing to go on and no person at a terminal: an error naming --flow, exit 2, nothing sent.
    let (code, text) = run(token_get_without_flow(dir.path(), &[]));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no flow: pass --flow"), "{text}");

    // M365MAIL_PASSWORD does not turn the default into the password flow.
    let mut c =
        token_get_without_flow(dir.path(), &["--username", "adele@contoso.onmicrosoft.com"]);
    c.env("M365MAIL_PASSWORD", "not-used");
    let (code, text) = run(c);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no flow: pass --flow"), "{text}");

    // A credential flag the chosen flow does not use is an error.
    let (code, text) = run(token_get_without_flow(
        dir.path(),
        &["--flow", "device-code", "--password-stdin"],
    ));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("--password-stdin is not used by the device-code flow"),
        "{text}"
    );
    let (code, text) = run(token_get_without_flow(
        dir.path(),
        &[
            "--flow",
            "client-secret",
            "--certificate",
            "c.pem",
            "--private-key",
            "k.pem",
        ],
    ));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("--certificate is not used by the client-secret flow"),
        "{text}"
    );
}

#[test]
fn an_unknown_issuer_gets_cause_and_remedy_in_text_mode_and_no_library_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let served = common::Served::start(dir.path());
    let identity = served.line["endpoints"]["identity"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut c = m365mail(dir.path());
    c.env_remove("M365MAIL_LOG")
        .args([
            "token",
            "get",
            "--authority",
            &identity,
            "--tenant",
            "contoso.onmicrosoft.com",
        ])
        .args([
            "--client-id",
            "c0ffee00-0000-4000-8000-00000000a001",
            "--flow",
            "password",
        ])
        .args([
            "--username",
            "adele@contoso.onmicrosoft.com",
            "--password-stdin",
            "--no-cache",
        ])
        .stdin(std::process::Stdio::piped());
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"x\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("\n  cause:  the certificate of"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\n  remedy: ") && stderr.contains("--ca-file"),
        "{stderr}"
    );
    // Only m365mail's own lines: no dependency's ERROR log line for a user who did not ask for logs.
    assert!(!stderr.contains("rustls"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

#[test]
fn a_second_sandbox_in_the_same_directory_does_not_take_the_first_ones_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = common::Served::start(dir.path());
    let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let identity = first.line["endpoints"]["identity"]
        .as_str()
        .unwrap()
        .to_owned();
    let serve = |args: &[&str]| {
        let mut c = m365mail(dir.path());
        c.args(["--json", "sandbox", "serve"]).args(args);
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Same CA file and config: refused, nothing overwritten, one JSON line naming the owner.
    let (code, stdout, stderr) = serve(&[
        "--free-ports",
        "--ca-out",
        "ca.pem",
        "--config-out",
        "cfg.toml",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let message = line["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("belongs to the sandbox running as pid") && message.contains(&identity),
        "{message}"
    );
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);

    // A port in use: said once, naming the flag and --free-ports.
    let port = identity
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let (code, _, stderr) = serve(&[
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--pops-port",
        "0",
        "--ca-out",
        "other.pem",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("choose another port with --bind, or pass --free-ports"),
        "{stderr}"
    );

    // Its own files: fine.
    let other = tempfile::tempdir().unwrap();
    let second = common::Served::start(other.path());
    assert_ne!(
        second.line["endpoints"]["identity"],
        first.line["endpoints"]["identity"]
    );
}

#[test]
fn sandbox_tenant_honours_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = m365mail(dir.path());
    c.args(["--json", "sandbox", "tenant"]);
    let out = c.output().unwrap();
    assert!(out.status.success());
    let tenant: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        tenant["tenants"][0]["id"], "72f988bf-0000-4a00-8000-00000000c0de",
        "{tenant}"
    );
}

#[test]
fn a_first_run_without_any_config_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = m365mail(dir.path());
    c.args(["token", "get", "--flow", "device-code"]);
    let (code, text) = run(c);
    assert_eq!(code, 2, "{text}");
    let looked = dir
        .path()
        .join("xdg-config")
        .join("m365mail")
        .join("config.toml");
    assert!(text.contains("no tenant"), "{text}");
    assert!(
        text.contains(&format!("no config file was found at {}", looked.display())),
        "{text}"
    );
}

#[test]
fn a_profile_typed_for_a_command_that_reads_none_is_refused_but_not_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["-p", "work", "sandbox", "tenant"][..],
        &["sandbox", "tenant", "--config", "cfg.toml"],
        &["demo", "-p", "work"],
    ] {
        let mut c = m365mail(dir.path());
        c.args(args);
        let (code, text) = run(c);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(
            text.contains("is not used by `m365mail"),
            "{args:?}: {text}"
        );
    }
    let mut c = m365mail(dir.path());
    c.env("M365MAIL_PROFILE", "work")
        .args(["sandbox", "tenant"]);
    let (code, text) = run(c);
    assert_eq!(code, 0, "{text}");
}
