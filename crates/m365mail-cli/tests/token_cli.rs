//! `m365mail token ...` end to end against an in-process sandbox (HTTPS, CA written to a file).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use m365mail_sandbox::{AdminHandle, Sandbox, SandboxConfig, demo};
use serde_json::Value;

struct Env {
    sbx: Sandbox,
    dir: tempfile::TempDir,
    ca: PathBuf,
    cache: PathBuf,
}

async fn env() -> Env {
    let mut config = SandboxConfig::default();
    // The CLI polls in real time: keep the device-code interval short.
    config.lifetimes.device_poll_interval = std::time::Duration::from_secs(1);
    // One-hour tokens, so `--margin 4000` is deterministic (the default is Entra's random 60-90 minutes).
    config.lifetimes.access_token =
        m365mail_sandbox::AccessTokenLifetime::Fixed(std::time::Duration::from_secs(3600));
    // Under CPU starvation (parallel tests, several CLI processes) a handshake can be slow.
    config.tls_handshake_timeout = std::time::Duration::from_secs(120);
    let sbx = Sandbox::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // An empty config file, written once before any CLI process starts.
    std::fs::write(dir.path().join("none.toml"), "").unwrap();
    let ca = dir.path().join("ca.pem");
    sbx.write_ca(&ca).unwrap();
    let cache = dir.path().join("cache/tokens.json");
    Env {
        sbx,
        dir,
        ca,
        cache,
    }
}

impl Env {
    /// `m365mail token get` against the sandbox with an isolated config and cache.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("m365mail").unwrap();
        c.env("M365MAIL_CONFIG", self.dir.path().join("none.toml"))
            .env_remove("M365MAIL_PROFILE")
            .env_remove("M365MAIL_PASSWORD")
            .env_remove("M365MAIL_CLIENT_SECRET")
            .env_remove("M365MAIL_REFRESH_TOKEN")
            .env("M365MAIL_LOG", "error")
            .env_remove("M365MAIL_HTTP_TIMEOUT")
            .args(args);
        c
    }

    fn get(&self, extra: &[&str]) -> Command {
        let base = self.sbx.base_url().to_string();
        let mut args = vec![
            "--json",
            "token",
            "get",
            "--authority",
            &base,
            "--ca-file",
            self.ca.to_str().unwrap(),
            "--tenant",
            demo::TENANT_ID,
            "--cache",
            self.cache.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.cmd(&args)
    }

    /// `token get --flow <flow> --client-id <client_id>`, then `extra`.
    fn flow(&self, flow: &str, client_id: &str, extra: &[&str]) -> Command {
        self.get(&[&["--flow", flow, "--client-id", client_id], extra].concat())
    }

    /// `token get` with `flow` for the public demo app signing in as `username`, then `extra`.
    fn public(&self, flow: &str, username: &str, extra: &[&str]) -> Command {
        self.flow(
            flow,
            demo::PUBLIC_APP_ID,
            &[&["--username", username], extra].concat(),
        )
    }

    /// Runs `act` on the first pending device code from a background task, polling for up to ten
    /// seconds; the task answers whether a device code turned up.
    fn on_device_code(
        &self,
        act: impl FnOnce(&AdminHandle, &str) + Send + 'static,
    ) -> tokio::task::JoinHandle<bool> {
        let admin = self.sbx.admin().clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                if let Some(code) = admin.pending_device_codes().into_iter().next() {
                    act(&admin, &code.user_code);
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            false
        })
    }
}

/// Runs the (blocking) command off the async workers so the in-process sandbox keeps serving.
async fn run(mut cmd: Command) -> (i32, Value, String) {
    tokio::task::spawn_blocking(move || {
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let json = stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null);
        (
            out.status.code().unwrap_or(-1),
            json,
            format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        )
    })
    .await
    .unwrap()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_flow_caches_reuses_and_inspects() {
    let e = env().await;
    let mut c = e.public("password", demo::USER_UPN, &[]);
    c.env("M365MAIL_PASSWORD", demo::USER_PASSWORD);
    let (code, json, all) = run(c).await;
    assert_eq!(code, 0, "{all}");
    assert_eq!(json["origin"], "flow");
    assert_eq!(json["has_refresh_token"], true);
    assert!(
        json.get("access_token").is_none(),
        "the token is printed only with --show-token"
    );
    assert_eq!(mode(&e.cache), 0o600);
    assert_eq!(mode(e.cache.parent().unwrap()), 0o700);

    // Second run: served from the cache, no password needed, no token request.
    let before = e.sbx.admin().stats().endpoint("token");
    let (code, json, all) = run(e.public("password", demo::USER_UPN, &["--show-token"])).await;
    assert_eq!(code, 0, "{all}");
    assert_eq!(json["origin"], "cache");
    assert_eq!(e.sbx.admin().stats().endpoint("token"), before);
    let token = json["access_token"].as_str().unwrap().to_owned();

    // A margin longer than the token's lifetime: the cached access token is stale, the refresh token is used.
    let (code, json, all) = run(e.public("password", demo::USER_UPN, &["--margin", "4000"])).await;
    assert_eq!(code, 0, "{all}");
    assert_eq!(json["origin"], "refresh");

    // --flow refresh redeems the cached refresh token.
    let (code, json, all) = run(e.public("refresh", demo::USER_UPN, &[])).await;
    assert_eq!(code, 0, "{all}");
    assert_eq!(json["origin"], "refresh");

    // inspect reads stdin.
    let mut c = e.cmd(&["--json", "token", "inspect"]);
    c.write_stdin(token.clone());
    let (code, json, all) = run(c).await;
    assert_eq!(code, 0, "{all}");
    let imap = json["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["protocol"] == "imap")
        .unwrap();
    assert_eq!(imap["usable"], true, "{json}");
    // ... or a file; never argv (refused without echoing the value).
    let file = e.dir.path().join("token.txt");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let (code, json, all) = run(e.cmd(&[
        "--json",
        "token",
        "inspect",
        "--file",
        file.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 0, "{all}");
    assert!(json["verdicts"].is_array(), "{json}");
    let (code, _, all) = run(e.cmd(&["token", "inspect", &token])).await;
    assert_eq!(code, 2, "{all}");
    assert!(all.contains("not accepted on the command line"), "{all}");
    assert!(!all.contains(&token[..20]), "{all}");

    // clear.
    let (code, json, _) = run(e.cmd(&[
        "--json",
        "token",
        "clear",
        "--all",
        "--cache",
        e.cache.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 0);
    assert_eq!(json["removed"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_by_cause() {
    let e = env().await;
    // Wrong password via --password-stdin: exit 3 with the AADSTS code in the JSON error.
    let mut c = e.public(
        "password",
        demo::USER_UPN,
        &["--password-stdin", "--no-cache"],
    );
    c.write_stdin("not-the-password\n");
    let (code, json, all) = run(c).await;
    assert_eq!(code, 3, "{all}");
    assert_eq!(json["error"]["error_codes"][0], 50126, "{json}");
    assert!(!all.contains("not-the-password"));
    // MFA: switch flow, 6.
    let mut c = e.public("password", demo::MFA_USER_UPN, &["--no-cache"]);
    c.env("M365MAIL_PASSWORD", demo::MFA_USER_PASSWORD);
    assert_eq!(run(c).await.0, 6);
    // Disabled user: admin, 4.
    let mut c = e.public("password", demo::DISABLED_USER_UPN, &["--no-cache"]);
    c.env("M365MAIL_PASSWORD", demo::DISABLED_USER_PASSWORD);
    assert_eq!(run(c).await.0, 4);
    // Secret ID instead of value: connector config, 5.
    let secret_file = e.dir.path().join("secret");
    std::fs::write(
        &secret_file,
        format!("{}\n", demo::CONFIDENTIAL_APP_SECRET_ID),
    )
    .unwrap();
    let with_secret_file = || {
        e.flow(
            "client-secret",
            demo::CONFIDENTIAL_APP_ID,
            &["--secret-file", secret_file.to_str().unwrap(), "--no-cache"],
        )
    };
    // A secret file readable by others is refused before anything is sent (usage, 2).
    let (code, _, all) = run(with_secret_file()).await;
    assert_eq!(code, 2, "{all}");
    assert!(all.contains("chmod 600"), "{all}");
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (code, json, all) = run(with_secret_file()).await;
    assert_eq!(code, 5, "{all}");
    assert!(
        json["error"]["remedy"]
            .as_str()
            .unwrap()
            .contains("secret's ID"),
        "{json}"
    );
    // `common` with ROPC: refused before any request, 5.
    let before = e.sbx.admin().stats().total_requests;
    let base = e.sbx.base_url().to_string();
    // ROPC for the demo user without `--ca-file` (so the system roots), in `tenant`.
    let without_ca = |tenant: &str| {
        e.cmd(&[
            "token",
            "get",
            "--authority",
            &base,
            "--tenant",
            tenant,
            "--client-id",
            demo::PUBLIC_APP_ID,
            "--flow",
            "password",
            "--username",
            demo::USER_UPN,
            "--no-cache",
        ])
    };
    assert_eq!(run(without_ca("common")).await.0, 5);
    assert_eq!(e.sbx.admin().stats().total_requests, before);
    // Untrusted CA: TLS failure is connector configuration, 5.
    let mut c = without_ca(demo::TENANT_ID);
    c.arg("--password-stdin");
    c.write_stdin("x\n");
    let (code, _, all) = run(c).await;
    assert_eq!(code, 5, "{all}");
    assert!(all.contains("TLS"), "{all}");
    // Usage: no client id, 2.
    assert_eq!(
        run(e.cmd(&["token", "get", "--tenant", demo::TENANT_ID]))
            .await
            .0,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_only_flows_from_a_config_profile() {
    let e = env().await;
    let cert = demo::certificate();
    let cert_path = e.dir.path().join("cert.pem");
    let key_path = e.dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert.certificate_pem).unwrap();
    std::fs::write(&key_path, &cert.private_key_pem).unwrap();
    let config = e.dir.path().join("config.toml");
    std::fs::write(&config, format!(
        "default_profile = \"daemon\"\n\n[profiles.daemon]\ntenant = \"{tenant}\"\nclient_id = \"{app}\"\nflow = \"client-certificate\"\nauthority = \"{base}\"\nca_file = \"{ca}\"\ncertificate = \"{cert}\"\nprivate_key = \"{key}\"\nassertion_alg = \"PS256\"\ntarget = \"smtp\"\ncache = \"{cache}\"\n\n[profiles.secret]\ntenant = \"{tenant}\"\nclient_id = \"{app}\"\nflow = \"client-secret\"\nauthority = \"{base}\"\nca_file = \"{ca}\"\ntarget = \"graph\"\ncache = \"{cache}\"\n",
        tenant = demo::TENANT_ID, app = demo::CONFIDENTIAL_APP_ID, base = e.sbx.base_url(), ca = e.ca.display(),
        cert = cert_path.display(), key = key_path.display(), cache = e.cache.display(),
    )).unwrap();
    let mut c = e.cmd(&["--json", "token", "get", "--show-token"]);
    c.env("M365MAIL_CONFIG", &config);
    let (code, json, all) = run(c).await;
    assert_eq!(code, 0, "{all}");
    assert_eq!(json["flow"], "client-certificate");
    assert_eq!(json["account"], "app");
    let mut c = e.cmd(&["--json", "token", "inspect", "-"]);
    c.write_stdin(json["access_token"].as_str().unwrap().to_owned());
    let (_, inspected, _) = run(c).await;
    let smtp = inspected["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["protocol"] == "smtp")
        .unwrap();
    assert_eq!(smtp["usable"], true, "{inspected}");

    let mut c = e.cmd(&["--json", "--profile", "secret", "token", "get"]);
    c.env("M365MAIL_CONFIG", &config)
        .env("M365MAIL_CLIENT_SECRET", demo::CONFIDENTIAL_APP_SECRET);
    let (code, json, all) = run(c).await;
    assert_eq!(code, 0, "{all}");
    assert_eq!(json["flow"], "client-secret");
    assert!(
        json["scope"].as_str().unwrap_or("").contains("graph") || json["scope"].is_null(),
        "{json}"
    );
    // Text output never prints the token unless asked.
    let mut c = e.cmd(&["--profile", "secret", "token", "get"]);
    c.env("M365MAIL_CONFIG", &config)
        .env("M365MAIL_CLIENT_SECRET", demo::CONFIDENTIAL_APP_SECRET);
    let (code, _, all) = run(c).await;
    assert_eq!(code, 0, "{all}");
    assert!(all.contains("from cache"), "{all}");
    assert!(!all.contains("eyJ"), "{all}");
    // Secrets in the config file are refused.
    std::fs::write(
        &config,
        "[profiles.a]\ntenant = \"x.com\"\nclient_secret = \"s\"\n",
    )
    .unwrap();
    let mut c = e.cmd(&["token", "get"]);
    c.env("M365MAIL_CONFIG", &config);
    let (code, _, all) = run(c).await;
    assert_eq!(code, 2, "{all}");
    assert!(all.contains("holds a secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_flow_shows_the_message_and_polls_until_approved() {
    let e = env().await;
    let cmd = e.public("device-code", demo::USER_UPN, &["--target", "smtp"]);
    let approver = e.on_device_code(|admin, user_code| {
        admin
            .approve_device_code(user_code, demo::USER_UPN)
            .unwrap();
    });
    let (code, json, all) = run(cmd).await;
    assert!(approver.await.unwrap(), "a device code was requested");
    assert_eq!(code, 0, "{all}");
    assert!(
        all.contains("enter the code"),
        "the server's message is shown: {all}"
    );
    assert_eq!(json["flow"], "device-code");
    assert_eq!(
        json["signed_in_as"],
        demo::USER_UPN.to_ascii_lowercase(),
        "{json}"
    );
    assert!(
        json["scope"]
            .as_str()
            .unwrap_or_default()
            .contains("SMTP.Send"),
        "{json}"
    );
    // Declined: flow state, exit 8.
    let cmd = e.public("device-code", demo::SECOND_USER_UPN, &["--no-cache"]);
    let decliner = e.on_device_code(|admin, user_code| {
        admin.decline_device_code(user_code).unwrap();
    });
    let (code, json, all) = run(cmd).await;
    decliner.await.unwrap();
    assert_eq!(code, 8, "{all}");
    assert_eq!(json["error"]["error"], "authorization_declined", "{json}");

    // Another person completes the sign-in asked for --username alex: refused (exit 3), not cached as alex.
    let cmd = e.public("device-code", demo::SECOND_USER_UPN, &[]);
    let approver = e.on_device_code(|admin, user_code| {
        admin
            .approve_device_code(user_code, demo::USER_UPN)
            .unwrap();
    });
    let (code, json, all) = run(cmd).await;
    approver.await.unwrap();
    assert_eq!(code, 3, "{all}");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("signed in as") && message.contains(&demo::USER_UPN.to_ascii_lowercase()),
        "{json}"
    );
    let cached = std::fs::read_to_string(&e.cache).unwrap_or_default();
    assert!(
        !cached.contains(&demo::SECOND_USER_UPN.to_ascii_lowercase()),
        "{cached}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_processes_share_one_token_request() {
    let e = env().await;
    let before = e.sbx.admin().stats().grant("client_credentials");
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let mut c = e.flow(
                "client-secret",
                demo::CONFIDENTIAL_APP_ID,
                &[
                    // Six processes at once on a loaded machine: a slow reply is not a failure here.
                    "--timeout",
                    "120",
                ],
            );
            c.env("M365MAIL_CLIENT_SECRET", demo::CONFIDENTIAL_APP_SECRET)
                .env("M365MAIL_LOG", "info");
            tokio::spawn(run(c))
        })
        .collect();
    let mut results = Vec::new();
    for r in runs {
        results.push(r.await.unwrap());
    }
    let report: String = results
        .iter()
        .enumerate()
        .map(|(i, (code, _, all))| format!("--- process {i} (exit {code}):\n{all}\n"))
        .collect();
    let origins: Vec<String> = results
        .iter()
        .map(|(_, json, _)| json["origin"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert!(results.iter().all(|(code, _, _)| *code == 0), "{report}");
    assert_eq!(
        e.sbx.admin().stats().grant("client_credentials"),
        before + 1,
        "six processes, one token request: {origins:?}\n{report}"
    );
    assert_eq!(
        origins.iter().filter(|o| *o == "flow").count(),
        1,
        "{origins:?}\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_code_flow_prints_the_url_and_receives_the_redirect() {
    use std::io::BufRead as _;
    let e = env().await;
    let base = e.sbx.base_url().to_string();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("m365mail"))
        .args([
            "--json",
            "token",
            "get",
            "--flow",
            "auth-code",
            "--authority",
            &base,
            "--ca-file",
            e.ca.to_str().unwrap(),
            "--tenant",
            demo::TENANT_ID,
            "--client-id",
            demo::PUBLIC_APP_ID,
            "--username",
            demo::USER_UPN,
            "--cache",
            e.cache.to_str().unwrap(),
        ])
        .env("M365MAIL_CONFIG", e.dir.path().join("none.toml"))
        .env("M365MAIL_LOG", "error")
        .env("M365MAIL_NO_BROWSER", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // The authorize URL is the first stderr line that starts with the sandbox's base URL.
    let url = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("https://"))
    })
    .await
    .unwrap()
    .expect("the CLI printed the authorize URL");
    let url = url::Url::parse(&url).unwrap();
    assert!(
        url.query_pairs()
            .any(|(k, v)| k == "code_challenge_method" && v == "S256")
    );
    assert!(
        url.query_pairs()
            .any(|(k, v)| k == "login_hint" && v == demo::USER_UPN)
    );
    // Act as the browser: post the sign-in form, follow the redirect to the CLI's loopback listener.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([reqwest::Certificate::from_pem(e.sbx.ca_pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    form.push(("username".into(), demo::USER_UPN.into()));
    form.push(("password".into(), demo::USER_PASSWORD.into()));
    let mut post = url.clone();
    post.set_query(None);
    let resp = http.post(post).form(&form).send().await.unwrap();
    let location = resp.headers()["location"]
        .to_str()
        .unwrap()
        .replace("localhost", "127.0.0.1");
    let page = reqwest::get(&location).await.unwrap().text().await.unwrap();
    assert!(page.contains("Sign-in complete"), "{page}");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["flow"], "auth-code");
    assert_eq!(json["has_refresh_token"], true);
}

/// Scopes and authorities with control characters (and an empty scope) are refused with exit 2 before any
/// request reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_scopes_and_authorities_exit_2_before_any_request() {
    let e = env().await;
    let before = e.sbx.admin().stats().total_requests;
    for scope in [
        "https://outlook.office.com/IMAP.AccessAsUser.All\r\noffline_access",
        "x\ty",
        "",
    ] {
        let mut c = e.public(
            "password",
            demo::USER_UPN,
            &["--scope", scope, "--no-cache"],
        );
        c.env("M365MAIL_PASSWORD", demo::USER_PASSWORD);
        let (code, json, all) = run(c).await;
        assert_eq!(code, 2, "{scope:?}: {all}");
        assert_eq!(json["error"]["exit_code"], 2, "{json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid scope: "),
            "{json}"
        );
    }
    let base = e.sbx.base_url().to_string();
    for authority in [
        format!("{base}\r\n"),
        base.replace("127.0.0.1", "127.0.\n0.1"),
    ] {
        let mut c = e.cmd(&[
            "--json",
            "token",
            "get",
            "--authority",
            &authority,
            "--ca-file",
            e.ca.to_str().unwrap(),
            "--tenant",
            demo::TENANT_ID,
            "--client-id",
            demo::PUBLIC_APP_ID,
            "--flow",
            "password",
            "--username",
            demo::USER_UPN,
            "--no-cache",
        ]);
        c.env("M365MAIL_PASSWORD", demo::USER_PASSWORD);
        let (code, json, all) = run(c).await;
        assert_eq!(code, 2, "{authority:?}: {all}");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid authority: contains a control character"),
            "{json}"
        );
    }
    assert_eq!(e.sbx.admin().stats().total_requests, before);
}

/// The authority the sandbox banner prints (`https://127.0.0.1:<port>/<tenant>`) works as `--authority`, with
/// no `--tenant` or the same one; a different `--tenant` is refused (exit 2) with what to pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_banner_authority_is_accepted() {
    let e = env().await;
    let banner = e.sbx.authority(demo::TENANT_ID);
    assert!(e.sbx.summary().contains(&format!("authority {banner} ")));
    let ropc = |tenant: Option<&str>| {
        let mut args = vec![
            "--json",
            "token",
            "get",
            "--authority",
            &banner,
            "--ca-file",
            e.ca.to_str().unwrap(),
            "--client-id",
            demo::PUBLIC_APP_ID,
            "--flow",
            "password",
            "--username",
            demo::USER_UPN,
            "--no-cache",
        ];
        if let Some(t) = tenant {
            args.extend(["--tenant", t]);
        }
        let mut c = e.cmd(&args);
        c.env("M365MAIL_PASSWORD", demo::USER_PASSWORD);
        c
    };
    for tenant in [None, Some(demo::TENANT_ID)] {
        let (code, json, all) = run(ropc(tenant)).await;
        assert_eq!(code, 0, "{tenant:?}: {all}");
        assert_eq!(json["ok"], true, "{json}");
    }
    assert_eq!(e.sbx.admin().stats().grant("password"), 2);
    let (code, json, all) = run(ropc(Some(demo::DOMAIN))).await;
    assert_eq!(code, 2, "{all}");
    let base = e.sbx.base_url().to_string();
    assert_eq!(
        json["error"]["message"],
        format!(
            "invalid authority: {banner} ends with the tenant {}, but the tenant given is {}: pass the authority \
             without its tenant segment ({base}) and the tenant separately, or only the authority with the tenant",
            demo::TENANT_ID,
            demo::DOMAIN
        ),
        "{json}"
    );
    assert_eq!(e.sbx.admin().stats().grant("password"), 2);
}
