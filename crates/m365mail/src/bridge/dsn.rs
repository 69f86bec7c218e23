//! The delivery status notification (RFC 3464, a `multipart/report` of RFC 6522) the spool sends to a
//! message's envelope sender when it gives the message up: a human-readable part, the
//! `message/delivery-status` part (one block per recipient) and the original header (`text/rfc822-headers`).
//! Pure: the caller passes the time, the names and the reason.

/// The largest original header quoted back.
const MAX_QUOTED_HEADER: usize = 64 * 1024;

/// What the report says.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    /// The bridge's name (`Reporting-MTA`, the report's Message-ID domain).
    pub host_name: &'a str,
    /// The mailbox the report is sent as (`From:`).
    pub mailbox: &'a str,
    /// The envelope sender the report goes to.
    pub to: &'a str,
    /// The envelope recipients that did not get the message.
    pub recipients: &'a [String],
    /// The failed message's Message-ID (without brackets; empty when it had none).
    pub message_id: &'a str,
    /// When the bridge accepted it (Unix seconds).
    pub received_at: u64,
    /// Attempts made.
    pub attempts: u32,
    /// Why it was given up: the last reply (e.g. `554 5.6.0 …`), or the bound reached.
    pub reason: &'a str,
    /// The enhanced status of the failure (`5.0.0` when unknown).
    pub status: &'a str,
}

/// Every character a header value may hold: printable ASCII and spaces (a reply or a name from outside
/// cannot end the line it is written on).
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn rfc5322(secs: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(0), 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// The header block of `message` (up to its first empty line, at most 64 KiB, whole lines).
fn header_block(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |at| at + 2);
    let block = &message[..end.min(MAX_QUOTED_HEADER)];
    match block.iter().rposition(|b| *b == b'\n') {
        Some(last) => &block[..=last],
        None => &[],
    }
}

/// The report for `failure` about `original` (the message as spooled), dated `now` (Unix seconds).
pub fn build(failure: &Failure<'_>, original: &[u8], now: u64) -> Vec<u8> {
    let boundary = format!("=_m365mail-dsn-{}", uuid::Uuid::new_v4().simple());
    let host = clean(failure.host_name);
    let reason = clean(failure.reason);
    let status = clean(failure.status);
    let id = clean(failure.message_id);
    let list = failure
        .recipients
        .iter()
        .map(|r| clean(r))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = String::new();
    out.push_str(&format!(
        "From: Mail Delivery System <{}>\r\nTo: <{}>\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Date: {}\r\nMessage-ID: <{}@{host}>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"{boundary}\"\r\n\r\n\
         This is a delivery status notification (RFC 3464).\r\n\r\n--{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         The m365mail bridge {host} could not deliver your message{} to {list}\r\n\
         and has given up after {} attempt(s) since {}.\r\n\r\nReason: {reason}\r\n\r\n\
         The message is kept in the bridge's dead-letter folder; its operator can send it again\r\n\
         (m365mail bridge queue retry) once the cause is fixed.\r\n\r\n--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; {host}\r\nArrival-Date: {}\r\n",
        clean(failure.mailbox),
        clean(failure.to),
        rfc5322(now),
        uuid::Uuid::new_v4().simple(),
        if id.is_empty() {
            String::new()
        } else {
            format!(" <{id}>")
        },
        failure.attempts,
        rfc5322(failure.received_at),
        rfc5322(failure.received_at),
    ));
    for recipient in failure.recipients {
        out.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {reason}\r\n",
            clean(recipient)
        ));
    }
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ));
    let mut bytes = out.into_bytes();
    // The original header as it was (8-bit included): only lines that end in CRLF, as spooled.
    bytes.extend_from_slice(header_block(original));
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// The enhanced status code at the start of a reply text (`5.6.0 …` → `5.6.0`), else `5.0.0`.
pub fn status_of(reply_text: &str) -> String {
    let first = reply_text.split_whitespace().next().unwrap_or("");
    let parts: Vec<&str> = first.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if numeric && first.starts_with('5') {
        first.to_owned()
    } else {
        "5.0.0".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_a_multipart_report_that_cannot_be_broken_by_its_inputs() {
        let recipients = vec!["a@contoso.com".to_owned(), "b@contoso.com".to_owned()];
        let failure = Failure {
            host_name: "bridge.lan",
            mailbox: "scan@contoso.com",
            to: "scan@contoso.com",
            recipients: &recipients,
            message_id: "x@printer",
            received_at: 1_796_619_601,
            attempts: 3,
            reason: "554 5.6.0 refused\r\nBcc: evil@example.test",
            status: "5.6.0",
        };
        let original = b"From: scan@contoso.com\r\nSubject: Scan\r\n\r\nsecret body\r\n";
        let report = build(&failure, original, 1_796_620_000);
        let text = String::from_utf8(report.clone()).unwrap();
        assert!(text.contains("report-type=delivery-status"), "{text}");
        assert!(
            text.contains(
                "Final-Recipient: rfc822; b@contoso.com\r\nAction: failed\r\nStatus: 5.6.0"
            )
        );
        assert!(
            text.contains("Subject: Scan\r\n"),
            "the original header is quoted"
        );
        assert!(!text.contains("secret body"), "not the body");
        assert!(
            !text.contains("\r\nBcc:"),
            "a reply cannot add a header line"
        );
        let parsed = crate::mime::parse(&report).unwrap();
        assert_eq!(parsed.to[0].address.as_deref(), Some("scan@contoso.com"));
        assert!(parsed.text.unwrap().contains("3 attempt(s)"));
        assert_eq!(status_of("5.6.0 Microsoft Graph refused"), "5.6.0");
        assert_eq!(status_of("4.4.1 later"), "5.0.0");
        assert_eq!(status_of("gave up"), "5.0.0");
    }
}
