//! `m365mail setup` from an empty tenant (`sandbox serve --empty-tenant`), as an administrator runs it: a dry
//! run changes nothing, the first run creates the app registration, its secret, service principal and
//! consent and writes the profile and the Exchange script, a second run changes nothing; doctor then names
//! the Exchange step still missing, and after the script's steps (through `m365mail sandbox exchange`) it is
//! green.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

mod common;
use common::Served;

fn m365mail(dir: &Path, args: &[&str]) -> Output {
    common::run(dir, args)
}

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", common::describe(output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", common::describe(output)))
}

fn setup(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "--json",
        "--config",
        "cfg.toml",
        "-p",
        "sandbox-admin",
        "setup",
        "--flow",
        "password",
        "--mailbox",
        "adele@contoso.onmicrosoft.com",
    ];
    args.extend_from_slice(extra);
    json(&m365mail(dir, &args))
}

/// The Exchange half of setup's script, through `m365mail sandbox exchange` (New-ServicePrincipal with the
/// enterprise application's object id, Add-MailboxPermission FullAccess for Adele's mailbox).
fn exchange_steps(work: &Path, url: &str, app_id: &str, principal: &str) {
    for args in [
        [
            "new-service-principal",
            "--app-id",
            app_id,
            "--object-id",
            principal,
        ],
        [
            "add-mailbox-permission",
            "--mailbox",
            "adele@contoso.onmicrosoft.com",
            "--user",
            principal,
        ],
    ] {
        let mut full = vec!["sandbox", "exchange", "--url", url, "--ca-file", "ca.pem"];
        full.extend(args);
        let output = m365mail(work, &full);
        assert!(output.status.success(), "{}", common::describe(&output));
    }
}

fn doctor(dir: &Path) -> Vec<Value> {
    let output = m365mail(
        dir,
        &[
            "--json",
            "--config",
            "cfg.toml",
            "-p",
            "m365mail",
            "doctor",
            "--no-cache",
        ],
    );
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", common::describe(&output)));
    report["checks"].as_array().unwrap().clone()
}

fn failing(checks: &[Value]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn setup_from_an_empty_tenant_to_a_green_doctor() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let served = Served::start_with(work, &["--empty-tenant"]);
    let url = served.line["endpoints"]["identity"]
        .as_str()
        .unwrap()
        .to_owned();

    // A dry run says what it would do, and does nothing: the next dry run says the same.
    let plan = setup(work, &["--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    let actions: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(actions[0], "create application \"m365mail\"");
    assert!(
        actions
            .iter()
            .any(|a| a.starts_with("grant IMAP.AccessAsApp")),
        "{actions:?}"
    );
    assert_eq!(setup(work, &["--dry-run"])["actions"], plan["actions"]);
    assert!(!work.join("m365mail.secret").exists());

    // The run itself; then nothing is left to change.
    let done = setup(work, &[]);
    assert_eq!(done["changed"], true);
    assert_eq!(done["actions"], plan["actions"]);
    let app_id = done["app_id"].as_str().unwrap().to_owned();
    let principal = done["service_principal_id"].as_str().unwrap().to_owned();
    assert_ne!(app_id, principal);
    let secret = work.join("m365mail.secret");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = setup(work, &[]);
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["app_id"], app_id.as_str());
    // The secret is never printed without --show-secret.
    let secret_text = std::fs::read_to_string(&secret).unwrap();
    assert!(!done.to_string().contains(secret_text.trim()));

    // The script names the app and its Enterprise application, not the registration's object id.
    let script = std::fs::read_to_string(work.join("m365mail-exchange.ps1")).unwrap();
    assert!(
        script.contains(&format!(
            "New-ServicePrincipal -AppId '{app_id}' -ObjectId '{principal}'"
        )),
        "{script}"
    );
    assert!(!script.contains(done["object_id"].as_str().unwrap()));

    // Before the Exchange steps: doctor passes the Entra side and fails the protocols, naming the causes.
    let checks = doctor(work);
    assert_eq!(failing(&checks), ["imap", "pop", "smtp"], "{checks:#?}");
    let imap = checks.iter().find(|c| c["id"] == "imap").unwrap();
    assert!(
        imap["remedy"]
            .as_str()
            .unwrap()
            .contains("New-ServicePrincipal"),
        "{imap}"
    );

    // The script's steps, through the sandbox's Exchange surface; then all green.
    exchange_steps(work, &url, &app_id, &principal);
    let checks = doctor(work);
    assert!(failing(&checks).is_empty(), "{checks:#?}");
    assert_eq!(checks.iter().filter(|c| c["status"] == "pass").count(), 12);

    // --admin: an administrator reads the registration. Everything granted, the new secret far from its end.
    let config = std::fs::read_to_string(work.join("cfg.toml")).unwrap();
    let mut table: toml::Table = config.parse().unwrap();
    let mut admin = table["profiles"]["sandbox-admin"]
        .as_table()
        .unwrap()
        .clone();
    admin.insert("flow".into(), toml::Value::String("password".into()));
    admin.remove("cache");
    table["profiles"]
        .as_table_mut()
        .unwrap()
        .insert("admin-pw".into(), toml::Value::Table(admin));
    std::fs::write(work.join("cfg.toml"), toml::to_string(&table).unwrap()).unwrap();
    let admin_checks = |work: &Path| {
        let output = m365mail(
            work,
            &[
                "--json",
                "--config",
                "cfg.toml",
                "-p",
                "m365mail",
                "doctor",
                "--no-cache",
                "--admin",
                "admin-pw",
            ],
        );
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", common::describe(&output)));
        report["checks"].as_array().unwrap().clone()
    };
    let status = |checks: &[Value], id: &str| {
        checks.iter().find(|c| c["id"] == id).unwrap()["status"].clone()
    };
    let checks = admin_checks(work);
    assert_eq!(checks.len(), 15, "{checks:#?}");
    assert_eq!(status(&checks, "registration"), "pass", "{checks:#?}");
    assert_eq!(status(&checks, "expiry"), "pass", "{checks:#?}");
    // Consent for the application permissions withdrawn: the registration step names them.
    let admin_api = |path: &str, body: Value| common::admin_post(work, &served, path, body);
    admin_api(
        &format!("apps/{app_id}/app-roles/revoke"),
        serde_json::json!({}),
    );
    let checks = admin_checks(work);
    assert_eq!(status(&checks, "registration"), "fail", "{checks:#?}");
    let registration = checks.iter().find(|c| c["id"] == "registration").unwrap();
    assert!(
        registration["cause"]
            .as_str()
            .unwrap()
            .contains("IMAP.AccessAsApp"),
        "{registration}"
    );
    // The secret expired: the credential step fails, and so does the expiry step.
    admin_api(
        &format!("apps/{app_id}/secrets/expire"),
        serde_json::json!({}),
    );
    let checks = admin_checks(work);
    assert_eq!(status(&checks, "credential"), "fail", "{checks:#?}");
    assert_eq!(status(&checks, "expiry"), "fail", "{checks:#?}");
}

/// `--credential certificate`: a certificate generated here, added to the registration's key credentials;
/// the written profile signs its client assertions with it, and doctor goes green once Exchange knows it.
#[test]
fn setup_with_a_certificate_credential() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let served = Served::start_with(work, &["--empty-tenant"]);
    let url = served.line["endpoints"]["identity"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = setup(
        work,
        &[
            "--access",
            "app-only",
            "--credential",
            "certificate",
            "--name",
            "daemon",
            "--write-profile",
            "daemon",
        ],
    );
    assert!(
        done["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "add a certificate"),
        "{done}"
    );
    assert!(
        !done["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "add a client secret"),
        "{done}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(work.join("daemon.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(!work.join("daemon.secret").exists());
    let config = std::fs::read_to_string(work.join("cfg.toml")).unwrap();
    assert!(config.contains("flow = \"client-certificate\""), "{config}");
    assert_eq!(
        setup(
            work,
            &[
                "--access",
                "app-only",
                "--credential",
                "certificate",
                "--name",
                "daemon",
                "--write-profile",
                "daemon"
            ]
        )["changed"],
        false
    );
    let app_id = done["app_id"].as_str().unwrap().to_owned();
    let principal = done["service_principal_id"].as_str().unwrap().to_owned();
    exchange_steps(work, &url, &app_id, &principal);
    let output = m365mail(
        work,
        &[
            "--json",
            "--config",
            "cfg.toml",
            "-p",
            "daemon",
            "doctor",
            "--no-cache",
        ],
    );
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", common::describe(&output)));
    let checks = report["checks"].as_array().unwrap();
    assert!(failing(checks).is_empty(), "{checks:#?}");
    let credential = checks.iter().find(|c| c["id"] == "credential").unwrap();
    assert!(
        credential["cause"]
            .as_str()
            .unwrap()
            .contains("client-certificate"),
        "{credential}"
    );
}
