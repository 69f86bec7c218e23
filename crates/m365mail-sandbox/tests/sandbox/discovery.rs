use m365mail_sandbox::demo;

use crate::common::start;

#[tokio::test]
async fn openid_configuration_names_the_sandbox_endpoints() {
    let sandbox = start().await;
    let base = sandbox.sandbox.base_url().to_string();
    for segment in [demo::TENANT_ID, demo::DOMAIN] {
        let response = sandbox
            .http
            .get(sandbox.url(&format!("{segment}/v2.0/.well-known/openid-configuration")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["cache-control"],
            "max-age=86400, private"
        );
        let document: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            document["issuer"],
            format!("{base}{}/v2.0", demo::TENANT_ID)
        );
        assert_eq!(
            document["token_endpoint"],
            format!("{base}{}/oauth2/v2.0/token", demo::TENANT_ID)
        );
        assert_eq!(
            document["device_authorization_endpoint"],
            format!("{base}{}/oauth2/v2.0/devicecode", demo::TENANT_ID)
        );
        assert_eq!(
            document["authorization_endpoint"],
            format!("{base}{}/oauth2/v2.0/authorize", demo::TENANT_ID)
        );
        assert_eq!(
            document["jwks_uri"],
            format!("{base}{}/discovery/v2.0/keys", demo::TENANT_ID)
        );
        assert_eq!(
            document["token_endpoint_auth_methods_supported"],
            serde_json::json!([
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic"
            ])
        );
    }
    let common = sandbox
        .get_json("common/v2.0/.well-known/openid-configuration")
        .await;
    assert_eq!(
        common.assert_ok()["issuer"],
        format!("{base}{{tenantid}}/v2.0")
    );
    assert_eq!(
        common.body["token_endpoint"],
        format!("{base}common/oauth2/v2.0/token")
    );
}

#[tokio::test]
async fn unknown_tenant_is_aadsts90002_everywhere() {
    let sandbox = start().await;
    sandbox
        .get_json("nosuchtenant.onmicrosoft.com/v2.0/.well-known/openid-configuration")
        .await
        .assert_error(400, "invalid_request", 90002);
    sandbox
        .token(
            "00000000-1111-2222-3333-444444444444",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", demo::CONFIDENTIAL_APP_ID),
            ],
        )
        .await
        .assert_error(400, "invalid_request", 90002);
}

#[tokio::test]
async fn jwks_publishes_an_rsa_key_with_kid_and_x5t() {
    let sandbox = start().await;
    let jwks = sandbox
        .get_json(&format!("{}/discovery/v2.0/keys", demo::TENANT_ID))
        .await;
    let key = &jwks.assert_ok()["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], key["x5t"]);
    assert_eq!(key["e"], "AQAB");
    use base64::Engine as _;
    let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key["n"].as_str().unwrap())
        .unwrap();
    assert_eq!(modulus.len(), 256, "2048-bit modulus");
    assert!(modulus[0] >= 0x80, "no leading zero byte");
    assert_eq!(key["x5c"].as_array().unwrap().len(), 1);
    let certificate = base64::engine::general_purpose::STANDARD
        .decode(key["x5c"][0].as_str().unwrap())
        .unwrap();
    let sha1 =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &certificate);
    assert_eq!(
        key["x5t"],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha1.as_ref()),
        "x5t is the SHA-1 thumbprint of the x5c certificate"
    );
}

#[tokio::test]
async fn instance_discovery_and_user_realm_answer_like_entra() {
    let sandbox = start().await;
    let authorize = sandbox.url(&format!("{}/oauth2/v2.0/authorize", demo::TENANT_ID));
    let response = sandbox
        .http
        .get(crate::common::with_query(
            &sandbox.url("common/discovery/instance"),
            &[
                ("api-version", "1.1"),
                ("authorization_endpoint", authorize.as_str()),
            ],
        ))
        .send()
        .await
        .unwrap();
    let discovery: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        discovery["tenant_discovery_endpoint"],
        sandbox.url(&format!(
            "{}/v2.0/.well-known/openid-configuration",
            demo::TENANT_ID
        ))
    );
    let host = sandbox.sandbox.base_url().host_str().unwrap().to_string();
    let port = sandbox.sandbox.base_url().port().unwrap();
    assert_eq!(
        discovery["metadata"][0]["aliases"][0],
        format!("{host}:{port}")
    );

    let realm = sandbox
        .get_json(&format!(
            "common/userrealm/{}?api-version=1.0",
            demo::USER_UPN
        ))
        .await;
    assert_eq!(realm.assert_ok()["account_type"], "Managed");
    assert_eq!(realm.body["domain_name"], demo::DOMAIN);
    let unknown = sandbox
        .get_json("common/userrealm/someone@example.org?api-version=1.0")
        .await;
    assert_eq!(unknown.assert_ok()["account_type"], "Unknown");
}

#[tokio::test]
async fn token_endpoint_rejects_get_and_missing_fields() {
    let sandbox = start().await;
    let get = sandbox
        .get_json(&format!("{}/oauth2/v2.0/token", demo::TENANT_ID))
        .await;
    get.assert_error(400, "invalid_request", 900561);

    let no_grant = sandbox
        .token(demo::TENANT_ID, &[("client_id", demo::PUBLIC_APP_ID)])
        .await;
    let body = no_grant.assert_error(400, "invalid_request", 900144);
    assert!(
        body["error_description"].as_str().unwrap().starts_with(
            "AADSTS900144: The request body must contain the following parameter: 'grant_type'.\r\n"
        ),
        "{body}"
    );

    let no_client = sandbox
        .token(demo::TENANT_ID, &[("grant_type", "password")])
        .await;
    no_client.assert_error(400, "invalid_request", 900144);

    let unknown_grant = sandbox
        .token(
            demo::TENANT_ID,
            &[("grant_type", "saml"), ("client_id", demo::PUBLIC_APP_ID)],
        )
        .await;
    unknown_grant.assert_error(400, "unsupported_grant_type", 70003);
}

/// Entra refuses a parameter sent twice (AADSTS9000411) instead of using one of the values.
#[tokio::test]
async fn token_and_devicecode_endpoints_refuse_duplicated_parameters() {
    let sandbox = start().await;
    let assert_duplicated = |answer: crate::common::Answer, name: &str| {
        let body = answer.assert_error(400, "invalid_request", 9000411);
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!(
                "AADSTS9000411: The request is not properly formatted. The parameter '{name}' is duplicated.\r\n"
            )),
            "{description}"
        );
    };
    // First-wins would sign in with the right password; Entra refuses the request.
    let mut form = crate::common::user_ropc_form(demo::PUBLIC_APP_ID, demo::IMAP_SCOPE, &[]);
    form.push(("password", "wrong"));
    assert_duplicated(sandbox.token(demo::TENANT_ID, &form).await, "password");
    // The same value twice, an empty value twice, and before a missing parameter.
    for (form, name) in [
        (
            vec![
                ("grant_type", "password"),
                ("grant_type", "password"),
                ("client_id", demo::PUBLIC_APP_ID),
            ],
            "grant_type",
        ),
        (
            vec![("client_id", demo::PUBLIC_APP_ID), ("x", ""), ("x", "")],
            "x",
        ),
    ] {
        assert_duplicated(sandbox.token(demo::TENANT_ID, &form).await, name);
    }
    let devicecode = sandbox.url(&format!("{}/oauth2/v2.0/devicecode", demo::TENANT_ID));
    assert_duplicated(
        sandbox
            .post_form(
                &devicecode,
                &[
                    ("client_id", demo::PUBLIC_APP_ID),
                    ("scope", demo::IMAP_SCOPE),
                    ("scope", "https://graph.microsoft.com/Mail.Read"),
                ],
            )
            .await,
        "scope",
    );
    // Each request counted once, under the first grant_type sent.
    let stats = sandbox.sandbox.admin().stats();
    assert_eq!(stats.endpoint("token"), 3);
    assert_eq!(stats.grant("password"), 2);
    assert_eq!(stats.grant("(none)"), 1);
    assert_eq!(stats.endpoint("devicecode"), 1);
}

#[tokio::test]
async fn plain_http_mode_serves_the_same_endpoints() {
    let sandbox = m365mail_sandbox::Sandbox::start(m365mail_sandbox::SandboxConfig {
        tls: false,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(sandbox.base_url().scheme(), "http");
    let document: serde_json::Value = reqwest::get(format!(
        "{}{}/v2.0/.well-known/openid-configuration",
        sandbox.base_url(),
        demo::TENANT_ID
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        document["issuer"],
        format!("{}{}/v2.0", sandbox.base_url(), demo::TENANT_ID)
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_does_not_block_other_clients() {
    let sandbox = crate::common::start_with(m365mail_sandbox::SandboxConfig {
        tls_handshake_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let address = format!(
        "{}:{}",
        sandbox.sandbox.base_url().host_str().unwrap(),
        sandbox.sandbox.base_url().port().unwrap()
    );
    // A client that connects and never says anything.
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sandbox.get_json(&format!("{}/discovery/v2.0/keys", demo::TENANT_ID)),
    )
    .await
    .expect("answered while another handshake is stalled");
    answer.assert_ok();

    // After `tls_handshake_timeout` the stalled connection is closed by the sandbox (EOF or reset).
    let mut buffer = [0_u8; 16];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stalled, &mut buffer),
    )
    .await
    .expect("the stalled handshake was dropped after the configured timeout");
    // It sent nothing, so the close is a clean end of stream (no reset).
    assert!(matches!(read, Ok(0)), "{read:?}");
}

#[tokio::test]
async fn https_negotiates_http2_and_serves_many_concurrent_requests() {
    let sandbox = start().await;
    let response = sandbox
        .http
        .get(sandbox.url(&format!("{}/discovery/v2.0/keys", demo::TENANT_ID)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);

    let requests = (0..100).map(|_| {
        let http = sandbox.http.clone();
        let url = sandbox.token_url(demo::TENANT_ID);
        tokio::spawn(async move {
            http.post(url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", demo::CONFIDENTIAL_APP_ID),
                    ("client_secret", demo::CONFIDENTIAL_APP_SECRET),
                    ("scope", demo::EXCHANGE_APP_SCOPE),
                ])
                .send()
                .await
                .map(|response| response.status())
        })
    });
    let handles: Vec<_> = requests.collect();
    for handle in handles {
        assert_eq!(handle.await.unwrap().unwrap(), reqwest::StatusCode::OK);
    }
    assert_eq!(
        sandbox.sandbox.admin().stats().grant("client_credentials"),
        100
    );
}
