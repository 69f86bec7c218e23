//! [`inspect()`]: decode an access token **without verifying it** and say which protocols it can serve.
//!
//! Exchange needs (microsoft.md §7.2): delegated tokens with `aud` `https://outlook.office.com` and `scp`
//! holding `IMAP.AccessAsUser.All` / `POP.AccessAsUser.All` / `SMTP.Send`; app-only tokens with `aud`
//! `https://outlook.office365.com` and `roles` holding `IMAP.AccessAsApp` / `POP.AccessAsApp` /
//! `SMTP.SendAsApp`. Graph send needs `aud` `https://graph.microsoft.com` and `Mail.Send`.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::Value;

use crate::cloud::{self, CloudEndpoints};
use crate::time::{Clock, unix_secs};

/// Exchange Online's application id (appears as `aud` in some tokens).
const EXCHANGE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
/// Microsoft Graph's application id.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// What inspection found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Inspection {
    /// A JWT.
    Jwt(Box<JwtInfo>),
    /// Not a JWT (e.g. personal-account Outlook tokens starting `EwB`).
    Opaque {
        /// Why it cannot be inspected.
        reason: String,
    },
}

/// Decoded header and claims, and the verdicts.
#[derive(Debug, Clone, Serialize, Default)]
pub struct JwtInfo {
    /// Header `alg`.
    pub alg: Option<String>,
    /// Header `kid`.
    pub kid: Option<String>,
    /// Header `x5t`.
    pub x5t: Option<String>,
    /// `aud`.
    pub aud: Vec<String>,
    /// `iss`.
    pub iss: Option<String>,
    /// `tid`.
    pub tid: Option<String>,
    /// `upn`, else `unique_name`, else `preferred_username`.
    pub user: Option<String>,
    /// `oid`.
    pub oid: Option<String>,
    /// `scp`, split.
    pub scp: Vec<String>,
    /// `roles`.
    pub roles: Vec<String>,
    /// `appid` or `azp`.
    pub appid: Option<String>,
    /// `exp` (Unix seconds).
    pub exp: Option<u64>,
    /// `nbf`.
    pub nbf: Option<u64>,
    /// `iat`.
    pub iat: Option<u64>,
    /// Whether `exp` is past at inspection time.
    pub expired: bool,
    /// Seconds until `exp` (0 if expired).
    pub expires_in: Option<u64>,
    /// Delegated (has `scp`) or app-only (has `roles`).
    pub kind: TokenKind,
    /// One verdict per protocol.
    pub verdicts: Vec<ProtocolVerdict>,
}

/// Delegated or app-only.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// A user token (`scp`).
    Delegated,
    /// An application token (`roles`).
    AppOnly,
    /// Neither claim.
    #[default]
    Unknown,
}

/// Can the token serve `protocol`?
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProtocolVerdict {
    /// `imap`, `pop`, `smtp` or `graph-send`.
    pub protocol: &'static str,
    /// Whether it can.
    pub usable: bool,
    /// Why (or why not).
    pub reason: String,
}

/// Decodes `token` (no signature check) and judges it at `clock.now()`.
pub fn inspect(token: &str, clock: &dyn Clock) -> Inspection {
    inspect_at(token, clock.now())
}

/// As [`inspect()`], at a given time.
pub fn inspect_at(token: &str, now: SystemTime) -> Inspection {
    let token = token.trim();
    let opaque = |reason: &str| Inspection::Opaque {
        reason: reason.to_owned(),
    };
    if token.starts_with("EwB") {
        return opaque(
            "opaque token, cannot inspect (personal Microsoft account tokens are not JWTs)",
        );
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return opaque(
            "opaque token, cannot inspect (not a JWT: expected three dot-separated parts)",
        );
    }
    let (Some(header), Some(claims)) = (jwt_segment(parts[0]), jwt_segment(parts[1])) else {
        return opaque(
            "opaque token, cannot inspect (header or payload is not base64url JSON; encrypted?)",
        );
    };
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |k: &str| claims.get(k).and_then(Value::as_u64);
    let list = |k: &str, split: bool| -> Vec<String> {
        match claims.get(k) {
            Some(Value::String(x)) if split => x.split_whitespace().map(str::to_owned).collect(),
            Some(Value::String(x)) => vec![x.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    };
    let now_s = unix_secs(now);
    let exp = n("exp");
    let mut info = JwtInfo {
        alg: s(&header, "alg"),
        kid: s(&header, "kid"),
        x5t: s(&header, "x5t"),
        aud: list("aud", false),
        iss: s(&claims, "iss"),
        tid: s(&claims, "tid"),
        user: s(&claims, "upn")
            .or_else(|| s(&claims, "unique_name"))
            .or_else(|| s(&claims, "preferred_username")),
        oid: s(&claims, "oid"),
        scp: list("scp", true),
        roles: list("roles", false),
        appid: s(&claims, "appid").or_else(|| s(&claims, "azp")),
        exp,
        nbf: n("nbf"),
        iat: n("iat"),
        expired: exp.is_some_and(|e| e <= now_s),
        expires_in: exp.map(|e| e.saturating_sub(now_s)),
        ..Default::default()
    };
    info.kind = if !info.scp.is_empty() {
        TokenKind::Delegated
    } else if !info.roles.is_empty() {
        TokenKind::AppOnly
    } else {
        TokenKind::Unknown
    };
    info.verdicts = verdicts(&info);
    Inspection::Jwt(Box::new(info))
}

/// One JWT segment (header or payload) decoded from base64url (padding tolerated) as JSON.
pub(crate) fn jwt_segment(segment: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn norm_aud(a: &str) -> String {
    a.trim_end_matches('/').to_ascii_lowercase()
}

fn has_aud(info: &JwtInfo, wanted: &[&str]) -> bool {
    info.aud
        .iter()
        .any(|a| wanted.iter().any(|w| norm_aud(a) == *w))
}

fn verdicts(info: &JwtInfo) -> Vec<ProtocolVerdict> {
    // Every cloud's audiences, from the one cloud table (a token may come from any of them), plus the
    // resources' application ids, which v1 tokens may carry as `aud`.
    let audiences = |pick: fn(&CloudEndpoints) -> &'static [&'static str], app_id: &'static str| {
        let mut list: Vec<&'static str> = cloud::ALL
            .iter()
            .flat_map(|c| pick(c).iter().copied())
            .collect();
        list.push(app_id);
        list
    };
    let outlook_delegated = audiences(|c| c.outlook_delegated_audiences, EXCHANGE_APP_ID);
    let outlook_app = audiences(|c| c.outlook_app_audiences, EXCHANGE_APP_ID);
    let graph = audiences(|c| c.graph_audiences, GRAPH_APP_ID);
    let has = |list: &[String], v: &str| list.iter().any(|x| x.eq_ignore_ascii_case(v));
    let aud_text = if info.aud.is_empty() {
        "none".to_owned()
    } else {
        info.aud.join(", ")
    };

    let mut out = Vec::new();
    let exchange = [
        ("imap", "IMAP.AccessAsUser.All", "IMAP.AccessAsApp"),
        ("pop", "POP.AccessAsUser.All", "POP.AccessAsApp"),
        ("smtp", "SMTP.Send", "SMTP.SendAsApp"),
    ];
    for (protocol, scope, role) in exchange {
        let (usable, reason) = match info.kind {
            TokenKind::Delegated => {
                if !has_aud(info, &outlook_delegated) {
                    (
                        false,
                        format!(
                            "wrong audience {aud_text}: delegated mail tokens need https://outlook.office.com (request https://outlook.office.com/{scope})"
                        ),
                    )
                } else if !has(&info.scp, scope) {
                    (false, format!("missing delegated scope {scope} in scp"))
                } else {
                    (true, format!("delegated, scp has {scope}"))
                }
            }
            TokenKind::AppOnly => {
                if !has_aud(info, &outlook_app) {
                    (
                        false,
                        format!(
                            "wrong audience {aud_text}: app-only mail tokens need https://outlook.office365.com (request https://outlook.office365.com/.default)"
                        ),
                    )
                } else if !has(&info.roles, role) {
                    (
                        false,
                        format!(
                            "missing application role {role} in roles (grant it on Office 365 Exchange Online and admin-consent)"
                        ),
                    )
                } else {
                    (true, format!("app-only, roles has {role}"))
                }
            }
            TokenKind::Unknown => (false, "no scp or roles claim".to_owned()),
        };
        out.push(ProtocolVerdict {
            protocol,
            usable,
            reason,
        });
    }
    let (usable, reason) = if !has_aud(info, &graph) {
        (
            false,
            format!("wrong audience {aud_text}: Graph needs https://graph.microsoft.com"),
        )
    } else if has(&info.scp, "Mail.Send") {
        (true, "delegated, scp has Mail.Send".to_owned())
    } else if has(&info.roles, "Mail.Send") {
        (true, "app-only, roles has Mail.Send".to_owned())
    } else {
        (false, "missing Mail.Send in scp/roles".to_owned())
    };
    out.push(ProtocolVerdict {
        protocol: "graph-send",
        usable,
        reason,
    });
    if info.expired {
        for v in &mut out {
            if v.usable {
                v.usable = false;
                v.reason = format!("expired (would otherwise be usable: {})", v.reason);
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::time::FakeClock;

    /// An unsigned JWT with the given claims.
    pub(crate) fn jwt(claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256","kid":"k1","x5t":"k1"}"#);
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{h}.{c}.c2ln")
    }

    fn verdict(i: &Inspection, p: &str) -> ProtocolVerdict {
        let Inspection::Jwt(info) = i else {
            panic!("opaque")
        };
        info.verdicts
            .iter()
            .find(|v| v.protocol == p)
            .unwrap()
            .clone()
    }

    #[test]
    fn delegated_outlook_token() {
        let clock = FakeClock::fixed();
        let exp = clock.unix_now() + 3600;
        let t = jwt(
            serde_json::json!({"aud":"https://outlook.office.com","iss":"https://sts.windows.net/t/","tid":"t","upn":"u@x","oid":"o","scp":"IMAP.AccessAsUser.All SMTP.Send","appid":"a","exp":exp,"nbf":1,"iat":1}),
        );
        let i = inspect(&t, &clock);
        let Inspection::Jwt(info) = &i else { panic!() };
        assert_eq!(info.kind, TokenKind::Delegated);
        assert_eq!(info.alg.as_deref(), Some("RS256"));
        assert_eq!(info.kid.as_deref(), Some("k1"));
        assert_eq!(info.user.as_deref(), Some("u@x"));
        assert_eq!(info.expires_in, Some(3600));
        assert!(verdict(&i, "imap").usable);
        assert!(verdict(&i, "smtp").usable);
        let pop = verdict(&i, "pop");
        assert!(
            !pop.usable && pop.reason.contains("POP.AccessAsUser.All"),
            "{pop:?}"
        );
        let g = verdict(&i, "graph-send");
        assert!(!g.usable && g.reason.contains("wrong audience"));
        // Expired.
        clock.advance(std::time::Duration::from_secs(3601));
        let i = inspect(&t, &clock);
        let v = verdict(&i, "imap");
        assert!(!v.usable && v.reason.starts_with("expired"), "{v:?}");
    }

    #[test]
    fn sovereign_cloud_audiences() {
        let now = FakeClock::fixed().now();
        let exp = crate::time::unix_secs(now) + 3600;
        for (aud, graph) in [
            ("https://outlook.office365.us", "https://graph.microsoft.us"),
            (
                "https://partner.outlook.cn/",
                "https://microsoftgraph.chinacloudapi.cn",
            ),
        ] {
            let t = jwt(
                serde_json::json!({"aud": aud, "scp": "IMAP.AccessAsUser.All SMTP.Send", "exp": exp}),
            );
            let i = inspect_at(&t, now);
            assert!(
                verdict(&i, "imap").usable,
                "{aud}: {:?}",
                verdict(&i, "imap")
            );
            assert!(verdict(&i, "smtp").usable, "{aud}");
            let t = jwt(serde_json::json!({"aud": aud, "roles": ["IMAP.AccessAsApp"], "exp": exp}));
            assert!(
                verdict(&inspect_at(&t, now), "imap").usable,
                "{aud} app-only"
            );
            let t = jwt(serde_json::json!({"aud": graph, "scp": "Mail.Send", "exp": exp}));
            assert!(
                verdict(&inspect_at(&t, now), "graph-send").usable,
                "{graph}"
            );
        }
    }

    #[test]
    fn app_only_tokens() {
        let clock = FakeClock::fixed();
        let exp = clock.unix_now() + 3600;
        let t = jwt(
            serde_json::json!({"aud":"https://outlook.office365.com","roles":["IMAP.AccessAsApp","SMTP.SendAsApp"],"exp":exp}),
        );
        let i = inspect(&t, &clock);
        assert!(verdict(&i, "imap").usable);
        assert!(verdict(&i, "smtp").usable);
        assert!(verdict(&i, "pop").reason.contains("POP.AccessAsApp"));
        // App-only token with the delegated audience: wrong audience.
        let t = jwt(
            serde_json::json!({"aud":"https://outlook.office.com","roles":["IMAP.AccessAsApp"],"exp":exp}),
        );
        assert!(
            verdict(&inspect(&t, &clock), "imap")
                .reason
                .contains("wrong audience")
        );
        // Graph app-only with Mail.Send; GUID audience accepted.
        let t = jwt(serde_json::json!({"aud":GRAPH_APP_ID,"roles":["Mail.Send"],"exp":exp}));
        let i = inspect(&t, &clock);
        assert!(verdict(&i, "graph-send").usable);
        assert!(!verdict(&i, "imap").usable);
        // Delegated token with the app-only audience is not usable for IMAP.
        let t = jwt(
            serde_json::json!({"aud":"https://outlook.office365.com","scp":"IMAP.AccessAsUser.All","exp":exp}),
        );
        assert!(!verdict(&inspect(&t, &clock), "imap").usable);
    }

    #[test]
    fn opaque_tokens() {
        let clock = FakeClock::fixed();
        for t in ["EwBwA8l6BAAU...", "not-a-jwt", "a.b.c"] {
            match inspect(t, &clock) {
                Inspection::Opaque { reason } => assert!(
                    reason.starts_with("opaque token, cannot inspect"),
                    "{reason}"
                ),
                Inspection::Jwt(_) => panic!("{t} decoded"),
            }
        }
    }
}
