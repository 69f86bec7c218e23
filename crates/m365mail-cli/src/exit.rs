//! Exit codes and the JSON error shape, in one place for every command.
//!
//! A usage or config-file error exits 2; any error that implements [`Classified`] exits with its class's
//! code ([`ErrorClass::exit_code`]: 2 input, 3 user, 4 admin, 5 connector configuration, 6 switch flow,
//! 7 transient, 8 flow state); anything else exits 1. A new layer's error gets exit codes by being listed in
//! [`classified`].

use m365mail::auth::AuthError;
use m365mail::error::Classified;
use m365mail::mime::BuildError;
use m365mail::pop3::Pop3Error;
use m365mail::read::ReadError;
use m365mail::read::sink::SinkError;
use m365mail::smtp::SmtpError;
use m365mail::store::StoreError;
use m365mail::time::{rfc3339, unix_secs};
use m365mail::tls::TlsError;
use m365mail::transport::TransportError;
use serde_json::json;

use crate::config::UsageError;

/// The first classified error in the chain.
pub(crate) fn classified(err: &anyhow::Error) -> Option<&dyn Classified> {
    err.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<AuthError>() {
            return Some(e as &dyn Classified);
        }
        if let Some(e) = cause.downcast_ref::<TlsError>() {
            return Some(e as &dyn Classified);
        }
        if let Some(e) = cause.downcast_ref::<TransportError>() {
            return Some(e as &dyn Classified);
        }
        if let Some(e) = cause.downcast_ref::<Pop3Error>() {
            return Some(e as &dyn Classified);
        }
        if let Some(e) = cause.downcast_ref::<m365mail::imap::ImapError>() {
            return Some(e);
        }
        if let Some(e) = cause.downcast_ref::<m365mail::graph::GraphError>() {
            return Some(e);
        }
        if let Some(e) = cause.downcast_ref::<ReadError>() {
            return Some(e as &dyn Classified);
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return Some(e as &dyn Classified);
        }
        if let Some(e) = cause.downcast_ref::<BuildError>() {
            return Some(e as &dyn Classified);
        }
        if let Some(e) = cause.downcast_ref::<SmtpError>() {
            return Some(e as &dyn Classified);
        }
        if let Some(e) = cause.downcast_ref::<SinkError>() {
            return Some(e as &dyn Classified);
        }
        if let Some(e) = cause.downcast_ref::<m365mail::bridge::BridgeError>() {
            return Some(e as &dyn Classified);
        }
        None
    })
}

/// The exit code for `err`.
pub(crate) fn code(err: &anyhow::Error) -> u8 {
    if err
        .chain()
        .any(|c| c.downcast_ref::<UsageError>().is_some())
    {
        return 2;
    }
    classified(err).map_or(1, |e| e.class().exit_code())
}

/// `{"ok": false, "error": {...}}` with class, cause, remedy and Entra's codes and ids when present.
pub(crate) fn error_json(err: &anyhow::Error) -> serde_json::Value {
    let mut e = json!({ "message": format!("{err:#}"), "exit_code": code(err) });
    if let Some(c) = classified(err) {
        e["class"] = json!(c.class());
        e["cause"] = json!(Classified::cause(c));
        e["remedy"] = json!(c.remedy());
    }
    let auth = err.chain().find_map(|c| c.downcast_ref::<AuthError>());
    if let Some(at) = auth.and_then(AuthError::retry_at) {
        e["retry_at"] = json!(rfc3339(unix_secs(at)));
    }
    if let Some(entra) = auth.and_then(AuthError::entra) {
        e["error"] = json!(entra.error);
        e["error_codes"] = json!(entra.error_codes);
        e["suberror"] = json!(entra.suberror);
        e["trace_id"] = json!(entra.trace_id);
        e["correlation_id"] = json!(entra.correlation_id);
        e["client_request_id"] = json!(entra.client_request_id);
    }
    json!({ "ok": false, "error": e })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::usage;
    use m365mail::auth::AuthError;

    #[test]
    fn exit_codes_by_class() {
        let e = |a: AuthError| code(&anyhow::Error::from(a));
        assert_eq!(code(&usage("x")), 2);
        let entra = |j: &str| {
            AuthError::from(m365mail::auth::EntraError::parse(400, j.as_bytes()).unwrap())
        };
        assert_eq!(
            e(entra(r#"{"error":"invalid_grant","error_codes":[50126]}"#)),
            3
        );
        assert_eq!(
            e(entra(r#"{"error":"invalid_grant","error_codes":[53003]}"#)),
            4
        );
        assert_eq!(
            e(entra(
                r#"{"error":"invalid_client","error_codes":[7000218]}"#
            )),
            5
        );
        assert_eq!(
            e(entra(r#"{"error":"invalid_grant","error_codes":[50076]}"#)),
            6
        );
        assert_eq!(
            e(AuthError::from(m365mail::transport::TransportError::bare(
                m365mail::transport::TransportKind::Timeout,
                "u"
            ))),
            7
        );
        assert_eq!(e(AuthError::Cancelled), 8);
        assert_eq!(
            e(AuthError::InvalidInput {
                field: "password",
                reason: "none".into()
            }),
            2
        );
        assert_eq!(code(&anyhow::anyhow!("other")), 1);
        let wrapped = anyhow::Error::from(AuthError::Cancelled).context("while getting a token");
        assert_eq!(code(&wrapped), 8);
        let no_cert = m365mail::tls::TlsTrust::system()
            .with_ca_pem("", "CA file x")
            .unwrap_err();
        assert_eq!(code(&anyhow::Error::from(no_cert)), 2);
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let refused = TransportError::new(m365mail::transport::TransportKind::Connect, "h:1", io);
        assert_eq!(
            code(&anyhow::Error::from(refused).context("reading mail")),
            7
        );
    }
}
