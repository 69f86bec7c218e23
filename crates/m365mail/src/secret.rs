//! [`Secret`]: a string that never shows itself by accident.
//!
//! Passwords, client secrets, private keys, access and refresh tokens all travel in a `Secret`. Its `Debug` and
//! `Display` print `[REDACTED]`, its memory is wiped on drop (through [`zeroize::Zeroizing`]), and the value is
//! read only through [`Secret::expose`], so every place that handles the plain text is greppable.

use std::fmt;

use zeroize::Zeroizing;

/// A redacting, zeroizing string. See the [module docs](self).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value. The `String`'s buffer moves into the secret and is wiped when the secret drops.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The plain value. Call this only where the value must go on the wire or to disk.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length in bytes (safe to log: it reveals no content).
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Serde helpers for the few places (the token cache file) that must persist a secret. Deliberately not a
/// `Serialize` impl on [`Secret`]: serialising a struct for logs or JSON output must never leak one.
pub(crate) mod serde_exposed {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Secret;

    pub(crate) fn serialize<S: Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(secret.expose())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }

    /// The same for `Option<Secret>`.
    pub(crate) mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        use super::Secret;

        pub(crate) fn serialize<S: Serializer>(
            secret: &Option<Secret>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match secret {
                Some(v) => s.serialize_some(v.expose()),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Secret>, D::Error> {
            Ok(Option::<String>::deserialize(d)?.map(Secret::new))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert_eq!(format!("{s}"), "[REDACTED]");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
        assert_eq!(s.len(), 19);
    }

    #[test]
    fn serde_helper_round_trips() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct W {
            #[serde(with = "serde_exposed")]
            s: Secret,
            #[serde(with = "serde_exposed::option", default)]
            o: Option<Secret>,
        }
        let json = serde_json::to_string(&W {
            s: "a".into(),
            o: Some("b".into()),
        })
        .unwrap();
        assert_eq!(json, r#"{"s":"a","o":"b"}"#);
        let w: W = serde_json::from_str(r#"{"s":"x"}"#).unwrap();
        assert_eq!(w.s.expose(), "x");
        assert!(w.o.is_none());
    }
}
