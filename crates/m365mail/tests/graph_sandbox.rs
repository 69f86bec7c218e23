//! The Graph client (`m365mail::graph`) against the sandbox's Graph: `GET /users` over every page, throttling
//! retried after `Retry-After`, retries that run out, refusals typed with the permission they need, and a page
//! link to another host not followed.

use std::sync::Arc;
use std::time::Duration;

use m365mail::auth::{
    Access, Authority, ClientCredential, ClientOptions, Cloud, Scopes, Target, TokenClient,
};
use m365mail::graph::{GraphClient, GraphError, GraphOptions, UsersQuery};
use m365mail::time::{Clock as _, FakeClock, SystemClock};
use m365mail::tls::TlsTrust;
use m365mail::{Classified as _, ErrorClass, Secret};
use m365mail_sandbox::{GraphFault, Sandbox, SandboxConfig, demo};

async fn daemon_token(sbx: &Sandbox, target: Target) -> Secret {
    TokenClient::new(
        Authority::new(
            Cloud::custom(sbx.base_url().as_str()).unwrap(),
            demo::TENANT_ID.parse().unwrap(),
        ),
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::secret(demo::CONFIDENTIAL_APP_SECRET.into()),
        ClientOptions {
            extra_ca_pem: Some(sbx.ca_pem().to_owned()),
            ..ClientOptions::default()
        },
    )
    .unwrap()
    .client_credentials(&Scopes::for_target(target, Access::AppOnly, &Cloud::Global))
    .await
    .unwrap()
    .access_token
}

fn client(sbx: &Sandbox, clock: &FakeClock) -> GraphClient {
    let trust = TlsTrust::system()
        .with_ca_pem(sbx.ca_pem(), "sandbox CA")
        .unwrap()
        .extra_only();
    let mut options = GraphOptions::new(sbx.base_url().clone(), trust);
    options.sleeper = Arc::new(clock.clone());
    options.clock = Arc::new(clock.clone());
    GraphClient::new(options).unwrap()
}

#[tokio::test]
async fn pages_retries_and_refusals() {
    let sbx = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let clock = FakeClock::new(SystemClock.now());
    let graph = client(&sbx, &clock);
    let token = daemon_token(&sbx, Target::Graph).await;
    let everyone = graph
        .list_users(&token, &UsersQuery::default())
        .await
        .unwrap();
    let paged = graph
        .list_users(
            &token,
            &UsersQuery {
                top: Some(2),
                ..UsersQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(everyone.len() > 2);
    assert_eq!(paged, everyone, "every page, in order, nothing twice");

    // Throttled twice: waits what Retry-After says, then gets the answer.
    sbx.admin().inject_graph_fault(
        GraphFault::Throttled {
            retry_after_seconds: 3,
        },
        2,
    );
    let after = graph
        .list_users(&token, &UsersQuery::default())
        .await
        .unwrap();
    assert_eq!(after, everyone);
    assert_eq!(
        clock.sleeps(),
        [Duration::from_secs(3), Duration::from_secs(3)]
    );

    // Unavailable more often than the retries allow: a transient error naming the status.
    sbx.admin().inject_graph_fault(
        GraphFault::Unavailable {
            retry_after_seconds: 1,
        },
        10,
    );
    let err = graph
        .list_users(&token, &UsersQuery::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            GraphError::Throttled {
                status: 503,
                retries: 4,
                retry_after: Some(wait),
                ..
            } if wait == Duration::from_secs(1)
        ),
        "the last Retry-After is kept for a caller that retries later (the bridge's spool): {err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
    sbx.admin().clear_graph_faults();

    // An Outlook token is not a Graph token: 401, with the request-id kept.
    let outlook = daemon_token(&sbx, Target::Imap).await;
    let err = graph
        .list_users(&outlook, &UsersQuery::default())
        .await
        .unwrap_err();
    match &err {
        GraphError::Api {
            status: 401,
            code,
            request_id: Some(_),
            ..
        } => assert_eq!(code, "InvalidAuthenticationToken"),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::Admin);
    assert!(
        !format!("{err:?}{err}").contains(outlook.expose()),
        "no token in errors"
    );

    // A filter the service does not take: 400, an input error.
    let err = graph
        .list_users(
            &token,
            &UsersQuery {
                filter: Some("endswith(mail,'x')".into()),
                ..UsersQuery::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Input, "{err:?}");
}

#[tokio::test]
async fn a_page_link_to_another_host_is_not_followed() {
    // A "Graph" that answers with a nextLink elsewhere: a one-shot HTTP server on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 4096];
        let _ = socket.read(&mut request).await.unwrap();
        let body = r#"{"value":[{"id":"1"}],"@odata.nextLink":"http://198.51.100.7/v1.0/users?$skiptoken=x"}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(reply.as_bytes()).await.unwrap();
    });
    let options = GraphOptions::new(
        format!("http://{addr}/").parse().unwrap(),
        TlsTrust::system(),
    );
    let graph = GraphClient::new(options).unwrap();
    let err = graph
        .list_users(&Secret::new("t"), &UsersQuery::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GraphError::Protocol { what, .. } if what.contains("another origin")),
        "{err:?}"
    );
    served.await.unwrap();
}
