#!/usr/bin/env python3
"""BODYSTRUCTURE, BODY and body sections as Python's imaplib fetches them, for comparing two servers:
  imap_structure.py HOST PORT CA_FILE USER TOKEN_FILE FIXTURE_DIR
Signs in with XOAUTH2, APPENDs every *.eml of FIXTURE_DIR to a new folder, fetches each one's BODYSTRUCTURE,
BODY and a list of body sections, deletes the folder and prints one JSON object: fixture name ->
{"bodystructure": raw, "body": raw, "normalized": the comparable part of BODYSTRUCTURE, "sections": {section:
base64 of the octets, or null for NIL}}. "Comparable" keeps types, subtypes, parameters, id, description,
encoding, sizes, line counts and the envelope of attached messages; it lower-cases what is case-insensitive
(types, subtypes, parameter names, encodings) and drops the extension data (MD5, disposition, language,
location), where servers may differ."""
import base64
import imaplib
import json
import os
import re
import ssl
import sys
import time

host, port, ca, user, token_file, fixtures = sys.argv[1:7]
token = open(token_file).read().strip()
imap = imaplib.IMAP4_SSL(host, int(port), ssl_context=ssl.create_default_context(cafile=ca))
imap.authenticate("XOAUTH2", lambda _: f"user={user}\x01auth=Bearer {token}\x01\x01".encode())

SECTIONS = ["1", "1.MIME", "2", "2.MIME", "3", "3.MIME", "1.1", "1.2", "1.1.MIME", "1.2.MIME", "2.1", "2.2",
            "2.HEADER", "2.TEXT", "2.1.1", "2.1.2", "2.2.MIME", "HEADER.FIELDS (SUBJECT FROM)", "TEXT", "1<2.5>",
            "2<0.3>"]


def tokens(text):
    for match in re.finditer(r'\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+', text):
        yield match.group(0)


def sexp(text):
    stack = [[]]
    for token in tokens(text):
        if token == "(":
            stack.append([])
        elif token == ")":
            done = stack.pop()
            stack[-1].append(done)
        elif token.startswith('"'):
            stack[-1].append(re.sub(r'\\(.)', r'\1', token[1:-1]))
        elif token.upper() == "NIL":
            stack[-1].append(None)
        else:
            stack[-1].append(int(token) if token.isdigit() else token)
    return stack[0]


def lower(value):
    return value.lower() if isinstance(value, str) else value


def normalize(body):
    if isinstance(body[0], list):  # multipart: parts, then the subtype
        parts = []
        for item in body:
            if not isinstance(item, list):
                break
            parts.append(normalize(item))
        return {"multipart": lower(body[len(parts)]), "parts": parts}
    kind, subtype, params, part_id, description, encoding, size = body[:7]
    out = {
        "type": lower(kind), "subtype": lower(subtype),
        "params": [[lower(params[i]), params[i + 1]] for i in range(0, len(params or []), 2)],
        "id": part_id, "description": description, "encoding": lower(encoding), "size": size,
    }
    if out["type"] == "text":
        out["lines"] = body[7]
    elif out["type"] == "message" and out["subtype"] == "rfc822":
        out["envelope"] = body[7]
        out["body"] = normalize(body[8])
        out["lines"] = body[9]
    return out


def item(response, name):
    """The raw value of `name` in a FETCH response line (a parenthesized list)."""
    text = b"".join(part if isinstance(part, bytes) else part[0] + part[1] for part in response).decode("latin-1")
    at = text.index(name + " (") + len(name) + 1
    depth = 0
    quoted = False
    for i in range(at, len(text)):
        c = text[i]
        if quoted:
            if c == "\\":
                continue
            if c == '"' and text[i - 1] != "\\":
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return text[at:i + 1]
    raise ValueError(text)


folder = f"Structure{os.getpid()}{int(time.time())}"
status, _ = imap.create(folder)
assert status == "OK", status
imap.select(folder)
result = {}
names = sorted(n for n in os.listdir(fixtures) if n.endswith(".eml"))
for name in names:
    status, _ = imap.append(folder, None, None, open(os.path.join(fixtures, name), "rb").read())
    assert status == "OK", (name, status)
for number, name in enumerate(names, start=1):
    status, data = imap.fetch(str(number), "(BODYSTRUCTURE)")
    assert status == "OK", (name, data)
    structure = item(data, "BODYSTRUCTURE")
    status, data = imap.fetch(str(number), "(BODY)")
    assert status == "OK", (name, data)
    body = item(data, "BODY")
    sections = {}
    for section in SECTIONS:
        part, _, partial = section.partition("<")
        status, data = imap.fetch(str(number), f"(BODY.PEEK[{part}]{'<' + partial if partial else ''})")
        assert status == "OK", (name, section, data)
        value = data[0][1] if isinstance(data[0], tuple) else None
        if value is None and isinstance(data[0], bytes) and data[0].rstrip().endswith(b'"")'):
            value = b""
        sections[section] = None if value is None else base64.b64encode(value).decode()
    result[name] = {"bodystructure": structure, "body": body,
                    "normalized": normalize(sexp(structure)[0]), "sections": sections}
imap.close()
imap.delete(folder)
imap.logout()
print(json.dumps(result, indent=1, sort_keys=True))
