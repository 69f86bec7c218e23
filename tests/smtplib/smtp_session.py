#!/usr/bin/env python3
"""Python's smtplib, unchanged, against the sandbox's SMTP submission service: EHLO, STARTTLS, EHLO again,
AUTH XOAUTH2 (smtplib's auth() with the initial response), one message to a tenant mailbox and one outside.

Usage: smtp_session.py HOST PORT CA_FILE USER TOKEN_FILE TO   (prints one JSON object of what it saw)
"""
import json
import smtplib
import ssl
import sys
from email.message import EmailMessage

host, port, ca, user, token_file, to = sys.argv[1:7]
token = open(token_file).read().strip()
seen = {}
with smtplib.SMTP(host, int(port), timeout=30) as smtp:
    code, text = smtp.ehlo("client.example")
    seen["ehlo_before"] = text.decode().splitlines()
    seen["starttls"] = list(smtp.starttls(context=ssl.create_default_context(cafile=ca)))
    seen["starttls"][1] = seen["starttls"][1].decode()
    code, text = smtp.ehlo("client.example")
    seen["ehlo_after"] = text.decode().splitlines()
    code, text = smtp.auth("XOAUTH2", lambda challenge=None: f"user={user}\x01auth=Bearer {token}\x01\x01",
                           initial_response_ok=True)
    seen["auth"] = [code, text.decode()]
    message = EmailMessage()
    message["From"] = user
    message["To"] = to
    message["Subject"] = "sent with smtplib"
    message["Message-ID"] = "<smtplib-1@contoso.onmicrosoft.com>"
    message.set_content("hello from smtplib\n")
    message.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="r.csv")
    seen["refused"] = smtp.send_message(message, to_addrs=[to, "someone@example.test"])
print(json.dumps(seen))
