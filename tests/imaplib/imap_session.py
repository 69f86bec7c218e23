#!/usr/bin/env python3
"""Python's imaplib, unchanged, against the sandbox's IMAP service: greeting, CAPABILITY, AUTHENTICATE
XOAUTH2 (imaplib's continuation form), CAPABILITY after sign-in, LIST, STATUS, SELECT, EXAMINE, LOGOUT.

Usage: imap_session.py HOST PORT CA_FILE USER TOKEN_FILE   (prints one JSON object of what it saw)
"""
import email
import imaplib
import json
import ssl
import sys

host, port, ca, user, token_file = sys.argv[1:6]
token = open(token_file).read().strip()
ctx = ssl.create_default_context(cafile=ca)
imap = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
seen = {"greeting": imap.welcome.decode(), "capabilities": list(imap.capabilities)}
typ, data = imap.authenticate("XOAUTH2", lambda _: f"user={user}\x01auth=Bearer {token}\x01\x01".encode())
seen["authenticate"] = [typ, data[0].decode()]
typ, data = imap.capability()
seen["capability_after"] = data[0].decode()
typ, data = imap.list()
seen["list"] = [d.decode() for d in data]
typ, data = imap.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
seen["status"] = data[0].decode()
typ, data = imap.select("INBOX")
seen["select"] = [typ, data[0].decode()]
seen["uidvalidity"] = imap.response("UIDVALIDITY")[1][0].decode()
typ, data = imap.fetch("1:2", "(UID FLAGS RFC822.SIZE)")
seen["fetch_meta"] = [d.decode() for d in data]
typ, data = imap.uid("FETCH", "2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
seen["header_fields"] = data[0][1].decode()
typ, data = imap.fetch("2", "(BODY[]<0.8>)")
seen["partial"] = [data[0][0].decode(), data[0][1].decode(), data[1].decode()]
typ, data = imap.fetch("3", "(RFC822)")
seen["rfc822_subject"] = email.message_from_bytes(data[0][1])["Subject"]
typ, data = imap.store("1", "+FLAGS", "(\\Deleted)")
seen["store"] = data[0].decode()
typ, data = imap.expunge()
seen["expunge"] = [d.decode() for d in data]
typ, data = imap.fetch("1", "(UID)")
seen["after_expunge"] = data[0].decode()
typ, data = imap.status("INBOX", "(MESSAGES UNSEEN)")
seen["status_after"] = data[0].decode()
typ, data = imap.select('"Sent Items"', readonly=True)
seen["examine"] = [typ, data[0].decode()]
typ, data = imap.store("1", "+FLAGS", "(\\Seen)")
seen["store_read_only"] = typ
typ, data = imap.logout()
seen["logout"] = typ
print(json.dumps(seen))
