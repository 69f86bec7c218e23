//! Entra's error bodies (the golden files in `testdata/entra/`) through the connector's parser: the code
//! found, the class and remedy chosen, the trace suffix stripped, and the extras kept.

use m365mail::auth::{AuthError, EntraError, ErrorClass};

fn golden(name: &str) -> EntraError {
    let path = format!(
        "{}/../../testdata/entra/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = if name.starts_with("invalid_client") {
        401
    } else {
        400
    };
    EntraError::parse(status, &text).unwrap_or_else(|| panic!("{path} is not an Entra error"))
}

#[test]
fn each_golden_body_is_classified_by_its_code() {
    for (name, code, class, suberror) in [
        ("invalid_grant-50126", 50126, ErrorClass::User, None),
        (
            "invalid_grant-50076",
            50076,
            ErrorClass::SwitchFlow,
            Some("basic_action"),
        ),
        (
            "invalid_grant-65001",
            65001,
            ErrorClass::Admin,
            Some("consent_required"),
        ),
        (
            "invalid_grant-50055",
            50055,
            ErrorClass::User,
            Some("user_password_expired"),
        ),
        ("invalid_client-7000215", 7000215, ErrorClass::Config, None),
        (
            "authorization_pending-70016",
            70016,
            ErrorClass::FlowState,
            None,
        ),
        ("multi-code-70002-50126", 50126, ErrorClass::User, None),
    ] {
        let e = golden(name);
        assert!(e.has_code(code), "{name}: {:?}", e.error_codes);
        assert_eq!(e.known().map(|info| info.code), Some(code), "{name}");
        assert_eq!(e.class(), class, "{name}");
        assert_eq!(e.suberror.as_deref(), suberror, "{name}");
        assert!(
            !e.description.contains("Trace ID"),
            "{name}: {}",
            e.description
        );
        assert!(
            e.description.starts_with(&format!("AADSTS{code}: ")),
            "{name}"
        );
        assert_eq!(
            e.trace_id.as_deref(),
            Some("0000aaaa-11bb-cccc-dd33-eeeeee333333")
        );
        assert_eq!(
            e.correlation_id.as_deref(),
            Some("aaaa0000-bb11-2222-33cc-444444dddddd")
        );
    }
}

#[test]
fn extras_survive_and_reach_the_remedy() {
    let mfa = golden("invalid_grant-50076");
    assert!(mfa.claims.as_deref().unwrap().contains("capolids"));
    let expired = AuthError::from(golden("invalid_grant-50055"));
    assert!(
        expired
            .remedy()
            .contains("https://portal.microsoftonline.com/ChangePassword.aspx"),
        "{}",
        expired.remedy()
    );
    let multi = golden("multi-code-70002-50126");
    assert_eq!(multi.error_codes, [70002, 50126]);
}
