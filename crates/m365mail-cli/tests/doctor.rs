//! `m365mail doctor` against the served sandbox: green for the ready profiles, and each misconfiguration of
//! the scenario matrix — built in the sandbox or in a profile — diagnosed at its step with its remedy.

use std::path::Path;
use std::process::Output;

use m365mail_sandbox::demo;
use serde_json::{Value, json};

mod common;
use common::Served;

fn m365mail(dir: &Path, args: &[&str]) -> Output {
    common::run_cfg(dir, args)
}

/// `doctor --json --no-cache` for `profile` (extra arguments after it): the checks by id, and the exit code.
fn doctor(dir: &Path, profile: &str, extra: &[&str]) -> (Vec<Value>, Option<i32>) {
    let mut all = vec!["--no-cache"];
    all.extend_from_slice(extra);
    doctor_cached(dir, profile, &all)
}

/// `doctor --json` with the profile's token cache.
fn doctor_cached(dir: &Path, profile: &str, extra: &[&str]) -> (Vec<Value>, Option<i32>) {
    let mut args = vec!["--json", "-p", profile, "doctor"];
    args.extend_from_slice(extra);
    let output = m365mail(dir, &args);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", common::describe(&output)));
    assert_eq!(report["profile"], profile);
    (
        report["checks"].as_array().unwrap().clone(),
        output.status.code(),
    )
}

fn status<'a>(checks: &'a [Value], id: &str) -> &'a str {
    checks
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}"))["status"]
        .as_str()
        .unwrap()
}

/// The first failing check: (id, its cause and remedy).
fn first_failure(checks: &[Value]) -> Option<(String, String)> {
    checks.iter().find(|c| c["status"] == "fail").map(|c| {
        (
            c["id"].as_str().unwrap().to_owned(),
            format!("{} | {}", c["cause"], c["remedy"]),
        )
    })
}

/// A POST to the served sandbox's admin API.
fn admin(work: &Path, served: &Served, path: &str, body: Value) {
    common::admin_post(work, served, path, body);
}

/// Adds `[profiles.NAME]`: a copy of `base` with `changes` (a `null` removes a key).
fn add_profile(work: &Path, name: &str, base: &str, changes: Value) {
    let path = work.join("cfg.toml");
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let profiles = config["profiles"].as_table_mut().unwrap();
    let mut profile = profiles[base].as_table().unwrap().clone();
    profile.remove("cache");
    for (key, value) in changes.as_object().unwrap() {
        match value {
            Value::Null => {
                profile.remove(key);
            }
            Value::String(text) => {
                profile.insert(key.clone(), toml::Value::String(text.clone()));
            }
            other => panic!("{other}"),
        }
    }
    profiles.insert(name.to_owned(), toml::Value::Table(profile));
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
}

/// A 0600 file holding `text`.
fn secret_file(work: &Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = work.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn the_ready_profiles_are_green_and_the_table_reads_well() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let _served = Served::start(work);
    for profile in [
        "sandbox-user",
        "sandbox-daemon",
        "sandbox-cert",
        "sandbox-shared",
    ] {
        let (checks, code) = doctor(work, profile, &[]);
        assert_eq!(code, Some(0), "{profile}: {checks:#?}");
        assert_eq!(checks.len(), 13, "{profile}");
        for check in &checks {
            assert!(
                check["status"] == "pass"
                    || (check["id"] == "public-client" && check["status"] == "skip"),
                "{profile}: {check}"
            );
            assert!(check["seconds"].as_f64().unwrap() >= 0.0);
        }
    }
    let table = m365mail(work, &["-p", "sandbox-user", "doctor"]);
    assert!(table.status.success(), "{}", common::describe(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("STEP"), "{text}");
    assert!(text.contains("imap          pass"), "{text}");
    assert!(
        String::from_utf8_lossy(&table.stderr).contains("13 passed, 0 failed"),
        "{}",
        common::describe(&table)
    );
    // --protocols narrows it; the others are skipped, not failed.
    let (checks, code) = doctor(work, "sandbox-user", &["--protocols", "imap"]);
    assert_eq!(code, Some(0));
    assert_eq!(status(&checks, "imap"), "pass");
    assert_eq!(status(&checks, "pop"), "skip");
    assert_eq!(status(&checks, "graph-read"), "skip");
}

/// Each scenario: a profile or a sandbox setting broken, the step doctor names, and a word of its
/// cause or remedy.
#[test]
fn each_misconfiguration_is_named_at_its_step() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let served = Served::start(work);
    let unknown = "0d5e0000-0000-4000-8000-0000000000ff";
    let guid_secret = secret_file(work, "secret-id", "8c5a7e1e-3b2f-4f3c-9a51-2b9e0f6d4c11");
    let wrong_password = secret_file(work, "wrong-password", "not-the-password");
    let mfa_password = secret_file(work, "mfa-password", demo::MFA_USER_PASSWORD);
    let disabled_password = secret_file(work, "disabled-password", demo::DISABLED_USER_PASSWORD);
    let locked_password = secret_file(work, "locked-password", demo::LOCKED_USER_PASSWORD);
    let expired_password = secret_file(
        work,
        "expired-password",
        demo::EXPIRED_PASSWORD_USER_PASSWORD,
    );
    let some_secret = secret_file(
        work,
        "some-secret",
        "Xy8Q~not.a.real.secret.but.shaped.like.one",
    );
    add_profile(
        work,
        "wrong-tenant",
        "sandbox-user",
        json!({ "tenant": unknown }),
    );
    add_profile(
        work,
        "unknown-app",
        "sandbox-user",
        json!({ "client_id": unknown }),
    );
    add_profile(
        work,
        "not-a-guid",
        "sandbox-user",
        json!({ "client_id": "m365mail desktop" }),
    );
    add_profile(
        work,
        "secret-id",
        "sandbox-daemon",
        json!({ "client_secret_file": guid_secret }),
    );
    add_profile(
        work,
        "wrong-password",
        "sandbox-user",
        json!({ "password_file": wrong_password }),
    );
    add_profile(
        work,
        "unknown-user",
        "sandbox-user",
        json!({ "username": "nobody@contoso.onmicrosoft.com" }),
    );
    add_profile(
        work,
        "mfa-user",
        "sandbox-user",
        json!({ "username": demo::MFA_USER_UPN, "password_file": mfa_password }),
    );
    add_profile(
        work,
        "disabled-user",
        "sandbox-user",
        json!({ "username": demo::DISABLED_USER_UPN, "password_file": disabled_password }),
    );
    add_profile(
        work,
        "locked-user",
        "sandbox-user",
        json!({ "username": demo::LOCKED_USER_UPN, "password_file": locked_password }),
    );
    add_profile(
        work,
        "expired-password",
        "sandbox-user",
        json!({ "username": demo::EXPIRED_PASSWORD_USER_UPN, "password_file": expired_password }),
    );
    add_profile(
        work,
        "no-public-flows",
        "sandbox-user",
        json!({ "client_id": demo::CONFIDENTIAL_APP_ID }),
    );
    add_profile(
        work,
        "public-with-secret",
        "sandbox-user",
        json!({ "client_secret_file": some_secret }),
    );
    add_profile(
        work,
        "ropc-common",
        "sandbox-user",
        json!({ "tenant": "common" }),
    );
    add_profile(
        work,
        "daemon-alex",
        "sandbox-daemon",
        json!({ "mailbox": demo::SECOND_USER_UPN }),
    );

    // (profile, extra doctor arguments, the step that fails, a word its cause or remedy holds)
    let profile_scenarios: &[(&str, &[&str], &str, &str)] = &[
        ("wrong-tenant", &[], "tenant", "tenant"),
        ("unknown-app", &[], "app", "700016"),
        ("not-a-guid", &[], "profile", "GUID"),
        ("secret-id", &[], "profile", "Value"),
        ("wrong-password", &[], "credential", "password"),
        ("unknown-user", &[], "credential", "username"),
        ("mfa-user", &[], "credential", "device"),
        ("disabled-user", &[], "credential", "disabled"),
        ("locked-user", &[], "credential", "locked"),
        ("expired-password", &[], "credential", "password"),
        ("no-public-flows", &[], "public-client", "public client"),
        ("public-with-secret", &[], "public-client", "secret"),
        ("ropc-common", &[], "profile", "common"),
        (
            "daemon-alex",
            &["--protocols", "imap"],
            "imap",
            "FullAccess",
        ),
        (
            "sandbox-daemon",
            &["--scope", "https://outlook.office365.com/IMAP.AccessAsApp"],
            "token",
            ".default",
        ),
    ];
    let mut covered = 0;
    for (profile, extra, step, word) in profile_scenarios {
        let (checks, code) = doctor(work, profile, extra);
        let (failed, text) = first_failure(&checks)
            .unwrap_or_else(|| panic!("{profile}: nothing failed: {checks:#?}"));
        assert_eq!(&failed, step, "{profile}: {text}");
        assert!(
            text.to_lowercase().contains(&word.to_lowercase()),
            "{profile}: {word:?} not in {text}"
        );
        assert_ne!(code, Some(0), "{profile}");
        // What comes after a failed sign-in step is skipped, not failed again.
        if ["tenant", "app", "public-client", "credential", "profile"].contains(step) {
            assert_eq!(status(&checks, "imap"), "skip", "{profile}");
        }
        covered += 1;
    }

    // SMTP AUTH off for the whole tenant (Set-TransportConfig), before any mailbox has its own setting.
    admin(
        work,
        &served,
        "exchange/transport-config",
        json!({ "SmtpClientAuthenticationDisabled": true }),
    );
    let (checks, _) = doctor(work, "sandbox-user", &[]);
    admin(
        work,
        &served,
        "exchange/transport-config",
        json!({ "SmtpClientAuthenticationDisabled": false }),
    );
    let (failed, text) = first_failure(&checks).unwrap();
    assert_eq!(failed, "smtp", "{text}");
    assert!(
        text.contains("5.7.139") || text.contains("SmtpClientAuthenticationDisabled"),
        "{text}"
    );
    covered += 1;

    // The app's service principal not registered in Exchange (New-ServicePrincipal never run).
    let principal = demo::CONFIDENTIAL_APP_SERVICE_PRINCIPAL_ID;
    admin(
        work,
        &served,
        &format!("exchange/service-principals/{principal}/remove"),
        json!({}),
    );
    let (checks, _) = doctor(work, "sandbox-daemon", &["--protocols", "imap,pop"]);
    let (failed, text) = first_failure(&checks).unwrap();
    assert_eq!(failed, "imap", "{text}");
    assert!(text.contains("New-ServicePrincipal"), "{text}");
    covered += 1;
    admin(
        work,
        &served,
        "exchange/service-principals",
        json!({ "AppId": demo::CONFIDENTIAL_APP_ID, "ObjectId": principal }),
    );
    for mailbox in [demo::USER_UPN, demo::SHARED_MAILBOX] {
        admin(
            work,
            &served,
            &format!("mailboxes/{mailbox}/permissions"),
            json!({ "User": principal, "AccessRights": ["FullAccess"] }),
        );
    }
    let (checks, code) = doctor(work, "sandbox-daemon", &[]);
    assert_eq!(code, Some(0), "registered again: {checks:#?}");

    // A refresh token revoked (a password change, an admin's revoke): the refresh flow's credential fails.
    let signed_in = m365mail(work, &["-p", "sandbox-user", "token", "get"]);
    assert!(
        signed_in.status.success(),
        "{}",
        common::describe(&signed_in)
    );
    let (_, code) = doctor_cached(
        work,
        "sandbox-user",
        &["--flow", "refresh", "--protocols", "imap"],
    );
    assert_eq!(code, Some(0), "the refresh token works before the revoke");
    admin(
        work,
        &served,
        &format!("users/{}/revoke-refresh-tokens", demo::USER_UPN),
        json!({}),
    );
    let (checks, _) = doctor_cached(
        work,
        "sandbox-user",
        &["--flow", "refresh", "--protocols", "imap"],
    );
    let (failed, text) = first_failure(&checks).unwrap();
    assert_eq!(failed, "credential", "{text}");
    covered += 1;

    // Settings broken in the sandbox, each put back after its check.
    let user = demo::USER_UPN;
    let cas = format!("mailboxes/{user}/cas-mailbox");
    // (what is broken, the Set-CASMailbox switch off, on again, the failing step, a word of its text)
    let sandbox_scenarios = [
        (
            "IMAP off",
            json!({ "ImapEnabled": false }),
            json!({ "ImapEnabled": true }),
            "imap",
            "ImapEnabled",
        ),
        (
            "POP off",
            json!({ "PopEnabled": false }),
            json!({ "PopEnabled": true }),
            "pop",
            "PopEnabled",
        ),
        (
            "SMTP AUTH off for the mailbox",
            json!({ "SmtpClientAuthenticationDisabled": true }),
            json!({ "SmtpClientAuthenticationDisabled": false }),
            "smtp",
            "SmtpClientAuthenticationDisabled",
        ),
    ];
    for (name, broken, fixed, step, word) in &sandbox_scenarios {
        admin(work, &served, &cas, broken.clone());
        let (checks, _) = doctor(work, "sandbox-user", &[]);
        admin(work, &served, &cas, fixed.clone());
        let (failed, text) =
            first_failure(&checks).unwrap_or_else(|| panic!("{name}: nothing failed"));
        assert_eq!(&failed, step, "{name}: {text}");
        assert!(text.contains(word), "{name}: {word:?} not in {text}");
        covered += 1;
    }

    // Consent and app roles withdrawn, the app switched off, the secret expired.
    let public = demo::PUBLIC_APP_ID;
    let confidential = demo::CONFIDENTIAL_APP_ID;
    admin(
        work,
        &served,
        &format!("apps/{public}/consent/revoke"),
        json!({}),
    );
    let (checks, _) = doctor(work, "sandbox-user", &[]);
    assert_eq!(first_failure(&checks).unwrap().0, "consent", "{checks:#?}");
    covered += 1;
    let outlook = "https://outlook.office.com";
    let graph = "https://graph.microsoft.com";
    admin(
        work,
        &served,
        &format!("apps/{public}/consent"),
        json!({ "resource": outlook, "scopes": ["IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send"] }),
    );
    // Graph's permissions not granted: the mail protocols pass, the Graph steps do not.
    let (checks, _) = doctor(work, "sandbox-user", &[]);
    assert_eq!(status(&checks, "imap"), "pass", "{checks:#?}");
    assert_eq!(first_failure(&checks).unwrap().0, "token", "{checks:#?}");
    assert!(
        first_failure(&checks).unwrap().1.contains("graph"),
        "{checks:#?}"
    );
    covered += 1;
    admin(
        work,
        &served,
        &format!("apps/{public}/consent"),
        json!({ "resource": graph, "scopes": ["Mail.Send", "Mail.Read", "Mail.ReadWrite", "User.Read", "User.ReadBasic.All"] }),
    );
    let (_, code) = doctor(work, "sandbox-user", &[]);
    assert_eq!(code, Some(0), "consent restored");

    admin(
        work,
        &served,
        &format!("apps/{confidential}/app-roles/revoke"),
        json!({}),
    );
    let (checks, _) = doctor(work, "sandbox-daemon", &[]);
    assert_eq!(first_failure(&checks).unwrap().0, "token", "{checks:#?}");
    covered += 1;

    admin(
        work,
        &served,
        &format!("apps/{confidential}/enabled"),
        json!({ "enabled": false }),
    );
    let (checks, _) = doctor(work, "sandbox-daemon", &[]);
    assert_eq!(first_failure(&checks).unwrap().0, "app", "{checks:#?}");
    covered += 1;
    admin(
        work,
        &served,
        &format!("apps/{confidential}/enabled"),
        json!({ "enabled": true }),
    );

    admin(
        work,
        &served,
        &format!("apps/{confidential}/secrets/expire"),
        json!({}),
    );
    let (checks, _) = doctor(work, "sandbox-daemon", &[]);
    let (failed, text) = first_failure(&checks).unwrap();
    assert_eq!(failed, "credential", "{text}");
    assert!(
        text.contains("7000222") || text.to_lowercase().contains("expired"),
        "{text}"
    );
    covered += 1;
    eprintln!("doctor scenarios covered: {covered}");
    assert!(covered >= 26);
}
