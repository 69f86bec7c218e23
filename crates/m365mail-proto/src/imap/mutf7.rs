//! Modified UTF-7 (RFC 3501 §5.1.3), the encoding of IMAP folder names on the wire: printable ASCII stands for
//! itself (`&` as `&-`), anything else is `&` + base64 of its UTF-16BE with `,` for `/` and no padding + `-`.
//! Exchange localises its folder names (`Gesendete Elemente`, `Éléments envoyés`), so a reader meets them.

use base64::Engine as _;
use base64::alphabet::Alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

fn engine() -> GeneralPurpose {
    let alphabet =
        Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
            .expect("a valid base64 alphabet");
    GeneralPurpose::new(
        &alphabet,
        GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    )
}

/// A folder name as it goes on the wire.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&engine().encode(bytes));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            out.push(c);
            if c == '&' {
                out.push('-');
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// A folder name from the wire; `None` when it is not valid modified UTF-7 (the caller then shows it as
/// sent).
pub fn decode(wire: &str) -> Option<String> {
    let mut out = String::with_capacity(wire.len());
    let mut rest = wire;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find('-')?;
        let encoded = &after[..end];
        if encoded.is_empty() {
            out.push('&');
        } else {
            let bytes = engine().decode(encoded).ok()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            let text = String::from_utf16(&units).ok()?;
            // A shift may not encode what stands for itself (RFC 3501 forbids it; a decoder that accepts it
            // would let two wire names mean one folder).
            if text.chars().any(|c| (' '..='~').contains(&c)) {
                return None;
            }
            out.push_str(&text);
        }
        rest = &after[end + 1..];
    }
    if rest.chars().any(|c| !(' '..='~').contains(&c)) {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_3501_and_exchange_names_round_trip() {
        // RFC 3501 §5.1.3's example.
        assert_eq!(
            encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(
            decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            "~peter/mail/台北/日本語"
        );
        for name in [
            "INBOX",
            "Gesendete Elemente",
            "Éléments envoyés",
            "Tom & Jerry",
            "Черновики",
            "Archive/2026 ✓",
            "😀 emoji",
        ] {
            assert_eq!(decode(&encode(name)).as_deref(), Some(name), "{name}");
        }
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(encode("Éléments envoyés"), "&AMk-l&AOk-ments envoy&AOk-s");
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in ["&", "&Jjo", "&Jjo!-", "caf\u{e9}", "&AGE-"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
