#!/usr/bin/env python3
"""COPY and MOVE as Python's imaplib sends them, against an IMAP server with XOAUTH2:
  imap_move.py HOST PORT CA_FILE USER TOKEN_FILE
Prints one JSON object with what the server answered and the folders' state afterwards."""
import imaplib
import json
import ssl
import sys

host, port, ca, user, token_file = sys.argv[1:6]
token = open(token_file).read().strip()
imap = imaplib.IMAP4_SSL(host, int(port), ssl_context=ssl.create_default_context(cafile=ca))
imap.authenticate("XOAUTH2", lambda _: f"user={user}\x01auth=Bearer {token}\x01\x01".encode())
out = {}


def text(data):
    return [d.decode() if isinstance(d, bytes) else str(d) for d in data if d is not None]


out["select"] = text(imap.select("INBOX")[1])
imap.store("1", "+FLAGS", "(\\Flagged)")
status, data = imap.copy("1", "Archive")
out["copy"] = [status, text(data)]
imap.untagged_responses.clear()
status, data = imap.uid("MOVE", "2:3", "Archive")
out["move"] = [status, text(data)]
out["move_untagged_ok"] = text(imap.untagged_responses.get("OK", []))
out["move_expunge"] = text(imap.untagged_responses.get("EXPUNGE", []))
status, data = imap.copy("1", "NoSuchFolder")
out["copy_missing"] = [status, text(data)]
out["inbox_after"] = text(imap.status("INBOX", "(MESSAGES)")[1])
out["archive_after"] = text(imap.status("Archive", "(MESSAGES UIDNEXT)")[1])
imap.select("Archive")
status, data = imap.fetch("1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
out["archive_fetch"] = [text(d) if isinstance(d, tuple) else d.decode() for d in data]
imap.select("INBOX", readonly=True)
status, data = imap.uid("MOVE", "4", "Archive")
out["move_read_only"] = [status, text(data)]
print(json.dumps(out))
imap.logout()
