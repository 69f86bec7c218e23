#!/usr/bin/env python3
"""SEARCH as Python's imaplib sends it, against an IMAP server with XOAUTH2:
  imap_search.py HOST PORT CA_FILE USER TOKEN_FILE
Selects INBOX, runs a list of searches (each answer turned into the subjects of the messages found, fetched
with BODY.PEEK[HEADER.FIELDS (SUBJECT)]) and prints one JSON object: search name -> [status, subjects] (or the
server's NO text)."""
import email.header
import imaplib
import json
import ssl
import sys

host, port, ca, user, token_file = sys.argv[1:6]
token = open(token_file).read().strip()
imap = imaplib.IMAP4_SSL(host, int(port), ssl_context=ssl.create_default_context(cafile=ca))
imap.authenticate("XOAUTH2", lambda _: f"user={user}\x01auth=Bearer {token}\x01\x01".encode())
imap.select("INBOX")


def subjects(numbers, uid):
    found = []
    for n in numbers:
        if uid:
            status, data = imap.uid("FETCH", n, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        else:
            status, data = imap.fetch(n, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        raw = data[0][1].decode("latin-1").split(":", 1)[1].strip()
        text = str(email.header.make_header(email.header.decode_header(raw)))
        found.append(" ".join(text.split()))
    return sorted(found)


def run(name, *criteria, uid=False, charset=None, literal=None):
    try:
        if literal is not None:
            imap.literal = literal.encode("utf-8")
        if uid:
            status, data = imap.uid("SEARCH", *((["CHARSET", charset] if charset else []) + list(criteria)))
        else:
            status, data = imap.search(charset, *criteria)
    except imaplib.IMAP4.error as e:
        out[name] = ["NO", str(e)]
        return
    if status != "OK":
        out[name] = [status, data[0].decode() if data and data[0] else ""]
        return
    numbers = data[0].decode().split()
    out[name] = [status, subjects(numbers, uid)]


out = {}
run("from_fabrikam", "FROM", '"fabrikam"', uid=True)
run("subject_invoice", "SUBJECT", "invoice")
run("from_encoded_name", "FROM", literal="müller", charset="UTF-8")
run("charset_with_ascii", "FROM", '"rachel"', charset="UTF-8")
run("unseen_larger", "UNSEEN", "LARGER", "1000000")
run("sent_before", "SENTBEFORE", "3-Dec-2026")
run("sent_on", "SENTON", "4-Dec-2026")
run("or_subjects", "OR", "SUBJECT", "kickoff", "SUBJECT", "itinerary")
run("not_from", "NOT", "FROM", "fabrikam", "FROM", "northwind")
run("body", "BODY", "DS-400")
run("text_body_only_word", "TEXT", '"cut-over weekend"')
run("cc_group", "CC", "sara.lindqvist")
run("header", "HEADER", "Subject", '"quote request"')
run("sequence_set", "2,4")
run("uid_set", "UID", "1:2", uid=True)
run("before_internal", "BEFORE", "1-Jan-2000")
imap.store("1", "+FLAGS", "(\\Flagged)")
run("flagged", "FLAGGED")
run("unflagged_count", "UNFLAGGED")
out["unflagged_count"][1] = len(out["unflagged_count"][1])
status, data = imap.uid("FETCH", "2", "(ENVELOPE)")
out["envelope"] = data[0].decode() if isinstance(data[0], bytes) else str(data[0])
print(json.dumps(out))
imap.logout()
