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

    /// Scopes from strings (trimmed, empties and duplicates removed, order kept).
    pub fn new<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out: Vec<String> = Vec::new();
        for s in scopes {
            let s: String = s.into();
            for part in s.split_whitespace() {
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

    #[test]
    fn dedup_and_cache_key_ignore_order() {
        let a = Scopes::parse("offline_access https://outlook.office.com/SMTP.Send offline_access");
        assert_eq!(a.as_slice().len(), 2);
        let b = Scopes::parse("https://outlook.office.com/SMTP.Send,offline_access");
        assert_eq!(a.cache_key(), b.cache_key());
        assert_ne!(a.to_param(), b.to_param());
        assert_eq!("POP3".parse::<Target>().unwrap(), Target::Pop);
        assert!("ews".parse::<Target>().is_err());
    }
}
