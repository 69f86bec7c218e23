//! SASL XOAUTH2 (microsoft.md §7.3): `base64("user=" + mailbox + "\x01auth=Bearer " + token + "\x01\x01")`,
//! standard base64 with padding. [`encode`] is the client side; [`decode`] the server side.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Why an XOAUTH2 response was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Xoauth2Error {
    /// The user or the token holds a byte that would break the format (0x01, CR, LF or another control
    /// character), or is empty.
    #[error("the XOAUTH2 {field} is empty or holds a control character")]
    InvalidField {
        /// `user` or `token`.
        field: &'static str,
    },
    /// The response is not standard base64.
    #[error("the XOAUTH2 response is not base64")]
    NotBase64,
    /// The decoded response does not have the `user=…^Aauth=Bearer …^A^A` shape.
    #[error("the XOAUTH2 response is malformed: {0}")]
    Malformed(&'static str),
}

/// A parsed XOAUTH2 response. `Debug` does not show the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Xoauth2 {
    /// The mailbox (`user=`).
    pub user: String,
    /// The bearer token. Treat as a secret.
    pub token: String,
}

impl fmt::Debug for Xoauth2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Xoauth2")
            .field("user", &self.user)
            .field("token", &"[redacted]")
            .finish()
    }
}

fn valid(value: &str) -> bool {
    !value.is_empty() && !value.chars().any(char::is_control)
}

/// The raw (not yet base64) response. Refuses fields that would break the format.
pub fn raw(user: &str, token: &str) -> Result<Vec<u8>, Xoauth2Error> {
    if !valid(user) {
        return Err(Xoauth2Error::InvalidField { field: "user" });
    }
    if !valid(token) || token.contains(' ') {
        return Err(Xoauth2Error::InvalidField { field: "token" });
    }
    Ok(format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes())
}

/// The base64 response a client sends (as SASL-IR or after the `+` continuation).
pub fn encode(user: &str, token: &str) -> Result<String, Xoauth2Error> {
    Ok(STANDARD.encode(raw(user, token)?))
}

/// Parses a client's base64 response (surrounding white space tolerated).
pub fn decode(response: &str) -> Result<Xoauth2, Xoauth2Error> {
    let bytes = STANDARD
        .decode(response.trim())
        .map_err(|_| Xoauth2Error::NotBase64)?;
    parse(&bytes)
}

/// Parses the raw response (already base64-decoded, as IMAP's AUTHENTICATE hands it over).
pub fn parse(bytes: &[u8]) -> Result<Xoauth2, Xoauth2Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| Xoauth2Error::Malformed("not UTF-8"))?;
    let body = text
        .strip_suffix("\x01\x01")
        .ok_or(Xoauth2Error::Malformed("does not end with two ^A"))?;
    let (user_part, auth_part) = body
        .split_once('\x01')
        .ok_or(Xoauth2Error::Malformed("no ^A between user and auth"))?;
    let user = user_part
        .strip_prefix("user=")
        .ok_or(Xoauth2Error::Malformed("does not start with user="))?;
    let token = auth_part
        .strip_prefix("auth=Bearer ")
        .ok_or(Xoauth2Error::Malformed("auth is not `Bearer <token>`"))?;
    if !valid(user) {
        return Err(Xoauth2Error::InvalidField { field: "user" });
    }
    if !valid(token) || token.contains(' ') {
        return Err(Xoauth2Error::InvalidField { field: "token" });
    }
    Ok(Xoauth2 {
        user: user.to_owned(),
        token: token.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// microsoft.md §7.3, test vector 1 (the Exchange documentation's, 88 raw bytes).
    const VECTOR_1: &str = "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ==";
    /// microsoft.md §7.3, test vector 2 (Google's page, 85 raw bytes).
    const VECTOR_2: &str = "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==";

    #[test]
    fn published_vectors_encode_byte_for_byte() {
        let user1 = "test@contoso.onmicrosoft.com";
        let token1 = "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA";
        assert_eq!(raw(user1, token1).unwrap().len(), 88);
        assert_eq!(encode(user1, token1).unwrap(), VECTOR_1);
        let user2 = "someuser@example.com";
        let token2 = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg";
        assert_eq!(raw(user2, token2).unwrap().len(), 85);
        assert_eq!(encode(user2, token2).unwrap(), VECTOR_2);
    }

    #[test]
    fn published_vectors_decode() {
        let parsed = decode(VECTOR_1).unwrap();
        assert_eq!(parsed.user, "test@contoso.onmicrosoft.com");
        assert_eq!(parsed.token, "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA");
        assert!(!format!("{parsed:?}").contains("EwBA"));
        assert_eq!(
            decode(&format!(" {VECTOR_2}\r\n")).unwrap().user,
            "someuser@example.com"
        );
    }

    #[test]
    fn refuses_what_would_break_the_format() {
        for (user, token, field) in [
            ("", "t", "user"),
            ("a@b\r\nA1 LOGOUT", "t", "user"),
            ("a\x01b", "t", "user"),
            ("a@b", "", "token"),
            ("a@b", "t\x01", "token"),
            ("a@b", "two words", "token"),
        ] {
            assert_eq!(raw(user, token), Err(Xoauth2Error::InvalidField { field }));
        }
    }

    #[test]
    fn malformed_responses_are_typed() {
        let b64 = |s: &str| STANDARD.encode(s);
        assert_eq!(decode("%%%"), Err(Xoauth2Error::NotBase64));
        assert_eq!(
            decode(&b64("user=a\x01auth=Bearer t\x01")),
            Err(Xoauth2Error::Malformed("does not end with two ^A"))
        );
        assert_eq!(
            decode(&b64("user=a\x01auth=Basic t\x01\x01")),
            Err(Xoauth2Error::Malformed("auth is not `Bearer <token>`"))
        );
        assert_eq!(
            decode(&b64("name=a\x01auth=Bearer t\x01\x01")),
            Err(Xoauth2Error::Malformed("does not start with user="))
        );
        assert_eq!(
            decode(&b64("user=a\x01auth=Bearer  t\x01\x01")),
            Err(Xoauth2Error::InvalidField { field: "token" })
        );
    }
}
