use m365mail_sandbox::demo;

use crate::common::{TestSandbox, start, with_query};

const REDIRECT: &str = "http://localhost:8400/";

fn consent_url(sandbox: &TestSandbox, v2: bool) -> String {
    if v2 {
        sandbox.url(&format!("{}/v2.0/adminconsent", demo::TENANT_ID))
    } else {
        sandbox.url(&format!("{}/adminconsent", demo::TENANT_ID))
    }
}

/// Posts the consent form; returns the redirect's query pairs.
async fn consent(
    sandbox: &TestSandbox,
    v2: bool,
    scope: Option<&str>,
    username: &str,
    password: &str,
) -> Vec<(String, String)> {
    let mut form = vec![
        ("client_id", demo::NO_CONSENT_APP_ID),
        ("redirect_uri", REDIRECT),
        ("state", "s-42"),
        ("username", username),
        ("password", password),
    ];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    let response = sandbox
        .http
        .post(consent_url(sandbox, v2))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302, "{}", response.text().await.unwrap());
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(REDIRECT));
    location
        .query_pairs()
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

#[tokio::test]
async fn an_admin_grants_consent_and_ropc_then_works() {
    let sandbox = start().await;
    let ropc = || sandbox.user_ropc(demo::NO_CONSENT_APP_ID, demo::IMAP_SCOPE);
    ropc().await.assert_error(400, "invalid_grant", 65001);

    let page = sandbox
        .http
        .get(with_query(
            &consent_url(&sandbox, true),
            &[
                ("client_id", demo::NO_CONSENT_APP_ID),
                ("redirect_uri", REDIRECT),
                ("scope", "https://outlook.office.com/.default"),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("name=\"password\""));

    let pairs = consent(
        &sandbox,
        true,
        Some("https://outlook.office.com/.default"),
        demo::ADMIN_UPN,
        demo::ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(value(&pairs, "admin_consent"), Some("True"));
    assert_eq!(value(&pairs, "tenant"), Some(demo::TENANT_ID));
    assert_eq!(value(&pairs, "state"), Some("s-42"));
    assert_eq!(
        value(&pairs, "scope"),
        Some("https://outlook.office.com/.default")
    );
    ropc().await.assert_ok();
    // Only the named resource was consented.
    sandbox
        .user_ropc(demo::NO_CONSENT_APP_ID, "User.Read")
        .await
        .assert_error(400, "invalid_grant", 65001);
}

#[tokio::test]
async fn the_classic_form_consents_to_everything_requested() {
    let sandbox = start().await;
    let pairs = consent(&sandbox, false, None, demo::ADMIN_UPN, demo::ADMIN_PASSWORD).await;
    assert_eq!(value(&pairs, "admin_consent"), Some("True"));
    sandbox
        .user_ropc(demo::NO_CONSENT_APP_ID, "User.Read")
        .await
        .assert_ok();
}

#[tokio::test]
async fn consent_failures() {
    let sandbox = start().await;
    let pairs = consent(
        &sandbox,
        true,
        Some("https://outlook.office.com/.default"),
        demo::USER_UPN,
        demo::USER_PASSWORD,
    )
    .await;
    assert_eq!(value(&pairs, "error"), Some("permission_denied"));
    assert_eq!(
        value(&pairs, "error_description"),
        Some(
            "AADSTS90094: The grant requires admin permission. Only an administrator can grant consent for the whole organization."
        )
    );

    sandbox.sandbox.admin().update_tenant_model(|model| {
        let app = model.find_app_mut(demo::NO_CONSENT_APP_ID).unwrap();
        app.required_permissions
            .retain(|permission| permission.resource != "00000003-0000-0000-c000-000000000000");
    });
    let pairs = consent(
        &sandbox,
        true,
        Some("https://graph.microsoft.com/.default"),
        demo::ADMIN_UPN,
        demo::ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(value(&pairs, "error"), Some("invalid_request"), "{pairs:?}");
    assert!(
        value(&pairs, "error_description")
            .unwrap()
            .starts_with("AADSTS650057: Invalid resource."),
        "{pairs:?}"
    );

    // A redirect URI that is not registered is never redirected to.
    let response = sandbox
        .http
        .post(consent_url(&sandbox, false))
        .form(&[
            ("client_id", demo::NO_CONSENT_APP_ID),
            ("redirect_uri", "https://evil.example.com/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("AADSTS50011"));
}
