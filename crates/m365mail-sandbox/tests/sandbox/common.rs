//! Helpers shared by the sandbox tests: a started sandbox, an HTTP client trusting its CA, and
//! assertions on Entra's error JSON.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use m365mail_sandbox::{FakeClock, Lifetimes, Sandbox, SandboxConfig, demo};
use reqwest::StatusCode;
use serde_json::Value;

pub(crate) struct TestSandbox {
    pub(crate) sandbox: Sandbox,
    pub(crate) http: reqwest::Client,
}

/// An HTTP client that trusts only the sandbox CA and never follows redirects (tests act as the
/// browser and look at each 302).
pub(crate) fn client_for(sandbox: &Sandbox) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(sandbox.ca_pem().as_bytes()).expect("CA PEM parses");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client builds")
}

/// A TLS connector for the mail listeners that trusts only the sandbox CA.
pub(crate) fn mail_tls(sandbox: &Sandbox) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(sandbox.ca_pem().as_bytes()) {
        roots
            .add(cert.expect("CA PEM parses"))
            .expect("a CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub(crate) async fn start_with(config: SandboxConfig) -> TestSandbox {
    let sandbox = Sandbox::start(config).await.expect("sandbox starts");
    let http = client_for(&sandbox);
    TestSandbox { sandbox, http }
}

pub(crate) async fn start() -> TestSandbox {
    start_with(SandboxConfig::default()).await
}

/// A sandbox on a fake clock (starting at the real time, so assertion checks stay meaningful).
pub(crate) async fn start_with_fake_clock(lifetimes: Lifetimes) -> (TestSandbox, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::new(m365mail_sandbox::Clock::now(
        &m365mail_sandbox::SystemClock,
    )));
    let config = SandboxConfig {
        lifetimes,
        clock: clock.clone(),
        ..SandboxConfig::default()
    };
    (start_with(config).await, clock)
}

/// What a response came back as.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
}

impl Answer {
    /// Asserts Entra's error shape and returns the body.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, error: &str, code: u32) -> &Value {
        assert_eq!(self.status.as_u16(), status, "status; body: {}", self.body);
        assert_eq!(self.body["error"], error, "error; body: {}", self.body);
        assert_eq!(
            self.body["error_codes"],
            serde_json::json!([code]),
            "error_codes; body: {}",
            self.body
        );
        let description = self.body["error_description"]
            .as_str()
            .expect("error_description");
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "description starts with the code: {description}"
        );
        let trace_id = self.body["trace_id"].as_str().expect("trace_id");
        let correlation_id = self.body["correlation_id"]
            .as_str()
            .expect("correlation_id");
        let timestamp = self.body["timestamp"].as_str().expect("timestamp");
        assert!(
            description.ends_with(&format!(
                "\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
            )),
            "description ends with the trace suffix of the fields: {description}"
        );
        for id in [trace_id, correlation_id] {
            assert!(uuid::Uuid::parse_str(id).is_ok(), "a GUID: {id}");
        }
        assert_eq!(
            self.body["error_uri"],
            format!("https://login.microsoftonline.com/error?code={code}")
        );
        &self.body
    }

    /// Asserts a device-flow answer that carries no AADSTS code: Entra's shape without
    /// `error_codes` and `error_uri`, the description still with its trace suffix.
    #[track_caller]
    pub(crate) fn assert_codeless_error(&self, error: &str) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "body: {}", self.body);
        assert_eq!(self.body["error"], error, "body: {}", self.body);
        for absent in ["error_codes", "error_uri"] {
            assert!(
                self.body.get(absent).is_none(),
                "no {absent}: {}",
                self.body
            );
        }
        let description = self.body["error_description"]
            .as_str()
            .expect("error_description");
        assert!(
            !description.starts_with("AADSTS"),
            "no code in the description: {description}"
        );
        let trace_id = self.body["trace_id"].as_str().expect("trace_id");
        let correlation_id = self.body["correlation_id"]
            .as_str()
            .expect("correlation_id");
        let timestamp = self.body["timestamp"].as_str().expect("timestamp");
        assert!(
            description.ends_with(&format!(
                "\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
            )),
            "description ends with the trace suffix: {description}"
        );
    }

    #[track_caller]
    pub(crate) fn assert_ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.body);
        &self.body
    }
}

impl TestSandbox {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.base_url())
    }

    pub(crate) fn token_url(&self, tenant: &str) -> String {
        self.url(&format!("{tenant}/oauth2/v2.0/token"))
    }

    pub(crate) async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Answer {
        let response = self
            .http
            .post(url)
            .form(form)
            .send()
            .await
            .expect("request is answered");
        answer(response).await
    }

    pub(crate) async fn token(&self, tenant: &str, form: &[(&str, &str)]) -> Answer {
        self.post_form(&self.token_url(tenant), form).await
    }

    pub(crate) async fn get_json(&self, path: &str) -> Answer {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("request is answered");
        answer(response).await
    }

    pub(crate) async fn admin_post(&self, path: &str, body: Value) -> Answer {
        let response = self
            .http
            .post(self.url(&format!("_sandbox/admin/{path}")))
            .json(&body)
            .send()
            .await
            .expect("request is answered");
        answer(response).await
    }

    /// Starts a device flow for the demo public app (IMAP scope) and returns the devicecode answer's body.
    pub(crate) async fn start_device_flow(&self) -> Value {
        let started = self
            .post_form(
                &self.url(&format!("{}/oauth2/v2.0/devicecode", demo::TENANT_ID)),
                &[
                    ("client_id", demo::PUBLIC_APP_ID),
                    ("scope", demo::IMAP_SCOPE),
                ],
            )
            .await;
        started.assert_ok().clone()
    }

    /// An app-only access token of the demo confidential app (client secret) for `scope`.
    pub(crate) async fn app_token(&self, scope: &str) -> String {
        let answer = self
            .token(
                demo::TENANT_ID,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", demo::CONFIDENTIAL_APP_ID),
                    ("client_secret", demo::CONFIDENTIAL_APP_SECRET),
                    ("scope", scope),
                ],
            )
            .await;
        answer.assert_ok()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// ROPC for the demo public app.
    pub(crate) async fn ropc(
        &self,
        client_id: &str,
        username: &str,
        password: &str,
        scope: &str,
    ) -> Answer {
        self.token(
            demo::TENANT_ID,
            &[
                ("grant_type", "password"),
                ("client_id", client_id),
                ("username", username),
                ("password", password),
                ("scope", scope),
            ],
        )
        .await
    }

    /// ROPC for the demo user (`demo::USER_UPN` with its password) through `client_id`.
    pub(crate) async fn user_ropc(&self, client_id: &str, scope: &str) -> Answer {
        self.ropc(client_id, demo::USER_UPN, demo::USER_PASSWORD, scope)
            .await
    }

    /// ROPC for the demo user through `client_id`, with `extra` form fields (a secret, an
    /// assertion) sent alongside.
    pub(crate) async fn user_ropc_with(
        &self,
        client_id: &str,
        scope: &str,
        extra: &[(&str, &str)],
    ) -> Answer {
        self.token(demo::TENANT_ID, &user_ropc_form(client_id, scope, extra))
            .await
    }

    /// The verification key of the sandbox's JWKS.
    pub(crate) async fn jwks_key(&self) -> jsonwebtoken::DecodingKey {
        let jwks = self
            .get_json(&format!("{}/discovery/v2.0/keys", demo::TENANT_ID))
            .await;
        let key = &jwks.assert_ok()["keys"][0];
        jsonwebtoken::DecodingKey::from_rsa_components(
            key["n"].as_str().expect("n"),
            key["e"].as_str().expect("e"),
        )
        .expect("JWKS key is usable")
    }

    /// Verifies a token's RS256 signature against the JWKS and returns its claims.
    pub(crate) async fn verified_claims(&self, token: &str) -> Value {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(token, &self.jwks_key().await, &validation)
            .expect("token signature verifies against the JWKS")
            .claims
    }
}

pub(crate) async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let text = response.text().await.expect("body is readable");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, body }
}

/// The ROPC form for the demo user (`demo::USER_UPN` with its password) through `client_id`,
/// with `extra` fields (a secret, an assertion) after the client ID.
pub(crate) fn user_ropc_form<'a>(
    client_id: &'a str,
    scope: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![("grant_type", "password"), ("client_id", client_id)];
    form.extend_from_slice(extra);
    form.extend([
        ("username", demo::USER_UPN),
        ("password", demo::USER_PASSWORD),
        ("scope", scope),
    ]);
    form
}

/// Claims of a JWT without verifying it.
pub(crate) fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url"))
        .expect("JSON claims")
}

/// Header of a JWT.
pub(crate) fn header(token: &str) -> Value {
    let header = token.split('.').next().expect("JWT has a header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url"))
        .expect("JSON header")
}

/// `url` with the parameters appended as a query string.
pub(crate) fn with_query(url: &str, params: &[(&str, &str)]) -> String {
    url::Url::parse_with_params(url, params)
        .expect("valid URL")
        .to_string()
}

/// Writes one byte every 100 ms, never a line end, until the server closes the connection (a failed write, or
/// end of stream): how long that took. Panics when 40 bytes (4 s) did not get it closed. Bounds tests of the
/// mail servers use it to show that a trickle does not outlive the command deadline.
pub(crate) async fn trickle_until_closed<S>(stream: &mut tokio::io::BufReader<S>) -> Duration
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let started = std::time::Instant::now();
    for _ in 0..40 {
        if stream.get_mut().write_all(b" ").await.is_err() {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut probe = String::new();
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read_line(&mut probe)).await
        {
            return started.elapsed();
        }
    }
    panic!("the trickling connection was never closed");
}

/// Runs one of the Python stdlib client scripts under `tests/` (`imaplib/imap_session.py`, …) unchanged
/// against `port` on localhost: `script HOST PORT CA_FILE USER TOKEN_FILE [EXTRA…]`, the sandbox's CA and the
/// token written to a temporary directory. Returns the JSON the script prints (what it saw).
pub(crate) async fn python_session(
    sandbox: &TestSandbox,
    script: &str,
    port: u16,
    user: &str,
    token: &str,
    extra: &[&str],
) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    sandbox.sandbox.write_ca(&ca).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let mut python = std::process::Command::new("python3");
    python
        .arg(format!(
            "{}/../../tests/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(["localhost", &port.to_string()])
        .arg(&ca)
        .arg(user)
        .arg(&token_file)
        .args(extra);
    // Off the async workers: the sandbox serves in this runtime.
    let output = tokio::task::spawn_blocking(move || python.output())
        .await
        .unwrap()
        .expect("python3");
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs `command` off the async workers (the sandbox serves in this runtime), asserts it succeeded and
/// returns its standard output.
pub(crate) async fn run_ok(mut command: std::process::Command) -> String {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
