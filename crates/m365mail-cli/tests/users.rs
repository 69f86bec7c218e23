//! `m365mail users` as a user runs it against a served sandbox with the `--config-out` profiles: the tenant's
//! users through Graph's `GET /users`, every page, as a table or JSON; and Graph's refusals with their remedy.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use assert_cmd::cargo::CommandCargoExt as _;
use m365mail_sandbox::demo;
use serde_json::Value;

mod common;
use common::{Served, describe};

fn m365mail(dir: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("m365mail")
        .unwrap()
        .current_dir(dir)
        .args(["--config", "cfg.toml"])
        .args(args)
        .env_remove("M365MAIL_PROFILE")
        .env("M365MAIL_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn lists_the_tenants_users_app_only_and_delegated_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let _served = Served::start(work);

    // App-only (User.Read.All): every user, one page of two at a time.
    let json = m365mail(
        work,
        &["--json", "-p", "sandbox-daemon", "users", "--top", "2"],
    );
    assert!(json.status.success(), "{}", describe(&json));
    let users: Vec<Value> = serde_json::from_slice(&json.stdout).unwrap();
    let upns: Vec<&str> = users
        .iter()
        .map(|u| u["userPrincipalName"].as_str().unwrap())
        .collect();
    assert!(
        upns.contains(&demo::USER_UPN) && upns.contains(&demo::SECOND_USER_UPN),
        "{upns:?}"
    );
    let mut unique = upns.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), upns.len(), "no user twice across pages");
    assert!(upns.len() > 2, "more than one page");

    // Delegated (User.ReadBasic.All), a filter and the columns asked for, as a table.
    let table = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "users",
            "--filter",
            "startswith(displayName,'Adele')",
            "--select",
            "displayName,userPrincipalName",
        ],
    );
    assert!(table.status.success(), "{}", describe(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("displayName") && lines[0].contains("userPrincipalName"));
    assert!(lines[1].starts_with(demo::USER_DISPLAY_NAME) && lines[1].contains(demo::USER_UPN));

    // Refusals: Graph's error becomes a cause and a remedy, with its exit code.
    let bad_filter = m365mail(
        work,
        &[
            "-p",
            "sandbox-daemon",
            "users",
            "--filter",
            "endswith(mail,'x')",
        ],
    );
    assert_eq!(
        bad_filter.status.code(),
        Some(2),
        "{}",
        describe(&bad_filter)
    );
    assert!(String::from_utf8_lossy(&bad_filter.stderr).contains("request-id"));
    let control = m365mail(
        work,
        &["-p", "sandbox-daemon", "users", "--filter", "a\r\nb"],
    );
    assert_eq!(control.status.code(), Some(2), "{}", describe(&control));
    assert!(control.stderr.starts_with(b"m365mail: --filter"));
}
