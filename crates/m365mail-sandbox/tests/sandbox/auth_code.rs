use m365mail_sandbox::demo;

use crate::common::{Answer, TestSandbox, claims, start, with_query};

/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "http://localhost:53117/";
const SCOPE: &str =
    "https://outlook.office.com/IMAP.AccessAsUser.All openid profile offline_access";

fn authorize_url(sandbox: &TestSandbox) -> String {
    sandbox.url(&format!("{}/oauth2/v2.0/authorize", demo::TENANT_ID))
}

fn authorize_params<'a>(client_id: &'a str, redirect_uri: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", client_id),
        ("response_type", "code"),
        ("redirect_uri", redirect_uri),
        ("scope", SCOPE),
        ("state", "xyz-state"),
        ("nonce", "n-0S6_WzA2Mj"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]
}

/// Posts the sign-in form and returns (status, Location or page text).
async fn sign_in(
    sandbox: &TestSandbox,
    mut params: Vec<(&str, &str)>,
    username: &str,
    password: &str,
) -> (u16, String) {
    params.push(("username", username));
    params.push(("password", password));
    let response = sandbox
        .http
        .post(authorize_url(sandbox))
        .form(&params)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 302 {
        return (
            status,
            response.headers()["location"].to_str().unwrap().to_string(),
        );
    }
    (status, response.text().await.unwrap())
}

/// The `Location` of an answer that must be a 302.
#[track_caller]
fn location_of(response: &reqwest::Response) -> String {
    assert_eq!(response.status(), 302, "expected a redirect");
    response.headers()["location"].to_str().unwrap().to_string()
}

/// GETs the authorize endpoint with `params`; expects a 302 and returns its `Location`.
async fn authorize_redirect(sandbox: &TestSandbox, params: &[(&str, &str)]) -> String {
    let response = sandbox
        .http
        .get(with_query(&authorize_url(sandbox), params))
        .send()
        .await
        .unwrap();
    location_of(&response)
}

/// Asserts an error redirect: its `error`, and an `error_description` starting with `AADSTS<code>`.
#[track_caller]
fn assert_redirect_error(location: &str, error: &str, code: u32) {
    assert_eq!(
        query_value(location, "error").as_deref(),
        Some(error),
        "{location}"
    );
    let description = query_value(location, "error_description").unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}")),
        "{description}"
    );
}

fn query_value(location: &str, name: &str) -> Option<String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

async fn redeem(sandbox: &TestSandbox, code: &str, verifier: &str, redirect_uri: &str) -> Answer {
    sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", demo::PUBLIC_APP_ID),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
                ("scope", SCOPE),
                ("client_info", "1"),
            ],
        )
        .await
}

#[tokio::test]
async fn authorize_shows_a_form_that_carries_the_request() {
    let sandbox = start().await;
    let response = sandbox
        .http
        .get(with_query(
            &authorize_url(&sandbox),
            &authorize_params(demo::PUBLIC_APP_ID, REDIRECT),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("name=\"username\"") && page.contains("name=\"password\""));
    assert!(page.contains(&format!("name=\"code_challenge\" value=\"{CHALLENGE}\"")));
    assert!(page.contains("name=\"state\" value=\"xyz-state\""));
}

#[tokio::test]
async fn auth_code_with_pkce_s256_end_to_end() {
    let sandbox = start().await;
    // MFA users pass in the browser.
    let (status, location) = sign_in(
        &sandbox,
        authorize_params(demo::PUBLIC_APP_ID, REDIRECT),
        demo::MFA_USER_UPN,
        demo::MFA_USER_PASSWORD,
    )
    .await;
    assert_eq!(status, 302, "{location}");
    assert!(location.starts_with(REDIRECT));
    assert_eq!(
        query_value(&location, "state").as_deref(),
        Some("xyz-state")
    );
    let code = query_value(&location, "code").unwrap();

    let answer = redeem(&sandbox, &code, VERIFIER, REDIRECT).await;
    let body = answer.assert_ok();
    let id_token = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id_token["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(id_token["preferred_username"], demo::MFA_USER_UPN);
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["scp"],
        "IMAP.AccessAsUser.All"
    );
    assert!(body["refresh_token"].as_str().unwrap().starts_with("1.AV"));
    let client_info: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            body["client_info"].as_str().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        client_info,
        serde_json::json!({"uid": demo::MFA_USER_OBJECT_ID, "utid": demo::TENANT_ID})
    );

    redeem(&sandbox, &code, VERIFIER, REDIRECT)
        .await
        .assert_error(400, "invalid_grant", 54005);
}

#[tokio::test]
async fn pkce_mismatch_plain_method_and_redirect_mismatch() {
    let sandbox = start().await;
    let (_, location) = sign_in(
        &sandbox,
        authorize_params(demo::PUBLIC_APP_ID, REDIRECT),
        demo::USER_UPN,
        demo::USER_PASSWORD,
    )
    .await;
    let code = query_value(&location, "code").unwrap();
    redeem(
        &sandbox,
        &code,
        "a-different-verifier-a-different-verifier-1234",
        REDIRECT,
    )
    .await
    .assert_error(400, "invalid_grant", 501481);
    redeem(&sandbox, &code, VERIFIER, "http://localhost:9999/")
        .await
        .assert_error(400, "invalid_request", 50011);
    // The failed attempts did not consume the code.
    redeem(&sandbox, &code, VERIFIER, REDIRECT)
        .await
        .assert_ok();

    let mut plain = authorize_params(demo::PUBLIC_APP_ID, REDIRECT);
    plain.retain(|(name, _)| !name.starts_with("code_challenge"));
    plain.push(("code_challenge", VERIFIER));
    plain.push(("code_challenge_method", "plain"));
    let (_, location) = sign_in(&sandbox, plain, demo::USER_UPN, demo::USER_PASSWORD).await;
    let code = query_value(&location, "code").unwrap();
    redeem(&sandbox, &code, VERIFIER, REDIRECT)
        .await
        .assert_ok();
}

#[tokio::test]
async fn authorize_errors_as_pages_and_redirects() {
    let sandbox = start().await;
    // Unregistered redirect URI: a page, never a redirect.
    let (status, page) = sign_in(
        &sandbox,
        authorize_params(demo::PUBLIC_APP_ID, "https://evil.example.com/cb"),
        demo::USER_UPN,
        demo::USER_PASSWORD,
    )
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("AADSTS50011"), "{page}");

    // A wrong password keeps the user on the form.
    let (status, page) = sign_in(
        &sandbox,
        authorize_params(demo::PUBLIC_APP_ID, REDIRECT),
        demo::USER_UPN,
        "nope",
    )
    .await;
    assert_eq!(status, 200);
    assert!(page.contains("AADSTS50126"), "{page}");

    // Missing consent goes back to the app.
    let (status, location) = sign_in(
        &sandbox,
        authorize_params(demo::NO_CONSENT_APP_ID, REDIRECT),
        demo::USER_UPN,
        demo::USER_PASSWORD,
    )
    .await;
    assert_eq!(status, 302);
    assert_redirect_error(&location, "consent_required", 65001);
    assert_eq!(
        query_value(&location, "state").as_deref(),
        Some("xyz-state")
    );

    let mut token_flow = authorize_params(demo::PUBLIC_APP_ID, REDIRECT);
    token_flow.retain(|(name, _)| *name != "response_type");
    token_flow.push(("response_type", "token"));
    let location = authorize_redirect(&sandbox, &token_flow).await;
    assert_eq!(
        query_value(&location, "error").as_deref(),
        Some("unsupported_response_type")
    );
}

#[tokio::test]
async fn confidential_app_redeems_with_its_secret() {
    let sandbox = start().await;
    let redirect = "http://localhost/callback";
    let mut params = authorize_params(demo::CONFIDENTIAL_APP_ID, redirect);
    params.retain(|(name, _)| !name.starts_with("code_challenge"));
    let (status, location) = sign_in(&sandbox, params, demo::USER_UPN, demo::USER_PASSWORD).await;
    assert_eq!(status, 302, "{location}");
    let code = query_value(&location, "code").unwrap();
    let form = |secret: Option<&'static str>| {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("client_id", demo::CONFIDENTIAL_APP_ID),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
        ];
        if let Some(secret) = secret {
            form.push(("client_secret", secret));
        }
        form
    };
    sandbox
        .token(demo::TENANT_ID, &form(None))
        .await
        .assert_error(401, "invalid_client", 7000218);
    let answer = sandbox
        .token(demo::TENANT_ID, &form(Some(demo::CONFIDENTIAL_APP_SECRET)))
        .await;
    assert_eq!(
        claims(answer.assert_ok()["access_token"].as_str().unwrap())["appidacr"],
        "1"
    );
}

#[tokio::test]
async fn codes_from_the_organizations_endpoint_redeem_there() {
    let sandbox = start().await;
    let mut params = authorize_params(demo::PUBLIC_APP_ID, REDIRECT);
    params.push(("username", demo::USER_UPN));
    params.push(("password", demo::USER_PASSWORD));
    let response = sandbox
        .http
        .post(sandbox.url("organizations/oauth2/v2.0/authorize"))
        .form(&params)
        .send()
        .await
        .unwrap();
    let location = location_of(&response);
    let code = query_value(&location, "code").unwrap();
    let answer = sandbox
        .token(
            "organizations",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", demo::PUBLIC_APP_ID),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    assert_eq!(
        claims(answer.assert_ok()["access_token"].as_str().unwrap())["tid"],
        demo::TENANT_ID
    );
}

#[tokio::test]
async fn silent_authorize_requests_get_login_required() {
    let sandbox = start().await;
    let mut params = authorize_params(demo::PUBLIC_APP_ID, REDIRECT);
    params.push(("prompt", "none"));
    let location = authorize_redirect(&sandbox, &params).await;
    assert_redirect_error(&location, "login_required", 50058);
}

#[tokio::test]
async fn redirect_uris_with_control_characters_or_a_fragment_are_not_registered_ones() {
    // The URL parser drops tabs and newlines ("http://local\nhost:53117/" parses as localhost), so
    // such a redirect URI would otherwise match the loopback registration and then fail as a header.
    let sandbox = start().await;
    for redirect_uri in [
        "http://local\nhost:53117/",
        "http://localhost:53117/\tcb",
        " http://localhost:53117/",
        "http://localhost:53117/#fragment",
    ] {
        let (status, page) = sign_in(
            &sandbox,
            authorize_params(demo::PUBLIC_APP_ID, redirect_uri),
            demo::USER_UPN,
            demo::USER_PASSWORD,
        )
        .await;
        assert_eq!(status, 400, "{redirect_uri:?}: {page}");
        assert!(page.contains("AADSTS50011"), "{redirect_uri:?}: {page}");
    }
}
