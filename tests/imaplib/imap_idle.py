#!/usr/bin/env python3
"""IDLE through Python's imaplib (3.11 has no idle(): its send() and readline(), as clients of that era do):
  imap_idle.py HOST PORT CA_FILE USER TOKEN_FILE ADMIN_BASE_URL
Selects INBOX, starts IDLE, delivers a message through the sandbox's admin API, and prints what the server
pushed and how long it took."""
import imaplib
import json
import ssl
import sys
import time
import urllib.request

host, port, ca, user, token_file, admin = sys.argv[1:7]
token = open(token_file).read().strip()
context = ssl.create_default_context(cafile=ca)
imap = imaplib.IMAP4_SSL(host, int(port), ssl_context=context)
imap.authenticate("XOAUTH2", lambda _: f"user={user}\x01auth=Bearer {token}\x01\x01".encode())
out = {"select": imap.select("INBOX")[1][0].decode()}
tag = imap._new_tag()
imap.send(tag + b" IDLE\r\n")
out["continuation"] = imap.readline().decode().strip()
request = urllib.request.Request(f"{admin}_sandbox/admin/mailboxes/{user}/messages",
                                 data=b"Subject: wakes the idler\r\n\r\nx\r\n", method="POST")
started = time.monotonic()
urllib.request.urlopen(request, context=context).read()
out["pushed"] = imap.readline().decode().strip()
out["seconds"] = time.monotonic() - started
imap.send(b"DONE\r\n")
out["done"] = imap.readline().decode().strip()
print(json.dumps(out))
imap.logout()
