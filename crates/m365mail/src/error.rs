//! What every layer's error shares: [`ErrorClass`] (who has to act) and [`Classified`] (class, cause,
//! remedy, transient).
//!
//! Each layer has its own `#[non_exhaustive]` error enum — [`crate::auth::AuthError`] for Entra ID, and the
//! protocol layers' enums as they arrive — and implements [`Classified`]. The CLI maps [`ErrorClass`] to an
//! exit code in one place ([`ErrorClass::exit_code`]), so a new layer gets exit codes by implementing the
//! trait, not by editing the CLI.

use std::fmt;

/// Who has to act to fix an error. The CLI maps each class to an exit code ([`ErrorClass::exit_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// A value the user supplied is malformed or missing (a flag, a profile key, a secret source); nothing
    /// was sent.
    Input,
    /// The user must act (credentials, password change, sign in again).
    User,
    /// A tenant admin must act (consent, Conditional Access, disabled account or app, expired secret).
    Admin,
    /// The connector configuration is wrong (client id, tenant, scope, app registration settings).
    Config,
    /// This flow cannot work here: switch flow (e.g. MFA blocks ROPC).
    SwitchFlow,
    /// Transient: retry later with backoff.
    Transient,
    /// Protocol or flow state (device code expired or declined, cancelled, state mismatch).
    FlowState,
}

impl ErrorClass {
    /// The `m365mail` exit code of this class: 2 input, 3 user, 4 admin, 5 connector configuration,
    /// 6 switch flow, 7 transient, 8 flow state. (0 is success, 1 an unclassified error.)
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Input => 2,
            Self::User => 3,
            Self::Admin => 4,
            Self::Config => 5,
            Self::SwitchFlow => 6,
            Self::Transient => 7,
            Self::FlowState => 8,
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Input => "invalid input",
            Self::User => "user action needed",
            Self::Admin => "admin action needed",
            Self::Config => "connector configuration",
            Self::SwitchFlow => "switch flow",
            Self::Transient => "transient",
            Self::FlowState => "flow state",
        })
    }
}

/// An error that says who must act, what happened and what to do. Every layer's error implements it.
pub trait Classified: std::error::Error + Send + Sync + 'static {
    /// Who has to act.
    fn class(&self) -> ErrorClass;
    /// The named cause, one line.
    fn cause(&self) -> String;
    /// What to do about it, one line.
    fn remedy(&self) -> String;
    /// Whether retrying later may succeed.
    fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_documented() {
        let classes = [
            ErrorClass::Input,
            ErrorClass::User,
            ErrorClass::Admin,
            ErrorClass::Config,
            ErrorClass::SwitchFlow,
            ErrorClass::Transient,
            ErrorClass::FlowState,
        ];
        let codes: Vec<u8> = classes.iter().map(|c| c.exit_code()).collect();
        assert_eq!(codes, [2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            serde_json::to_value(ErrorClass::SwitchFlow).unwrap(),
            "switch-flow"
        );
    }
}
