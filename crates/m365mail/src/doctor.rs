//! `m365mail doctor`'s model: the steps of the Microsoft 365 procedure in order, each check's outcome with its
//! cause and remedy, which step an Entra refusal (AADSTS code) belongs to, and the report as a table or JSON.
//!
//! The procedure (microsoft.md §9–§11): a profile that names the tenant and app → the tenant exists → the app
//! exists in it → public client flows (delegated password or device code) → the credential (secret,
//! certificate, password) → consent → a token with the audience and permissions each protocol needs → each
//! protocol signs in (IMAP, POP3, SMTP; Graph send, read and users). The doctor runs them in order; a failure
//! makes the steps that depend on it `skip`. It never changes anything and never prints a secret.

use serde::Serialize;

use crate::error::ErrorClass;

/// The steps, in the order the procedure takes them.
pub const STEPS: [(&str, &str); 13] = [
    (
        "profile",
        "the profile names a tenant, an app and a usable credential",
    ),
    ("tenant", "the tenant exists (OpenID discovery)"),
    (
        "app",
        "the app registration exists in the tenant and is enabled",
    ),
    (
        "public-client",
        "public client flows are allowed (password, device code)",
    ),
    (
        "credential",
        "the credential is accepted (secret, certificate or password)",
    ),
    ("consent", "the permissions are granted (consent)"),
    (
        "token",
        "each protocol's token has the audience and permission it needs",
    ),
    ("imap", "IMAP: sign in and open the Inbox"),
    ("pop", "POP3: sign in and count the maildrop"),
    ("smtp", "SMTP: sign in for submission (nothing is sent)"),
    (
        "graph-send",
        "Graph: the token may send mail (Mail.Send; nothing is sent)",
    ),
    ("graph-read", "Graph: read the Inbox's folder (Mail.Read)"),
    (
        "users",
        "Graph: list the tenant's users (User.Read.All / User.ReadBasic.All)",
    ),
];

/// The steps `--admin` adds: what only an administrator can read.
pub const ADMIN_STEPS: [(&str, &str); 2] = [
    (
        "registration",
        "every permission on the registration is granted (admin consent)",
    ),
    (
        "expiry",
        "no secret or certificate of the app expires within 30 days",
    ),
];

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It works.
    Pass,
    /// It works, but something needs attention (an expiry soon).
    Warn,
    /// It does not work.
    Fail,
    /// Not checked: not asked for, or an earlier step failed.
    Skip,
}

impl Status {
    /// `pass`, `warn`, `fail`, `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Skip => "skip",
        }
    }
}

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The step's id ([`STEPS`]).
    pub id: &'static str,
    /// What the step checks.
    pub title: &'static str,
    /// Its outcome.
    pub status: Status,
    /// What was found (on a failure or warning: why; on a pass: what was seen, briefly).
    pub cause: Option<String>,
    /// What to do (failures and warnings).
    pub remedy: Option<String>,
    /// How long it took.
    pub seconds: f64,
    /// Who has to act on a failure (its exit code).
    #[serde(skip)]
    pub class: Option<ErrorClass>,
}

impl Check {
    fn new(id: &'static str, status: Status) -> Self {
        let title = STEPS
            .iter()
            .chain(&ADMIN_STEPS)
            .find(|(step, _)| *step == id)
            .map_or("", |(_, title)| *title);
        Self {
            id,
            title,
            status,
            cause: None,
            remedy: None,
            seconds: 0.0,
            class: None,
        }
    }

    /// A pass, with what was seen.
    pub fn pass(id: &'static str, seen: impl Into<String>) -> Self {
        Self {
            cause: Some(seen.into()).filter(|s: &String| !s.is_empty()),
            ..Self::new(id, Status::Pass)
        }
    }

    /// A failure with its cause, remedy and class.
    pub fn fail(
        id: &'static str,
        class: ErrorClass,
        cause: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Self {
        Self {
            cause: Some(cause.into()),
            remedy: Some(remedy.into()),
            class: Some(class),
            ..Self::new(id, Status::Fail)
        }
    }

    /// A warning.
    pub fn warn(id: &'static str, cause: impl Into<String>, remedy: impl Into<String>) -> Self {
        Self {
            cause: Some(cause.into()),
            remedy: Some(remedy.into()),
            ..Self::new(id, Status::Warn)
        }
    }

    /// Not checked, and why.
    pub fn skip(id: &'static str, why: impl Into<String>) -> Self {
        Self {
            cause: Some(why.into()),
            ..Self::new(id, Status::Skip)
        }
    }

    /// The same, timed.
    pub fn took(mut self, seconds: f64) -> Self {
        self.seconds = seconds;
        self
    }
}

/// The step an Entra refusal belongs to: where in the procedure the mistake is. `None` for a code that
/// says nothing about the setup (throttling, a server error): the step that asked fails with it.
pub fn step_for_aadsts(code: u32) -> Option<&'static str> {
    Some(match code {
        // The tenant: not found, or the wrong authority form.
        90002 | 50059 | 900561 | 90124 | 90130 | 90055 => "tenant",
        // The app registration: unknown, disabled, a redirect URI it does not have, not multi-tenant.
        700016 | 7000112 | 70001 | 50011 | 50194 | 700030 => "app",
        // Public client flows off, or a public flow that presents a secret.
        7000218 | 700025 => "public-client",
        // The credential: the secret (its id sent as the value, expired), the certificate assertion, the
        // password and the account it belongs to, MFA or Conditional Access in the way of ROPC, a refresh
        // token that no longer works.
        7000215 | 7000222 | 700027 | 700024 | 700023 | 50012 | 50126 | 50034 | 50053 | 50055
        | 50056 | 50057 | 50058 | 50072 | 50074 | 50076 | 50079 | 53003 | 50173 | 70008 | 70000
        | 700082 | 50133 | 50144 | 9002313 => "credential",
        // Consent and permissions: not granted, declined, a permission not on the registration.
        65001 | 65004 | 650057 | 90094 | 90095 | 500011 => "consent",
        // A scope the flow cannot ask for (a named scope on client credentials).
        70011 | 1002012 => "token",
        _ => return None,
    })
}

/// The report: one line per step for people, with the cause and remedy of what failed or warned.
pub fn render_table(checks: &[Check], colour: bool) -> String {
    let paint = |status: Status| -> (&str, &str) {
        if !colour {
            return ("", "");
        }
        match status {
            Status::Pass => ("\x1b[32m", "\x1b[0m"),
            Status::Warn => ("\x1b[33m", "\x1b[0m"),
            Status::Fail => ("\x1b[31m", "\x1b[0m"),
            Status::Skip => ("\x1b[2m", "\x1b[0m"),
        }
    };
    let mut out = String::new();
    out.push_str(&format!(
        "{:<13} {:<6} {:>7}  {}\n",
        "STEP", "STATUS", "SECONDS", "CHECK"
    ));
    for check in checks {
        let (on, off) = paint(check.status);
        out.push_str(&format!(
            "{:<13} {on}{:<6}{off} {:>7.2}  {}\n",
            check.id,
            check.status.as_str(),
            check.seconds,
            check.title
        ));
        let detail = |label: &str, text: &Option<String>, out: &mut String| {
            if let Some(text) = text {
                out.push_str(&format!("{:>22}{label}: {text}\n", ""));
            }
        };
        match check.status {
            Status::Fail | Status::Warn => {
                detail("cause", &check.cause, &mut out);
                detail("remedy", &check.remedy, &mut out);
            }
            Status::Pass | Status::Skip => detail("seen", &check.cause, &mut out),
        }
    }
    out
}

/// The first failure's class, for the exit code; `None` when nothing failed.
pub fn first_failure(checks: &[Check]) -> Option<ErrorClass> {
    checks
        .iter()
        .find(|c| c.status == Status::Fail)
        .map(|c| c.class.unwrap_or(ErrorClass::Config))
}

/// Whether a string is a GUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
pub fn is_guid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Whether a client secret looks like the secret's *id* (a GUID, shown beside the value in the portal)
/// rather than its value (about 40 characters with `~`, `.`, `_`): Entra then answers AADSTS7000215.
pub fn looks_like_secret_id(secret: &str) -> bool {
    is_guid(secret.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_land_on_their_step() {
        assert_eq!(step_for_aadsts(90002), Some("tenant"));
        assert_eq!(step_for_aadsts(700016), Some("app"));
        assert_eq!(step_for_aadsts(7000218), Some("public-client"));
        assert_eq!(step_for_aadsts(7000215), Some("credential"));
        assert_eq!(step_for_aadsts(50126), Some("credential"));
        assert_eq!(step_for_aadsts(65001), Some("consent"));
        assert_eq!(step_for_aadsts(70011), Some("token"));
        assert_eq!(step_for_aadsts(50196), None);
        // Every id a mapping names is a step.
        for code in [90002, 700016, 7000218, 7000215, 65001, 70011] {
            let step = step_for_aadsts(code).unwrap();
            assert!(STEPS.iter().any(|(id, _)| *id == step), "{step}");
        }
    }

    #[test]
    fn secret_ids_and_guids_are_told_apart_from_values() {
        assert!(looks_like_secret_id("8c5a7e1e-3b2f-4f3c-9a51-2b9e0f6d4c11"));
        assert!(!looks_like_secret_id(
            "Xy8Q~abcdefghijklmnopqrstuvwxyz0123456789"
        ));
        assert!(!is_guid("8c5a7e1e3b2f4f3c9a512b9e0f6d4c11"));
    }

    #[test]
    fn the_table_shows_causes_of_failures_and_the_first_failure_sets_the_exit() {
        let checks = vec![
            Check::pass("profile", ""),
            Check::fail(
                "credential",
                ErrorClass::Admin,
                "AADSTS7000215",
                "copy the Value",
            ),
            Check::skip("consent", "the credential step failed"),
        ];
        let table = render_table(&checks, false);
        assert!(table.contains("credential    fail"), "{table}");
        assert!(table.contains("remedy: copy the Value"), "{table}");
        assert_eq!(first_failure(&checks), Some(ErrorClass::Admin));
        assert_eq!(first_failure(&checks[..1]), None);
        let json = serde_json::to_value(&checks[1]).unwrap();
        assert_eq!(json["status"], "fail");
        assert_eq!(json["id"], "credential");
    }
}
