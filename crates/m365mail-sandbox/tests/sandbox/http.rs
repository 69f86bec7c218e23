//! The HTTP layer under every endpoint: request bodies over HTTP/2, the body size limit, and
//! connections that never finish their request headers.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body as HttpBody, Bytes, Frame};
use m365mail_sandbox::{Sandbox, demo};
use serde_json::json;

use crate::common::{answer, start};

/// A client that speaks HTTP/2 only (ALPN `h2`), trusting the sandbox CA.
fn http2_client(sandbox: &Sandbox) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(sandbox.ca_pem().as_bytes()).expect("CA PEM parses");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client builds")
}

/// A request body whose one chunk comes `delay` after the headers, as from a client that sends the
/// HEADERS frame first and the DATA frame later (curl does). `sent` turns true once the chunk was
/// handed to the connection: a server that finished the stream before reading the body never gets
/// it (the client stops sending on the server's RST_STREAM).
struct LateBody {
    delay: Pin<Box<tokio::time::Sleep>>,
    data: Option<Bytes>,
    sent: Arc<AtomicBool>,
}

impl LateBody {
    fn body(delay: Duration, data: &'static str, sent: Arc<AtomicBool>) -> reqwest::Body {
        reqwest::Body::wrap(Self {
            delay: Box::pin(tokio::time::sleep(delay)),
            data: Some(Bytes::from_static(data.as_bytes())),
            sent,
        })
    }
}

impl HttpBody for LateBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.delay.as_mut().poll(context).is_pending() {
            return Poll::Pending;
        }
        let data = self.data.take();
        if data.is_some() {
            self.sent.store(true, Ordering::SeqCst);
        }
        Poll::Ready(data.map(|data| Ok(Frame::data(data))))
    }
}

/// Starts a device flow for the demo public app and returns its user code.
async fn start_device_flow(sandbox: &crate::common::TestSandbox) -> String {
    sandbox.start_device_flow().await["user_code"]
        .as_str()
        .expect("user_code")
        .to_string()
}

/// Admin operations that take no input still get a body from some clients (`curl -d '{}'`, a JSON
/// helper that always sends `{}`). Over HTTP/2 the handler used to answer without reading it: the
/// finished stream was then reset (RST_STREAM) while the client was still sending, which curl reports
/// as error 92. Now every body is read before the answer, so the client always gets to send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_with_a_body_are_answered_over_http2() {
    let sandbox = start().await;
    let http2 = http2_client(&sandbox.sandbox);
    for round in 0..20 {
        let user_code = start_device_flow(&sandbox).await;
        let calls = [
            (
                format!("device-codes/{user_code}/decline"),
                json!({"user_code": user_code, "status": "declined"}),
            ),
            (
                format!("users/{}/revoke-refresh-tokens", demo::USER_UPN),
                json!({"revoked": 0}),
            ),
            ("stats/reset".to_string(), json!({})),
            ("faults/clear".to_string(), json!({})),
        ]
        .map(|(path, expected)| {
            let request = http2.post(sandbox.url(&format!("_sandbox/admin/{path}")));
            tokio::spawn(async move {
                let sent = Arc::new(AtomicBool::new(false));
                let response = request
                    .header("content-type", "application/json")
                    .body(LateBody::body(
                        Duration::from_millis(200),
                        "{\"unused\": \"a body the operation does not need\"}",
                        Arc::clone(&sent),
                    ))
                    .send()
                    .await
                    .unwrap_or_else(|error| panic!("round {round}: {path}: {error:?}"));
                assert_eq!(response.version(), reqwest::Version::HTTP_2);
                let answered = answer(response).await;
                assert_eq!(answered.status, 200, "round {round}: {path}");
                assert_eq!(answered.body, expected, "round {round}: {path}");
                assert!(
                    sent.load(Ordering::SeqCst),
                    "round {round}: {path}: answered before the request body was sent"
                );
            })
        });
        for call in calls {
            call.await.expect("call task");
        }
    }
}

/// The same with curl, the client of the original report (`curl --http2 -d`, error 92 in 6 to 9
/// tries out of 10). Ignored by default because it needs curl with HTTP/2 (nghttp2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs curl built with HTTP/2"]
async fn curl_http2_admin_calls_with_a_body_never_fail() {
    let sandbox = start().await;
    let directory = tempfile::tempdir().unwrap();
    let ca = directory.path().join("ca.pem");
    sandbox.sandbox.write_ca(&ca).unwrap();
    let mut failures = Vec::new();
    let mut attempts = 0;
    for _ in 0..20 {
        let user_code = start_device_flow(&sandbox).await;
        for path in [
            format!("device-codes/{user_code}/decline"),
            format!("users/{}/revoke-refresh-tokens", demo::USER_UPN),
            "stats/reset".to_string(),
        ] {
            attempts += 1;
            let url = sandbox.url(&format!("_sandbox/admin/{path}"));
            let ca = ca.clone();
            let output = tokio::task::spawn_blocking(move || {
                std::process::Command::new("curl")
                    .args(["--silent", "--show-error", "--http2", "--max-time", "10"])
                    .arg("--cacert")
                    .arg(&ca)
                    .args(["-H", "content-type: application/json", "-d", "{}"])
                    .args(["--write-out", "\n%{http_code} %{http_version}"])
                    .arg(&url)
                    .output()
            })
            .await
            .unwrap()
            .expect("curl runs");
            let stdout = String::from_utf8_lossy(&output.stdout);
            if !output.status.success() || !stdout.ends_with("\n200 2") {
                failures.push(format!(
                    "{path}: {:?} {stdout} {}",
                    output.status.code(),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
    }
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "{} of {attempts} curl calls failed",
        failures.len()
    );
}

/// curl sending 3 MiB over HTTP/2 gets the 413 JSON, not a reset stream (error 92). Ignored by default
/// because it needs curl built with HTTP/2 (nghttp2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs curl built with HTTP/2"]
async fn curl_http2_oversized_bodies_get_the_413_json() {
    let sandbox = start().await;
    let directory = tempfile::tempdir().unwrap();
    let ca = directory.path().join("ca.pem");
    sandbox.sandbox.write_ca(&ca).unwrap();
    let body = directory.path().join("body");
    std::fs::write(&body, padded_token_form(3 * 1024 * 1024)).unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        let url = sandbox.token_url(demo::TENANT_ID);
        let (ca, body) = (ca.clone(), body.clone());
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["--silent", "--show-error", "--http2", "--max-time", "10"])
                .arg("--cacert")
                .arg(&ca)
                .arg("--data-binary")
                .arg(format!("@{}", body.display()))
                .args([
                    "--write-out",
                    "\n%{http_code} %{http_version} %{content_type}",
                ])
                .arg(&url)
                .output()
        })
        .await
        .unwrap()
        .expect("curl runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let (json, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        outcomes.push((
            output.status.code(),
            status.to_string(),
            serde_json::from_str::<serde_json::Value>(json)
                .map(|body| body["error_codes"].clone())
                .unwrap_or_default(),
        ));
    }
    let expected = (
        Some(0),
        "413 2 application/json".to_string(),
        json!([9002313]),
    );
    assert!(
        outcomes.iter().all(|outcome| *outcome == expected),
        "{outcomes:?}"
    );
}

/// A request body of `chunks` chunks of 64 KiB with no length announced (no `Content-Length`):
/// the limit must hold while the body streams in, not only from the header.
struct UnannouncedBody {
    chunks: usize,
}

impl HttpBody for UnannouncedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.chunks == 0 {
            return Poll::Ready(None);
        }
        self.chunks -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'a'; 64 * 1024])))))
    }
}

/// A token request padded with an unknown parameter to exactly `length` bytes.
fn padded_token_form(length: usize) -> String {
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&scope={}&padding=",
        demo::CONFIDENTIAL_APP_ID,
        url::form_urlencoded::byte_serialize(demo::CONFIDENTIAL_APP_SECRET.as_bytes())
            .collect::<String>(),
        url::form_urlencoded::byte_serialize(demo::EXCHANGE_APP_SCOPE.as_bytes())
            .collect::<String>(),
    );
    let padding = length - form.len();
    form + &"a".repeat(padding)
}

/// Asserts the 413 answer: Entra's JSON error shape (the same as every other error), not a
/// text/plain page, with the limit in the description.
#[track_caller]
fn assert_too_large(answered: &crate::common::Answer, what: &str) {
    let body = answered.assert_error(413, "invalid_request", 9002313);
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!(
            "AADSTS9002313: The request body is larger than {} bytes",
            m365mail_sandbox::MAX_REQUEST_BODY_BYTES
        )),
        "{what}: {description}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_entra_json_413_over_http1_and_http2() {
    let sandbox = start().await;
    let limit = m365mail_sandbox::MAX_REQUEST_BODY_BYTES;
    assert_eq!(limit, 1024 * 1024);
    let ca = reqwest::Certificate::from_pem(sandbox.sandbox.ca_pem().as_bytes()).unwrap();
    let http1 = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let http2 = http2_client(&sandbox.sandbox);
    for (version, client) in [
        (reqwest::Version::HTTP_11, &http1),
        (reqwest::Version::HTTP_2, &http2),
    ] {
        // Exactly at the limit: handled as usual.
        let at_limit = client
            .post(sandbox.token_url(demo::TENANT_ID))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(padded_token_form(limit))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{version:?} at the limit: {error:?}"));
        assert_eq!(at_limit.version(), version);
        answer(at_limit).await.assert_ok();

        // One byte more, announced by Content-Length.
        let over = client
            .post(sandbox.token_url(demo::TENANT_ID))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(padded_token_form(limit + 1))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{version:?} one byte over: {error:?}"));
        assert_eq!(over.version(), version);
        assert_eq!(over.headers()["content-type"], "application/json");
        assert_eq!(over.headers()["cache-control"], "no-store, no-cache");
        assert_too_large(&answer(over).await, &format!("{version:?} one byte over"));

        // 3 MiB streamed without a length, to the token endpoint and to the admin API.
        for path in [
            format!("{}/oauth2/v2.0/token", demo::TENANT_ID),
            format!("_sandbox/admin/users/{}", demo::USER_UPN),
        ] {
            let streamed = client
                .post(sandbox.url(&path))
                .body(reqwest::Body::wrap(UnannouncedBody { chunks: 48 }))
                .send()
                .await
                .unwrap_or_else(|error| panic!("{version:?} {path} streamed: {error:?}"));
            assert_eq!(streamed.version(), version);
            assert_too_large(
                &answer(streamed).await,
                &format!("{version:?} {path} streamed"),
            );
        }
    }
    // The connection is still usable afterwards (HTTP/2: only that stream ended).
    answer(
        http2
            .get(sandbox.url(&format!("{}/discovery/v2.0/keys", demo::TENANT_ID)))
            .send()
            .await
            .unwrap(),
    )
    .await
    .assert_ok();
}

/// The address of a sandbox, for raw TCP clients.
fn address(sandbox: &Sandbox) -> String {
    let base = sandbox.base_url();
    format!("{}:{}", base.host_str().unwrap(), base.port().unwrap())
}

/// Waits (at most `bound`) for the server to close the connection; returns how long it took.
async fn closed_within<S>(stream: &mut S, bound: Duration) -> Duration
where
    S: tokio::io::AsyncRead + Unpin,
{
    let started = std::time::Instant::now();
    let mut buffer = [0_u8; 1024];
    let read = tokio::time::timeout(bound, async {
        loop {
            match tokio::io::AsyncReadExt::read(stream, &mut buffer).await {
                Ok(0) | Err(_) => return,
                // HTTP/2: the server's SETTINGS frame; keep waiting for the close.
                Ok(_) => continue,
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    assert!(
        read.is_ok(),
        "the connection was still open after {elapsed:?}"
    );
    elapsed
}

fn header_timeout_config(tls: bool) -> m365mail_sandbox::SandboxConfig {
    m365mail_sandbox::SandboxConfig {
        tls,
        header_read_timeout: Duration::from_secs(1),
        ..m365mail_sandbox::SandboxConfig::default()
    }
}

#[test]
fn the_header_read_timeout_defaults_to_ten_seconds() {
    assert_eq!(
        m365mail_sandbox::SandboxConfig::default().header_read_timeout,
        Duration::from_secs(10)
    );
}

#[tokio::test]
async fn plain_http_connections_that_never_finish_their_headers_are_closed() {
    let sandbox = crate::common::start_with(header_timeout_config(false)).await;
    let keep_alive = format!(
        "GET /{}/discovery/v2.0/keys HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /common/discovery/instance HTTP/1.1\r\nHo",
        demo::TENANT_ID
    );
    for (what, sent) in [
        (
            "half an HTTP/1.1 header",
            &b"POST /organizations/oauth2/v2.0/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"[..],
        ),
        ("nothing", &b""[..]),
        ("half the HTTP/2 preface", &b"PRI * HTTP/2.0\r\n"[..]),
        (
            "the HTTP/2 preface and no request",
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"[..],
        ),
        (
            "a keep-alive request answered, then half of the next one",
            keep_alive.as_bytes(),
        ),
    ] {
        let mut stream = tokio::net::TcpStream::connect(address(&sandbox.sandbox))
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, sent)
            .await
            .unwrap();
        let held = closed_within(&mut stream, Duration::from_secs(5)).await;
        assert!(
            held >= Duration::from_millis(900) && held < Duration::from_secs(3),
            "{what}: closed after {held:?}"
        );
    }
    // A client that finishes its request is answered as usual.
    let http = reqwest::Client::new();
    let keys = http
        .get(sandbox.url(&format!("{}/discovery/v2.0/keys", demo::TENANT_ID)))
        .send()
        .await
        .unwrap();
    answer(keys).await.assert_ok();
}

#[tokio::test]
async fn https_connections_that_never_finish_their_headers_are_closed() {
    use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
    let sandbox = crate::common::start_with(header_timeout_config(true)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(sandbox.sandbox.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(address(&sandbox.sandbox))
        .await
        .unwrap();
    let mut stream = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"POST /organizations/oauth2/v2.0/token HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    )
    .await
    .unwrap();
    tokio::io::AsyncWriteExt::flush(&mut stream).await.unwrap();
    let held = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(3),
        "closed after {held:?}"
    );
}
