"""Python's poplib (a POP3 client nobody here wrote) against the sandbox's POP3 service.

Usage: pop3_session.py HOST PORT CA_FILE USER TOKEN_FILE
Signs in with two-line AUTH XOAUTH2 (poplib has no AUTH command: it is sent with _shortcmd, the way
client code does it), lists, retrieves the first message and prints one JSON line with what it saw.
"""
import base64
import json
import poplib
import ssl
import sys

host, port, ca_file, user, token_file = sys.argv[1:6]
token = open(token_file).read().strip()
context = ssl.create_default_context(cafile=ca_file)
pop = poplib.POP3_SSL(host, int(port), context=context, timeout=20)
greeting = pop.getwelcome().decode()
capa = {name: args for name, args in pop.capa().items()}
continuation = pop._shortcmd("AUTH XOAUTH2")
blob = base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
authenticated = pop._shortcmd(blob).decode()
count, size = pop.stat()
uidl = [line.decode() for line in pop.uidl()[1]]
lines = [line.decode() for line in pop.retr(1)[1]]
pop.dele(1)
bye = pop.quit().decode()
print(json.dumps({
    "greeting": greeting,
    "capa": sorted(capa),
    "sasl": capa.get("SASL", []),
    "continuation": continuation.decode(),
    "authenticated": authenticated,
    "count": count,
    "size": size,
    "uidl": uidl,
    "subject": [l for l in lines if l.startswith("Subject:")],
    "quit": bye,
}))
