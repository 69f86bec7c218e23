//! [`Target`] and [`Scopes`]: which scope strings to request for a protocol, delegated or app-only.

use std::fmt;
use std::str::FromStr;

use super::authority::Cloud;
use super::error::AuthError;

/// What the token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Exchange Online IMAP (XOAUTH2).
    Imap,
    /// Exchange Online POP3 (XOAUTH2).
    Pop,
    /// Exchange Online SMTP submission (XOAUTH2).
    Smtp,
    /// Microsoft Graph mail (send).
    Graph,
}

impl FromStr for Target {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s.to_ascii_lowercase().as_str() {
            "imap" => Ok(Self::Imap),
            "pop" | "pop3" => Ok(Self::Pop),
            "smtp" => Ok(Self::Smtp),
            "graph" => Ok(Self::Graph),
            _ => Err(AuthError::InvalidInput {
                field: "target",
                reason: format!("{s:?}: expected imap, pop, smtp or graph"),
            }),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Imap => "imap",
            Self::Pop => "pop",
            Self::Smtp => "smtp",
            Self::Graph => "graph",
        })
    }
}

/// Delegated (a user signs in) or app-only (client credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A user's token: named scopes + `offline_access`.
    Delegated,
    /// An application token: `{resource}/.default`.
    AppOnly,
}

/// An ordered, de-duplicated list of scope strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Scopes(Vec<String>);

impl Scopes {
    /// The scopes for `target` with `access` in `cloud`.
    ///
    /// - delegated IMAP/POP/SMTP: `https://outlook.office.com/IMAP.AccessAsUser.All` (etc.) + `offline_access`
    /// - app-only IMAP/POP/SMTP: `https://outlook.office365.com/.default`
    /// - Graph: `https://graph.microsoft.com/Mail.Send` + `offline_access` delegated, `/.default` app-only
    pub fn for_target(target: Target, access: Access, cloud: &Cloud) -> Self {
        // The resources come from the one cloud table (a custom authority, i.e. the sandbox, models the
        // global cloud).
        let table = crate::cloud::endpoints(cloud);
        let (outlook, outlook_app, graph) = (
            table.outlook_delegated_resource,
            table.outlook_app_resource,
            table.graph_resource,
        );
        match (access, target) {
            (Access::AppOnly, Target::Graph) => Self::new([format!("{graph}/.default")]),
            (Access::AppOnly, _) => Self::new([format!("{outlook_app}/.default")]),
            (Access::Delegated, t) => {
                let named = match t {
                    Target::Imap => format!("{outlook}/IMAP.AccessAsUser.All"),
                    Target::Pop => format!("{outlook}/POP.AccessAsUser.All"),
                    Target::Smtp => format!("{outlook}/SMTP.Send"),
                    Target::Graph => format!("{graph}/Mail.Send"),
                };
                Self::new([named, "offline_access".to_owned()])
            }
        }
    }

    /// Scopes from strings, each split at spaces (empties and duplicates removed, order kept). Only the
    /// space separates scopes: a CR, LF or tab stays inside its scope, so [`Self::validate`] refuses it
    /// instead of it silently splitting one value into two.
    pub fn new<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out: Vec<String> = Vec::new();
        for s in scopes {
            let s: String = s.into();
            for part in s.split(' ').filter(|p| !p.is_empty()) {
                if !out.iter().any(|o| o == part) {
                    out.push(part.to_owned());
                }
            }
        }
        Self(out)
    }

    /// Parses a space- or comma-separated list.
    pub fn parse(s: &str) -> Self {
        Self::new(s.split([' ', ',']).map(str::to_owned))
    }

    /// The scope strings.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses what must never be sent: no scope at all, or a scope holding a control character (CR/LF
    /// would inject form fields or log lines; tab, ESC, NUL) or other white space. Every grant of
    /// [`super::TokenClient`] calls this before any request.
    pub fn validate(&self) -> Result<(), AuthError> {
        let bad = |reason: String| AuthError::InvalidInput {
            field: "scope",
            reason,
        };
        if self.0.is_empty() {
            return Err(bad("no scope given".into()));
        }
        for (i, scope) in self.0.iter().enumerate() {
            let n = i + 1;
            if let Some(c) = scope.chars().find(|c| c.is_control()) {
                return Err(bad(format!(
                    "scope {n} contains a control character (U+{:04X}; CR/LF, tab?)",
                    u32::from(c)
                )));
            }
            if let Some(c) = scope.chars().find(|c| c.is_whitespace()) {
                return Err(bad(format!(
                    "scope {n} contains white space (U+{:04X}); separate scopes with spaces or commas",
                    u32::from(c)
                )));
            }
        }
        Ok(())
    }

    /// The form value: space-separated (the form encoder encodes it exactly once).
    pub fn to_param(&self) -> String {
        self.0.join(" ")
    }

    /// Sorted and lower-cased, space-separated: the cache key component (scope order never matters).
    pub fn cache_key(&self) -> String {
        let mut v: Vec<String> = self.0.iter().map(|s| s.to_ascii_lowercase()).collect();
        v.sort();
        v.join(" ")
    }

    /// Whether every scope is a `/.default` scope (what client credentials needs).
    pub fn is_default_only(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(|s| s.ends_with("/.default"))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_param())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegated_and_app_only_scopes() {
        let g = Cloud::Global;
        assert_eq!(
            Scopes::for_target(Target::Imap, Access::Delegated, &g).to_param(),
            "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
        );
        assert_eq!(
            Scopes::for_target(Target::Pop, Access::Delegated, &g).as_slice()[0],
            "https://outlook.office.com/POP.AccessAsUser.All"
        );
        assert_eq!(
            Scopes::for_target(Target::Smtp, Access::Delegated, &g).as_slice()[0],
            "https://outlook.office.com/SMTP.Send"
        );
        for t in [Target::Imap, Target::Pop, Target::Smtp] {
            assert_eq!(
                Scopes::for_target(t, Access::AppOnly, &g).to_param(),
                "https://outlook.office365.com/.default"
            );
        }
        assert_eq!(
            Scopes::for_target(Target::Graph, Access::AppOnly, &g).to_param(),
            "https://graph.microsoft.com/.default"
        );
        assert_eq!(
            Scopes::for_target(Target::Graph, Access::Delegated, &g).to_param(),
            "https://graph.microsoft.com/Mail.Send offline_access"
        );
        assert_eq!(
            Scopes::for_target(Target::Imap, Access::AppOnly, &Cloud::UsGov).to_param(),
            "https://outlook.office365.us/.default"
        );
        assert!(Scopes::for_target(Target::Imap, Access::AppOnly, &g).is_default_only());
        assert!(!Scopes::for_target(Target::Imap, Access::Delegated, &g).is_default_only());
    }

    /// Control characters (CR/LF, tab, ESC, NUL) and an empty scope list are refused before any request; CR/LF
    /// inside a scope is kept in it (not silently split into two scopes) so that it can be refused.
    #[test]
    fn invalid_scopes_are_refused() {
        for (input, reason) in [
            (
                "https://outlook.office.com/IMAP.AccessAsUser.All\r\noffline_access",
                "control character",
            ),
            ("a\nb", "control character"),
            ("a\tb", "control character"),
            ("offline_access\u{1b}[2J", "control character"),
            ("a\0", "control character"),
            ("a\u{a0}b", "white space"),
            ("", "no scope"),
            (" , ,", "no scope"),
        ] {
            let e = Scopes::parse(input).validate().unwrap_err();
            match &e {
                AuthError::InvalidInput { field, reason: r } => {
                    assert_eq!(*field, "scope", "{input:?}");
                    assert!(r.contains(reason), "{input:?}: {r}");
                    assert!(
                        !r.contains('\r') && !r.contains('\n') && !r.contains('\u{1b}'),
                        "{r:?}"
                    );
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
        assert_eq!(Scopes::parse("a\r\nb").as_slice(), ["a\r\nb"]);
        assert!(
            Scopes::new(Vec::<String>::new())
                .validate()
                .is_err_and(|e| matches!(e, AuthError::InvalidInput { field: "scope", .. }))
        );
        for ok in [
            "a",
            "a, b",
            "https://graph.microsoft.com/.default",
            " x  y ",
        ] {
            assert_eq!(Scopes::parse(ok).validate().ok(), Some(()), "{ok:?}");
        }
        assert_eq!(Scopes::parse(" x  y ").as_slice(), ["x", "y"]);
        assert_eq!(
            Scopes::for_target(Target::Imap, Access::Delegated, &Cloud::Global)
                .validate()
                .ok(),
            Some(())
        );
    }

    #[test]
    fn dedup_and_cache_key_ignore_order() {
        let a = Scopes::parse("offline_access https://outlook.office.com/SMTP.Send offline_access");
        assert_eq!(a.as_slice().len(), 2);
        let b = Scopes::parse("https://outlook.office.com/SMTP.Send,offline_access");
        assert_eq!(a.cache_key(), b.cache_key());
        assert_ne!(a.to_param(), b.to_param());
        assert_eq!("POP3".parse::<Target>().unwrap(), Target::Pop);
        assert!(matches!(
            "ews".parse::<Target>(),
            Err(AuthError::InvalidInput { field: "target", ref reason })
                if reason == "\"ews\": expected imap, pop, smtp or graph"
        ));
    }
}
