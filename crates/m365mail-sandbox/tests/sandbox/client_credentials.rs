use base64::Engine;
use m365mail_sandbox::{Clock, SystemClock, demo};
use serde_json::json;

use crate::common::{TestSandbox, claims, start, start_with};

/// Everything an assertion test varies.
struct AssertionSpec {
    algorithm: jsonwebtoken::Algorithm,
    x5t: Option<String>,
    x5t_s256: Option<String>,
    audience: String,
    issuer: String,
    not_before: i64,
    expires: i64,
    private_key_pem: String,
    /// Claims set or replaced after the above (e.g. a fixed `jti`, or an `exp` no i64 holds).
    overrides: Vec<(&'static str, serde_json::Value)>,
}

impl AssertionSpec {
    fn valid(sandbox: &TestSandbox) -> Self {
        let now = SystemClock.unix_seconds() as i64;
        let certificate = demo::certificate();
        Self {
            algorithm: jsonwebtoken::Algorithm::RS256,
            x5t: Some(certificate.x5t.clone()),
            x5t_s256: None,
            audience: sandbox.token_url(demo::TENANT_ID),
            issuer: demo::CONFIDENTIAL_APP_ID.to_string(),
            not_before: now,
            expires: now + 600,
            private_key_pem: certificate.private_key_pem.clone(),
            overrides: Vec::new(),
        }
    }

    fn sign(&self) -> String {
        let mut header = jsonwebtoken::Header::new(self.algorithm);
        header.typ = Some("JWT".into());
        header.x5t = self.x5t.clone();
        header.x5t_s256 = self.x5t_s256.clone();
        let mut claims = json!({
            "aud": self.audience,
            "iss": self.issuer,
            "sub": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": self.not_before,
            "iat": self.not_before,
            "exp": self.expires,
        });
        for (name, value) in &self.overrides {
            claims[*name] = value.clone();
        }
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.private_key_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

async fn with_assertion(
    sandbox: &TestSandbox,
    assertion: &str,
    scope: &str,
) -> crate::common::Answer {
    sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", demo::CONFIDENTIAL_APP_ID),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
                ("scope", scope),
            ],
        )
        .await
}

async fn with_secret(
    sandbox: &TestSandbox,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> crate::common::Answer {
    with_secret_in(sandbox, demo::TENANT_ID, client_id, secret, scope).await
}

/// Client credentials with a posted secret, at `tenant`'s token endpoint.
async fn with_secret_in(
    sandbox: &TestSandbox,
    tenant: &str,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> crate::common::Answer {
    sandbox
        .token(
            tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", scope),
            ],
        )
        .await
}

#[tokio::test]
async fn client_secret_post_gives_an_app_only_exchange_token_with_granted_roles() {
    let sandbox = start().await;
    let answer = with_secret(
        &sandbox,
        demo::CONFIDENTIAL_APP_ID,
        demo::CONFIDENTIAL_APP_SECRET,
        demo::EXCHANGE_APP_SCOPE,
    )
    .await;
    let body = answer.assert_ok();
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body.get("refresh_token").is_none(),
        "never a refresh token for client credentials"
    );
    assert!(body.get("id_token").is_none());
    let app_claims = sandbox
        .verified_claims(body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(app_claims["aud"], "https://outlook.office365.com");
    assert_eq!(
        app_claims["roles"],
        json!(["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"])
    );
    assert_eq!(app_claims["idtyp"], "app");
    assert_eq!(app_claims["appid"], demo::CONFIDENTIAL_APP_ID);
    assert_eq!(
        app_claims["oid"],
        demo::CONFIDENTIAL_APP_SERVICE_PRINCIPAL_ID
    );
    assert_eq!(app_claims["appidacr"], "1");
    assert!(app_claims.get("scp").is_none() && app_claims.get("upn").is_none());

    let graph = with_secret(
        &sandbox,
        demo::CONFIDENTIAL_APP_ID,
        demo::CONFIDENTIAL_APP_SECRET,
        demo::GRAPH_APP_SCOPE,
    )
    .await;
    let graph_claims = claims(graph.assert_ok()["access_token"].as_str().unwrap());
    assert_eq!(graph_claims["aud"], "https://graph.microsoft.com");
    assert_eq!(
        graph_claims["roles"],
        json!(["Mail.Read", "Mail.ReadWrite", "Mail.Send", "User.Read.All"])
    );
}

#[tokio::test]
async fn client_secret_basic_is_accepted() {
    let sandbox = start().await;
    let encode =
        |part: &str| url::form_urlencoded::byte_serialize(part.as_bytes()).collect::<String>();
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        encode(demo::CONFIDENTIAL_APP_ID),
        encode(demo::CONFIDENTIAL_APP_SECRET)
    ));
    let response = sandbox
        .http
        .post(sandbox.token_url(demo::TENANT_ID))
        .header("authorization", format!("Basic {credentials}"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", demo::EXCHANGE_APP_SCOPE),
        ])
        .send()
        .await
        .unwrap();
    let answer = crate::common::answer(response).await;
    assert_eq!(
        claims(answer.assert_ok()["access_token"].as_str().unwrap())["appid"],
        demo::CONFIDENTIAL_APP_ID
    );
}

#[tokio::test]
async fn secret_errors_carry_entra_codes() {
    let sandbox = start().await;
    for (client_id, secret, status, error, code) in [
        (
            demo::CONFIDENTIAL_APP_ID,
            "not-the-secret",
            401,
            "invalid_client",
            7000215,
        ),
        // The classic mistake: the secret's ID instead of its value.
        (
            demo::CONFIDENTIAL_APP_ID,
            demo::CONFIDENTIAL_APP_SECRET_ID,
            401,
            "invalid_client",
            7000215,
        ),
        (
            demo::EXPIRED_SECRET_APP_ID,
            demo::EXPIRED_SECRET_APP_SECRET,
            401,
            "invalid_client",
            7000222,
        ),
        (
            demo::DISABLED_APP_ID,
            "x",
            400,
            "unauthorized_client",
            7000112,
        ),
    ] {
        with_secret(&sandbox, client_id, secret, demo::EXCHANGE_APP_SCOPE)
            .await
            .assert_error(status, error, code);
    }
    // A public client without credentials cannot use client credentials.
    sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", demo::PUBLIC_APP_ID),
                ("scope", demo::EXCHANGE_APP_SCOPE),
            ],
        )
        .await
        .assert_error(401, "invalid_client", 7000218);
}

#[tokio::test]
async fn client_credentials_scope_and_endpoint_errors() {
    let sandbox = start().await;
    for (scope, error, code) in [
        (demo::IMAP_SCOPE, "invalid_scope", 1002012),
        // Double-encoded scope, a classic bug.
        (
            "https%3A%2F%2Foutlook.office365.com%2F.default",
            "invalid_scope",
            1002012,
        ),
        (
            "https://outlook.office365.com/.default https://graph.microsoft.com/.default",
            "invalid_scope",
            700022,
        ),
        (
            "https://unknown.example.com/.default",
            "invalid_resource",
            500011,
        ),
    ] {
        with_secret(
            &sandbox,
            demo::CONFIDENTIAL_APP_ID,
            demo::CONFIDENTIAL_APP_SECRET,
            scope,
        )
        .await
        .assert_error(400, error, code);
    }
    for alias in ["organizations", "common"] {
        with_secret_in(
            &sandbox,
            alias,
            demo::CONFIDENTIAL_APP_ID,
            demo::CONFIDENTIAL_APP_SECRET,
            demo::EXCHANGE_APP_SCOPE,
        )
        .await
        .assert_error(400, "invalid_request", 9001023);
    }
}

#[tokio::test]
async fn certificate_assertions_rs256_x5t_and_ps256_x5t_s256_are_accepted() {
    let sandbox = start().await;
    let rs256 = AssertionSpec::valid(&sandbox).sign();
    let answer = with_assertion(&sandbox, &rs256, demo::EXCHANGE_APP_SCOPE).await;
    let claims_rs256 = claims(answer.assert_ok()["access_token"].as_str().unwrap());
    assert_eq!(claims_rs256["appidacr"], "2");

    let mut ps256 = AssertionSpec::valid(&sandbox);
    ps256.algorithm = jsonwebtoken::Algorithm::PS256;
    ps256.x5t = None;
    ps256.x5t_s256 = Some(demo::certificate().x5t_s256.clone());
    with_assertion(&sandbox, &ps256.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_ok();

    // MSAL Python pads its base64url thumbprints; the digest is what counts.
    let mut padded = AssertionSpec::valid(&sandbox);
    padded.x5t = Some(format!("{}=", demo::certificate().x5t));
    with_assertion(&sandbox, &padded.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_ok();

    // The domain form of the endpoint is an accepted audience too.
    let mut by_domain = AssertionSpec::valid(&sandbox);
    by_domain.audience = sandbox.token_url(demo::DOMAIN);
    with_assertion(&sandbox, &by_domain.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_ok();
}

#[tokio::test]
async fn certificate_assertion_errors_carry_entra_codes() {
    let sandbox = start().await;
    let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
        .unwrap()
        .serialize_pem();

    // Signed by a key other than the registered certificate's.
    let mut wrong_key = AssertionSpec::valid(&sandbox);
    wrong_key.private_key_pem = other_key.clone();
    let answer = with_assertion(&sandbox, &wrong_key.sign(), demo::EXCHANGE_APP_SCOPE).await;
    answer.assert_error(401, "invalid_client", 700027);

    // A thumbprint of a certificate that is not registered.
    let mut unregistered = AssertionSpec::valid(&sandbox);
    unregistered.x5t = Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    let answer = with_assertion(&sandbox, &unregistered.sign(), demo::EXCHANGE_APP_SCOPE).await;
    let body = answer.assert_error(401, "invalid_client", 700027);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("The key was not found")
    );

    let mut expired = AssertionSpec::valid(&sandbox);
    expired.not_before -= 7200;
    expired.expires -= 3600;

    let mut future = AssertionSpec::valid(&sandbox);
    future.not_before += 3600;
    future.expires += 3600;

    let mut wrong_audience = AssertionSpec::valid(&sandbox);
    wrong_audience.audience = "https://example.com/token".into();

    let mut wrong_issuer = AssertionSpec::valid(&sandbox);
    wrong_issuer.issuer = demo::PUBLIC_APP_ID.into();

    for (what, assertion, code) in [
        ("expired", expired.sign(), 700024),
        ("not yet valid", future.sign(), 700024),
        ("wrong audience", wrong_audience.sign(), 50012),
        ("wrong issuer", wrong_issuer.sign(), 700021),
        ("not a JWT", "not-a-jwt".to_string(), 50012),
    ] {
        let answer = with_assertion(&sandbox, &assertion, demo::EXCHANGE_APP_SCOPE).await;
        assert_eq!(answer.status.as_u16(), 401, "{what}: {}", answer.body);
        answer.assert_error(401, "invalid_client", code);
    }

    // A public client must not send an assertion.
    sandbox
        .user_ropc_with(
            demo::PUBLIC_APP_ID,
            demo::IMAP_SCOPE,
            &[
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &AssertionSpec::valid(&sandbox).sign()),
            ],
        )
        .await
        .assert_error(401, "invalid_client", 700025);
}

#[tokio::test]
async fn every_thumbprint_header_present_must_match_the_certificate() {
    let sandbox = start().await;
    let certificate = demo::certificate();
    let mut both = AssertionSpec::valid(&sandbox);
    both.x5t_s256 = Some(certificate.x5t_s256.clone());
    with_assertion(&sandbox, &both.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_ok();

    // A right SHA-256 thumbprint does not excuse a wrong SHA-1 one, nor the other way round.
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for (x5t, x5t_s256, algorithm) in [
        (
            wrong.to_string(),
            certificate.x5t_s256.clone(),
            jsonwebtoken::Algorithm::PS256,
        ),
        (
            certificate.x5t.clone(),
            wrong.to_string(),
            jsonwebtoken::Algorithm::RS256,
        ),
    ] {
        let mut mismatched = AssertionSpec::valid(&sandbox);
        mismatched.algorithm = algorithm;
        mismatched.x5t = Some(x5t);
        mismatched.x5t_s256 = Some(x5t_s256);
        let answer = with_assertion(&sandbox, &mismatched.sign(), demo::EXCHANGE_APP_SCOPE).await;
        let body = answer.assert_error(401, "invalid_client", 700027);
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.contains("The key was not found"),
            "{description}"
        );
        assert!(description.contains(wrong), "{description}");
    }
}

#[tokio::test]
async fn a_thumbprint_header_that_is_not_a_string_is_a_malformed_assertion() {
    let sandbox = start().await;
    let spec = AssertionSpec::valid(&sandbox);
    let signed = spec.sign();
    // Re-sign with a numeric `x5t#S256` next to the valid `x5t` (jsonwebtoken's Header only takes strings).
    let mut parts = signed.split('.');
    let header_part = parts.next().unwrap();
    let payload_part = parts.next().unwrap();
    let mut header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header_part)
            .unwrap(),
    )
    .unwrap();
    header["x5t#S256"] = json!(42);
    let header_part =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header.to_string().as_bytes());
    let signing_input = format!("{header_part}.{payload_part}");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(spec.private_key_pem.as_bytes()).unwrap();
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::RS256,
    )
    .unwrap();
    with_assertion(
        &sandbox,
        &format!("{signing_input}.{signature}"),
        demo::EXCHANGE_APP_SCOPE,
    )
    .await
    .assert_error(401, "invalid_client", 50012);
}

#[tokio::test]
async fn a_replayed_assertion_is_accepted_by_default_as_entra_does() {
    // MSAL Python reuses one assertion for minutes; Entra (and so the sandbox, by default) accepts it.
    let sandbox = start().await;
    let assertion = AssertionSpec::valid(&sandbox).sign();
    for _ in 0..2 {
        with_assertion(&sandbox, &assertion, demo::EXCHANGE_APP_SCOPE)
            .await
            .assert_ok();
    }
}

#[tokio::test]
async fn a_replayed_assertion_jti_is_refused_when_configured_until_it_expires() {
    let clock = std::sync::Arc::new(m365mail_sandbox::FakeClock::new(SystemClock.now()));
    let sandbox = start_with(m365mail_sandbox::SandboxConfig {
        reject_replayed_assertions: true,
        clock: clock.clone(),
        ..Default::default()
    })
    .await;
    let assertion = AssertionSpec::valid(&sandbox).sign();
    with_assertion(&sandbox, &assertion, demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_ok();
    let body = with_assertion(&sandbox, &assertion, demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_error(401, "invalid_client", 50012)
        .clone();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("already been used"),
        "{body}"
    );
    // The same jti in a freshly signed assertion is still a replay; another jti is fine.
    let mut same_jti = AssertionSpec::valid(&sandbox);
    same_jti.overrides = vec![("jti", json!("fixed-jti"))];
    with_assertion(&sandbox, &same_jti.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_ok();
    with_assertion(&sandbox, &same_jti.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_error(401, "invalid_client", 50012);
    with_assertion(
        &sandbox,
        &AssertionSpec::valid(&sandbox).sign(),
        demo::EXCHANGE_APP_SCOPE,
    )
    .await
    .assert_ok();

    // Once the first assertion is past `exp` plus the five minutes of skew, its jti is forgotten.
    clock.advance(std::time::Duration::from_secs(600 + 301));
    let now = clock.unix_seconds() as i64;
    let mut later = AssertionSpec::valid(&sandbox);
    later.not_before = now;
    later.expires = now + 600;
    later.overrides = vec![("jti", json!("fixed-jti"))];
    with_assertion(&sandbox, &later.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_ok();
}

#[tokio::test]
async fn assertion_times_beyond_u64_do_not_break_the_endpoint() {
    let sandbox = start().await;
    // An `exp` far beyond u64 seconds (Entra enforces no maximum lifetime): accepted.
    let mut huge_exp = AssertionSpec::valid(&sandbox);
    huge_exp.overrides = vec![("exp", json!(1e30))];
    with_assertion(&sandbox, &huge_exp.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_ok();
    // A huge `nbf` is simply in the future; a negative `exp` is long past.
    let mut huge_nbf = AssertionSpec::valid(&sandbox);
    huge_nbf.overrides = vec![("nbf", json!(u64::MAX)), ("exp", json!(1e30))];
    with_assertion(&sandbox, &huge_nbf.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_error(401, "invalid_client", 700024);
    let mut negative = AssertionSpec::valid(&sandbox);
    negative.overrides = vec![("exp", json!(-5)), ("nbf", json!(-1e30))];
    with_assertion(&sandbox, &negative.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_error(401, "invalid_client", 700024);
}
