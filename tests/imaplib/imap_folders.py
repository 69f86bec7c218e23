#!/usr/bin/env python3
"""CREATE, RENAME, DELETE and APPEND as Python's imaplib sends them, against an IMAP server with XOAUTH2:
  imap_folders.py HOST PORT CA_FILE USER TOKEN_FILE
Prints one JSON object with the server's answers and the folder list afterwards."""
import imaplib
import json
import ssl
import sys
import time

host, port, ca, user, token_file = sys.argv[1:6]
token = open(token_file).read().strip()
imap = imaplib.IMAP4_SSL(host, int(port), ssl_context=ssl.create_default_context(cafile=ca))
imap.authenticate("XOAUTH2", lambda _: f"user={user}\x01auth=Bearer {token}\x01\x01".encode())
out = {}


def answer(result):
    status, data = result
    return [status, [d.decode() if isinstance(d, bytes) else str(d) for d in data if d is not None]]


out["create"] = answer(imap.create("Projects"))
out["create_child"] = answer(imap.create("Projects/2026"))
out["create_again"] = answer(imap.create("Projects"))
message = b"From: a@b.test\r\nTo: c@d.test\r\nSubject: appended\r\n\r\nkept as sent\r\n"
date = imaplib.Time2Internaldate(time.mktime((2026, 11, 30, 12, 0, 0, 0, 0, -1)))
out["append"] = answer(imap.append("Projects", "(\\Seen \\Flagged)", date, message))
out["append_missing"] = answer(imap.append("Nowhere", None, None, message))
out["rename"] = answer(imap.rename("Projects", "Clients"))
out["rename_inbox"] = answer(imap.rename("INBOX", "Elsewhere"))
out["delete_default"] = answer(imap.delete('"Sent Items"'))
imap.select("Clients")
status, data = imap.fetch("1", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
out["fetched"] = [data[0][0].decode(), data[0][1].decode()]
out["delete_child"] = answer(imap.delete("Clients/2026"))
out["list"] = [d.decode() for d in imap.list()[1]]
print(json.dumps(out))
imap.logout()
