//! `AdminHandle::check_bearer`: the one bearer check behind the sandbox's IMAP, POP3, SMTP and Graph
//! services, fed with tokens the sandbox issued over HTTPS.

use std::time::Duration;

use m365mail_sandbox::{
    AccessTokenLifetime, BearerRefusal, Lifetimes, Principal, Requirement, admin::UserUpdate, demo,
};

use crate::common::{TestSandbox, start, start_with_fake_clock};

async fn delegated(sandbox: &TestSandbox, scope: &str) -> String {
    let answer = sandbox.user_ropc(demo::PUBLIC_APP_ID, scope).await;
    answer.assert_ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn app_only(sandbox: &TestSandbox, scope: &str) -> String {
    sandbox.app_token(scope).await
}

#[tokio::test]
async fn a_delegated_token_serves_its_scope_and_names_the_user() {
    let sandbox = start().await;
    let admin = sandbox.sandbox.admin();
    let imap = delegated(&sandbox, demo::IMAP_SCOPE).await;
    assert_eq!(
        admin.check_bearer(&imap, Requirement::IMAP),
        Ok(Principal::User {
            tenant_id: demo::TENANT_ID.into(),
            upn: demo::USER_UPN.into(),
            object_id: demo::USER_OBJECT_ID.into(),
            app_id: demo::PUBLIC_APP_ID.into(),
        })
    );
    assert_eq!(
        admin.check_bearer(&imap, Requirement::POP),
        Err(BearerRefusal::MissingScope {
            needed: "POP.AccessAsUser.All"
        })
    );
    assert_eq!(
        admin.check_bearer(&imap, Requirement::SMTP),
        Err(BearerRefusal::MissingScope {
            needed: "SMTP.Send"
        })
    );
    assert_eq!(
        admin.check_bearer(&imap, Requirement::GRAPH_MAIL_SEND),
        Err(BearerRefusal::WrongAudience {
            audience: "https://outlook.office.com".into()
        })
    );
    // A user disabled after the token was issued is refused.
    admin
        .update_user(
            demo::USER_UPN,
            UserUpdate {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        admin.check_bearer(&imap, Requirement::IMAP),
        Err(BearerRefusal::UnknownIdentity {
            what: "user",
            id: demo::USER_OBJECT_ID.into()
        })
    );
}

#[tokio::test]
async fn an_app_only_token_serves_its_roles_and_names_the_app() {
    let sandbox = start().await;
    let admin = sandbox.sandbox.admin();
    let exchange = app_only(&sandbox, demo::EXCHANGE_APP_SCOPE).await;
    let app = Principal::App {
        tenant_id: demo::TENANT_ID.into(),
        app_id: demo::CONFIDENTIAL_APP_ID.into(),
        service_principal_id: demo::CONFIDENTIAL_APP_SERVICE_PRINCIPAL_ID.into(),
    };
    for requirement in [Requirement::IMAP, Requirement::POP, Requirement::SMTP] {
        assert_eq!(admin.check_bearer(&exchange, requirement), Ok(app.clone()));
    }
    assert_eq!(
        admin.check_bearer(&exchange, Requirement::GRAPH_MAIL_SEND),
        Err(BearerRefusal::WrongAudience {
            audience: "https://outlook.office365.com".into()
        })
    );
    let graph = app_only(&sandbox, demo::GRAPH_APP_SCOPE).await;
    assert_eq!(
        admin.check_bearer(&graph, Requirement::GRAPH_MAIL_SEND),
        Ok(app)
    );
    // Roles revoked: a token minted afterwards lacks the role.
    admin
        .revoke_app_roles(demo::CONFIDENTIAL_APP_ID, None)
        .unwrap();
    let bare = app_only(&sandbox, demo::EXCHANGE_APP_SCOPE).await;
    assert_eq!(
        admin.check_bearer(&bare, Requirement::IMAP),
        Err(BearerRefusal::MissingRole {
            needed: "IMAP.AccessAsApp"
        })
    );
}

#[tokio::test]
async fn expiry_follows_the_sandbox_clock_to_the_second() {
    let lifetimes = Lifetimes {
        access_token: AccessTokenLifetime::Fixed(Duration::from_secs(600)),
        ..Lifetimes::default()
    };
    let (sandbox, clock) = start_with_fake_clock(lifetimes).await;
    let token = delegated(&sandbox, demo::IMAP_SCOPE).await;
    let admin = sandbox.sandbox.admin();
    let exp = crate::common::claims(&token)["exp"].as_u64().unwrap();
    clock.advance(Duration::from_secs(599));
    assert!(admin.check_bearer(&token, Requirement::IMAP).is_ok());
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        admin.check_bearer(&token, Requirement::IMAP),
        Err(BearerRefusal::Expired { expired_at: exp })
    );
}

#[tokio::test]
async fn forged_and_foreign_tokens_are_refused() {
    let sandbox = start().await;
    let other = start().await;
    let admin = sandbox.sandbox.admin();
    let token = delegated(&sandbox, demo::IMAP_SCOPE).await;
    // Signed by another sandbox's key (same tenant, same claims shape).
    let foreign = delegated(&other, demo::IMAP_SCOPE).await;
    assert_eq!(
        admin.check_bearer(&foreign, Requirement::IMAP),
        Err(BearerRefusal::BadSignature)
    );
    // The payload changed after signing.
    let mut parts: Vec<&str> = token.split('.').collect();
    let foreign_payload = foreign.split('.').nth(1).unwrap().to_owned();
    parts[1] = &foreign_payload;
    assert_eq!(
        admin.check_bearer(&parts.join("."), Requirement::IMAP),
        Err(BearerRefusal::BadSignature)
    );
    for garbage in ["", "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA", "a.b.c"] {
        assert_eq!(
            admin.check_bearer(garbage, Requirement::IMAP),
            Err(BearerRefusal::Malformed),
            "{garbage:?}"
        );
    }
}

/// RFC 7662 introspection at `POST /_sandbox/introspect` (for Dovecot's oauth2 introspection mode): always
/// 200; active with the user and the Exchange scope for a sandbox token, inactive for a Graph token, garbage,
/// a missing token and, once the clock passes its end, an expired one.
#[tokio::test]
async fn introspection_answers_for_the_sandboxs_own_tokens() {
    let (sandbox, clock) = start_with_fake_clock(Lifetimes {
        access_token: AccessTokenLifetime::Fixed(Duration::from_secs(3600)),
        ..Lifetimes::default()
    })
    .await;
    let introspect = |token: Option<String>| {
        let mut form = Vec::new();
        if let Some(token) = token {
            form.push(("token", token));
        }
        sandbox
            .http
            .post(sandbox.url("_sandbox/introspect"))
            .form(&form)
            .send()
    };
    let imap = delegated(&sandbox, demo::IMAP_SCOPE).await;
    let answer = introspect(Some(imap.clone())).await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["username"], demo::USER_UPN);
    assert_eq!(body["scope"], "IMAP.AccessAsUser.All");
    assert_eq!(body["client_id"], demo::PUBLIC_APP_ID);
    assert!(body["exp"].as_u64().is_some());
    // A token good for several protocols lists every Exchange scope it carries (RFC 7662's space-separated
    // list), so that Dovecot's per-protocol `scope` check passes it for each.
    let both = delegated(
        &sandbox,
        &format!("{} {}", demo::POP_SCOPE, demo::IMAP_SCOPE),
    )
    .await;
    let body: serde_json::Value = introspect(Some(both)).await.unwrap().json().await.unwrap();
    assert_eq!(
        body["scope"], "IMAP.AccessAsUser.All POP.AccessAsUser.All",
        "{body}"
    );
    let inactive = serde_json::json!({ "active": false });
    let graph = app_only(&sandbox, "https://graph.microsoft.com/.default").await;
    for token in [Some(graph), Some("not.a.token".to_owned()), None] {
        let answer = introspect(token).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.json::<serde_json::Value>().await.unwrap(), inactive);
    }
    clock.advance(Duration::from_secs(3600));
    let expired = introspect(Some(imap)).await.unwrap();
    assert_eq!(expired.json::<serde_json::Value>().await.unwrap(), inactive);
}
