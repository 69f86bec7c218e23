//! Several listeners per service: `also_bind` serves the identity endpoints on more addresses.

use m365mail_sandbox::{SandboxConfig, demo};

use crate::common::start_with;

#[tokio::test]
async fn every_identity_listener_serves_the_same_tenant() {
    let config = SandboxConfig {
        also_bind: vec!["127.0.0.1:0".parse().unwrap()],
        ..SandboxConfig::default()
    };
    let sandbox = start_with(config).await;
    let listeners = sandbox.sandbox.listeners();
    assert_eq!(listeners.len(), 2);
    assert!(
        listeners
            .iter()
            .all(|l| l.service == "identity" && l.implicit_tls)
    );
    assert_eq!(
        listeners[0].addr.port(),
        sandbox.sandbox.base_url().port().unwrap()
    );
    assert_ne!(listeners[0].addr.port(), listeners[1].addr.port());
    for listener in listeners {
        let url = format!(
            "https://{}/{}/v2.0/.well-known/openid-configuration",
            listener.addr,
            demo::TENANT_ID
        );
        let reply = sandbox.http.get(&url).send().await.unwrap();
        assert_eq!(reply.status(), 200, "{url}");
    }
    // A non-loopback address is refused before anything is bound.
    let config = SandboxConfig {
        also_bind: vec!["0.0.0.0:0".parse().unwrap()],
        ..SandboxConfig::default()
    };
    let err = m365mail_sandbox::Sandbox::start(config).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        m365mail_sandbox::SandboxError::InvalidRequest(
            "the sandbox listens on loopback only, not 0.0.0.0:0".into()
        )
        .to_string()
    );
}
