//! Replies the sandbox does not model: non-JSON bodies, 429 with Retry-After, 5xx. A tiny canned HTTP server
//! on loopback counts how many requests arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use m365mail::auth::{
    AuthError, Authority, ClientCredential, ClientOptions, Cloud, ErrorClass, Scopes, TokenClient,
    TokenResponse,
};
use m365mail::time::FakeClock;
use m365mail::transport::TransportKind;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Serves `reply(n)` for the n-th request (0-based); returns the base URL and the request counter.
async fn canned(
    reply: impl Fn(usize) -> String + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    canned_echo(move |n, _| reply(n)).await
}

/// Like [`canned`], with the request body passed to `reply`.
async fn canned_echo(
    reply: impl Fn(usize, &str) -> String + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 65536];
            let mut got = 0;
            // Read head + body (Content-Length) well enough for a form POST.
            loop {
                let n = s.read(&mut buf[got..]).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                got += n;
                let text = String::from_utf8_lossy(&buf[..got]);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if got >= head_end + 4 + len {
                        break;
                    }
                }
            }
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let text = String::from_utf8_lossy(&buf[..got]).into_owned();
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            let _ = s.write_all(reply(n, body).as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    (base, count)
}

fn http(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A JSON reply.
fn json(status: &str, body: &str) -> String {
    http(status, "Content-Type: application/json\r\n", body)
}

/// An HTML 502 from a proxy in front of the token endpoint.
fn bad_gateway() -> String {
    http(
        "502 Bad Gateway",
        "Content-Type: text/html\r\n",
        "<html><body>Bad gateway from the proxy</body></html>",
    )
}

fn client(base: &str, clock: &FakeClock) -> TokenClient {
    client_with(base, clock, ClientCredential::Public)
}

fn client_with(base: &str, clock: &FakeClock, credential: ClientCredential) -> TokenClient {
    client_with_options(
        base,
        credential,
        ClientOptions {
            clock: Arc::new(clock.clone()),
            sleeper: Arc::new(clock.clone()),
            ..ClientOptions::default()
        },
    )
}

fn client_with_options(
    base: &str,
    credential: ClientCredential,
    options: ClientOptions,
) -> TokenClient {
    let a = Authority::new(
        Cloud::custom(base).unwrap(),
        "contoso.onmicrosoft.com".parse().unwrap(),
    );
    TokenClient::new(
        a,
        "00000000-0000-0000-0000-0000000000aa",
        credential,
        options,
    )
    .unwrap()
}

/// ROPC for `u@contoso.onmicrosoft.com` with password `pw` and scope `x`.
async fn password(client: &TokenClient) -> Result<TokenResponse, AuthError> {
    client
        .password(
            "u@contoso.onmicrosoft.com",
            &"pw".into(),
            &Scopes::parse("x"),
        )
        .await
}

#[tokio::test]
async fn non_json_reply_is_typed_with_an_excerpt_and_retried_when_5xx() {
    let (base, count) = canned(|_| bad_gateway()).await;
    let clock = FakeClock::fixed();
    // Client credentials are idempotent: retried with backoff.
    let e = client_with(&base, &clock, ClientCredential::secret("s3cr3t".into()))
        .client_credentials(&Scopes::parse("https://graph.microsoft.com/.default"))
        .await
        .unwrap_err();
    match &e {
        AuthError::UnexpectedReply {
            status, excerpt, ..
        } => {
            assert_eq!(*status, 502);
            assert!(excerpt.contains("Bad gateway from the proxy"), "{excerpt}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_transient());
    assert_eq!(
        count.load(Ordering::SeqCst),
        3,
        "first attempt + 2 bounded retries"
    );
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_millis(500), Duration::from_millis(1000)],
        "exponential backoff"
    );
}

/// A password (like a code or refresh token) is not sent twice after a reply the server may have processed.
#[tokio::test]
async fn credential_grants_are_not_retried_after_a_5xx_without_retry_after() {
    let (base, count) = canned(|_| bad_gateway()).await;
    let clock = FakeClock::fixed();
    let e = password(&client(&base, &clock)).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(clock.sleeps().is_empty());
}

/// A proxy that echoes the request body: the excerpt kept in the error (and logged) holds no secret.
#[tokio::test]
async fn echoed_request_body_is_redacted_in_the_excerpt() {
    let (base, _) = canned_echo(|_, body| {
        http(
            "500 Internal Server Error",
            "Content-Type: text/plain\r\n",
            &format!(
                "cannot handle {body} (password: Hunter2-raw) {{\"refresh_token\":\"RT-json\"}}"
            ),
        )
    })
    .await;
    let clock = FakeClock::fixed();
    let password = "p@ss w0rd&x=y~Secret";
    let client_secret = "Sbx8Q~client.Secret_0";
    let e = client_with(
        &base,
        &clock,
        ClientCredential::secret(client_secret.into()),
    )
    .password(
        "u@contoso.onmicrosoft.com",
        &password.into(),
        &Scopes::parse("x"),
    )
    .await
    .unwrap_err();
    let AuthError::UnexpectedReply { excerpt, .. } = &e else {
        panic!("{e:?}")
    };
    let shown = format!("{e} {e:?} {}", e.cause());
    for secret in [
        password,
        "p%40ss+w0rd%26x%3Dy%7ESecret",
        "p%40ss",
        "w0rd",
        client_secret,
        "Sbx8Q",
        "Hunter2-raw",
        "RT-json",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(excerpt.contains("grant_type=password"), "{excerpt}");
    assert!(excerpt.contains("[REDACTED]"), "{excerpt}");
}

#[tokio::test]
async fn retry_after_is_honoured_then_success() {
    let (base, count) = canned(|n| {
        if n == 0 {
            http(
                "429 Too Many Requests",
                "Retry-After: 7\r\nContent-Type: application/json\r\n",
                r#"{"error":"temporarily_unavailable","error_codes":[90055],"error_description":"AADSTS90055: throttled.\r\nTrace ID: t\r\nCorrelation ID: c"}"#,
            )
        } else {
            json(
                "200 OK",
                r#"{"token_type":"Bearer","access_token":"at","expires_in":60}"#,
            )
        }
    })
    .await;
    let clock = FakeClock::fixed();
    let t = password(&client(&base, &clock)).await.unwrap();
    assert_eq!(t.access_token.expose(), "at");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(7)]);
}

#[tokio::test]
async fn bad_credentials_are_never_retried() {
    let (base, count) = canned(|_| {
        json(
            "400 Bad Request",
            r#"{"error":"invalid_grant","error_codes":[50126],"error_description":"AADSTS50126: bad."}"#,
        )
    })
    .await;
    let clock = FakeClock::fixed();
    let e = password(&client(&base, &clock)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::User);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn malformed_success_and_wrong_token_type() {
    let (base, _) = canned(|n| match n {
        0 => json("200 OK", r#"{"token_type":"Bearer"}"#),
        _ => json("200 OK", r#"{"token_type":"pop","access_token":"x"}"#),
    })
    .await;
    let clock = FakeClock::fixed();
    let c = client(&base, &clock);
    let e = password(&c).await.unwrap_err();
    assert!(
        matches!(&e, AuthError::MalformedResponse { url, reason }
            if url.ends_with("/contoso.onmicrosoft.com/oauth2/v2.0/token") && reason.contains("access_token")),
        "{e:?}"
    );
    let e = password(&c).await.unwrap_err();
    assert!(
        matches!(e, AuthError::UnsupportedTokenType(ref t) if t == "pop"),
        "{e:?}"
    );
}

#[tokio::test]
async fn timeout_is_typed_and_transient_and_a_password_is_sent_once() {
    // Accepts connections (and reads requests) but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut counted = false;
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if !counted && String::from_utf8_lossy(&buf[..n]).contains("POST ") {
                        counted = true;
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let clock = FakeClock::fixed();
    let make = |credential| {
        client_with_options(
            &base,
            credential,
            ClientOptions {
                timeout: Duration::from_millis(200),
                sleeper: Arc::new(clock.clone()),
                retry: m365mail::auth::RetryPolicy {
                    max_retries: 1,
                    ..Default::default()
                },
                ..ClientOptions::default()
            },
        )
    };
    let token_url = format!("{base}contoso.onmicrosoft.com/oauth2/v2.0/token");
    let e = password(&make(ClientCredential::Public)).await.unwrap_err();
    assert!(
        matches!(&e, AuthError::Transport(t) if t.kind() == TransportKind::Timeout && t.endpoint() == token_url),
        "{e:?}"
    );
    assert!(e.is_transient());
    assert!(clock.sleeps().is_empty(), "no retry after a timeout");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "exactly one password request"
    );
    // Client credentials are idempotent: retried once.
    let e = make(ClientCredential::secret("s".into()))
        .client_credentials(&Scopes::parse("https://graph.microsoft.com/.default"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AuthError::Transport(t) if t.kind() == TransportKind::Timeout && t.endpoint() == token_url),
        "{e:?}"
    );
    assert_eq!(clock.sleeps(), vec![Duration::from_millis(500)]);
}

/// Serves one reply per connection: `head` (status line + headers, without Content-Length), then a body of
/// `len` bytes made of `unit` repeated, written in 64 KiB pieces until done or the client goes away. Returns the
/// base URL and the number of body bytes the server managed to write on the last connection.
async fn huge_body(
    head: &'static str,
    unit: &'static [u8],
    len: usize,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let mut got = Vec::new();
            // The request: head + Content-Length body.
            loop {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some(end) = text.find("\r\n\r\n") {
                    let cl = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + cl {
                        break;
                    }
                }
            }
            let reply_head = format!("{head}Content-Length: {len}\r\nConnection: close\r\n\r\n");
            if s.write_all(reply_head.as_bytes()).await.is_err() {
                continue;
            }
            let piece: Vec<u8> = unit.iter().copied().cycle().take(65536).collect();
            let mut sent = 0usize;
            counter.store(0, Ordering::SeqCst);
            while sent < len {
                let n = piece.len().min(len - sent);
                if s.write_all(&piece[..n]).await.is_err() {
                    break;
                }
                sent += n;
                counter.store(sent, Ordering::SeqCst);
            }
            let _ = s.shutdown().await;
        }
    });
    (base, written)
}

/// Bytes a client may leave in flight when it stops reading: what it read (1 MiB) plus the kernel's socket
/// buffers on both ends of a loopback connection (a few MiB with autotuning). Far below the 100 MB sent.
const IN_FLIGHT_BOUND: usize = 16 * 1024 * 1024;

/// A hostile authority answers with a 100 MB error body: the client reads at most 1 MiB of it, says so in a
/// typed error, and keeps only a short excerpt (secrets redacted).
#[tokio::test]
async fn a_100_mb_error_body_is_read_only_up_to_the_limit() {
    let (base, written) = huge_body(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n",
        b"password=pw&x ",
        100 * 1024 * 1024,
    )
    .await;
    let clock = FakeClock::fixed();
    let e = password(&client(&base, &clock)).await.unwrap_err();
    // The server could write only what the client read plus the socket buffers before the client closed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = written.load(Ordering::SeqCst);
    assert!(
        written < IN_FLIGHT_BOUND,
        "the server wrote {written} bytes"
    );
    match &e {
        AuthError::ReplyTooLarge {
            status,
            limit,
            excerpt,
            url,
        } => {
            assert_eq!(*status, 400);
            assert_eq!(*limit, m365mail::http::MAX_REPLY_BODY);
            assert_eq!(*limit, 1024 * 1024);
            assert!(
                url.ends_with("/contoso.onmicrosoft.com/oauth2/v2.0/token"),
                "{url}"
            );
            assert_eq!(excerpt.chars().count(), 200, "{excerpt}");
            assert!(excerpt.starts_with("password=[REDACTED]&x "), "{excerpt}");
            assert!(!excerpt.contains("=pw"), "{excerpt}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.class(), ErrorClass::Config);
    assert!(e.to_string().len() < 600, "{e}");
}

/// A success reply over the limit is refused the same way (no token is parsed out of a truncated body), and
/// an Entra error just under the limit is still parsed, its description cut to a bounded excerpt.
#[tokio::test]
async fn oversized_success_is_refused_and_a_long_description_is_cut() {
    let (base, written) = huge_body(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n",
        b"{\"access_token\":\"at\"} ",
        100 * 1024 * 1024,
    )
    .await;
    let clock = FakeClock::fixed();
    let e = password(&client(&base, &clock)).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(written.load(Ordering::SeqCst) < IN_FLIGHT_BOUND);
    let AuthError::ReplyTooLarge {
        status, excerpt, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(*status, 200);
    assert_eq!(
        excerpt, "",
        "no excerpt of a success reply (it may hold tokens)"
    );

    let description = "d".repeat(1000 * 1024);
    let body = format!(
        r#"{{"error":"invalid_grant","error_codes":[50126],"error_description":"AADSTS50126: {description}"}}"#
    );
    assert!(body.len() < m365mail::http::MAX_REPLY_BODY);
    let (base, _) = canned(move |_| json("400 Bad Request", &body)).await;
    let e = password(&client(&base, &clock)).await.unwrap_err();
    let entra = e.entra().unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(entra.error_codes, vec![50126]);
    assert_eq!(
        entra.description.chars().count(),
        2001,
        "2000 characters and …"
    );
    assert!(entra.description.starts_with("AADSTS50126: ddd"));
    assert!(entra.description.ends_with("d…"));
}

/// A 429 with `Retry-After: 45` on every request.
fn throttled_45() -> String {
    http(
        "429 Too Many Requests",
        "Retry-After: 45\r\nContent-Type: application/json\r\n",
        r#"{"error":"temporarily_unavailable","error_codes":[90055],"error_description":"AADSTS90055: throttled."}"#,
    )
}

/// The server asks for 45 s, more than the policy's longest wait (30 s): the password is not sent again early
/// (it used to be re-sent after 30 s, twice); the error is transient and names the time to come back.
#[tokio::test]
async fn a_45_s_retry_after_is_not_cut_short_and_the_password_is_sent_once() {
    let (base, count) = canned(|_| throttled_45()).await;
    let clock = FakeClock::fixed();
    let e = password(&client(&base, &clock)).await.unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 1, "one password request");
    assert_eq!(clock.sleeps(), Vec::<Duration>::new(), "no wait at all");
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(45)));
    assert_eq!(
        e.retry_at(),
        Some(std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + 45))
    );
    assert!(
        e.to_string().contains("retry after 2026-01-01T00:00:45Z"),
        "{e}"
    );
    assert!(
        e.remedy().contains("retry after 2026-01-01T00:00:45Z"),
        "{}",
        e.remedy()
    );
    // Client credentials are idempotent, but the server's time is respected there too.
    let e = client_with(&base, &clock, ClientCredential::secret("s".into()))
        .client_credentials(&Scopes::parse("https://graph.microsoft.com/.default"))
        .await
        .unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(45)));
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(clock.sleeps(), Vec::<Duration>::new());
}

/// Within the policy, the grant waits exactly `Retry-After` each time; past the retry budget the error says
/// when to come back (from the injected clock).
#[tokio::test]
async fn past_the_retry_budget_the_error_says_when_to_come_back() {
    let (base, count) = canned(|_| {
        http(
            "503 Service Unavailable",
            "Retry-After: 7\r\nContent-Type: text/plain\r\n",
            "busy",
        )
    })
    .await;
    let clock = FakeClock::fixed();
    let e = password(&client(&base, &clock)).await.unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 3, "first attempt + 2 retries");
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(7), Duration::from_secs(7)]
    );
    match &e {
        AuthError::UnexpectedReply {
            status,
            retry_after,
            retry_at,
            ..
        } => {
            assert_eq!(*status, 503);
            assert_eq!(*retry_after, Some(Duration::from_secs(7)));
            assert_eq!(
                *retry_at,
                Some(std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + 14 + 7))
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_transient());
    assert!(
        e.to_string().contains("retry after 2026-01-01T00:00:21Z"),
        "{e}"
    );
}

/// `Retry-After` as an HTTP date (IMF-fixdate, RFC 9110 §10.2.3) is read against the injected clock; a date in
/// the past means "now".
#[tokio::test]
async fn retry_after_as_an_http_date_is_understood() {
    let (base, count) = canned(|n| match n {
        0 => http(
            "429 Too Many Requests",
            "Retry-After: Thu, 01 Jan 2026 00:00:20 GMT\r\nContent-Type: text/plain\r\n",
            "slow down",
        ),
        1 => http(
            "503 Service Unavailable",
            "Retry-After: Wed, 31 Dec 2025 23:00:00 GMT\r\nContent-Type: text/plain\r\n",
            "busy",
        ),
        _ => json(
            "200 OK",
            r#"{"token_type":"Bearer","access_token":"at","expires_in":60}"#,
        ),
    })
    .await;
    let clock = FakeClock::fixed();
    let t = password(&client(&base, &clock)).await.unwrap();
    assert_eq!(t.access_token.expose(), "at");
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(20), Duration::from_secs(0)]
    );
    // A date further away than the policy allows: not retried, the date is the time to come back.
    let (base, count) = canned(|_| {
        http(
            "429 Too Many Requests",
            "Retry-After: Thu, 01 Jan 2026 01:00:00 GMT\r\nContent-Type: text/plain\r\n",
            "later",
        )
    })
    .await;
    let clock = FakeClock::fixed();
    let e = password(&client(&base, &clock)).await.unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3600)));
    assert!(
        e.to_string().contains("retry after 2026-01-01T01:00:00Z"),
        "{e}"
    );
}

/// Invalid scopes are refused before any request, by every grant: nothing reaches the server.
#[tokio::test]
async fn invalid_scopes_are_refused_before_any_request() {
    let (base, count) = canned(|_| {
        json(
            "200 OK",
            r#"{"token_type":"Bearer","access_token":"at","expires_in":60}"#,
        )
    })
    .await;
    let clock = FakeClock::fixed();
    let public = client(&base, &clock);
    let confidential = client_with(&base, &clock, ClientCredential::secret("s".into()));
    let is_scope_error = |r: Result<TokenResponse, AuthError>| match r {
        Err(AuthError::InvalidInput { field, .. }) => field == "scope",
        other => panic!("{other:?}"),
    };
    for bad in ["x\r\nscope=openid", "x\ty", "x\u{1b}[1A", ""] {
        let scopes = Scopes::parse(bad);
        assert!(is_scope_error(
            public
                .password("u@contoso.onmicrosoft.com", &"pw".into(), &scopes)
                .await
        ));
        assert!(is_scope_error(public.refresh(&"rt".into(), &scopes).await));
        assert!(is_scope_error(
            confidential.client_credentials(&scopes).await
        ));
        assert!(is_scope_error(
            public
                .redeem_code(&"code".into(), "http://localhost:1", &"v".into(), &scopes)
                .await
        ));
        assert!(matches!(
            public.start_device_code(&scopes).await,
            Err(AuthError::InvalidInput { field: "scope", .. })
        ));
    }
    assert_eq!(count.load(Ordering::SeqCst), 0, "no request was sent");
}
