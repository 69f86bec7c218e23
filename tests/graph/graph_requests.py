#!/usr/bin/env python3
"""Microsoft Graph mail as a Python client writes it with `requests`, in the request shapes of Microsoft's
documentation (user-sendmail, message-delta, outlook-large-attachments, message-get $value):
  graph_requests.py HOST PORT CA_FILE USER TOKEN_FILE RECIPIENT
The token must carry Mail.ReadWrite and Mail.Send for USER. The Inbox should already hold a few messages.
Prints one JSON object with what the server answered; the Rust test that runs it judges it."""
import hashlib
import json
import sys
import urllib.parse

import requests

host, port, ca, user, token_file, recipient = sys.argv[1:7]
token = open(token_file).read().strip()
base = f"https://{host}:{port}/v1.0"
graph = requests.Session()
# requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's `verify`; ignore the environment so
# the sandbox CA is what gets trusted (and no proxy intercepts loopback).
graph.trust_env = False
graph.verify = ca
graph.headers["Authorization"] = f"Bearer {token}"
out = {}


def quoted(message_id):
    """Ids are opaque and may end in '=': percent-encode them in paths."""
    return urllib.parse.quote(message_id, safe="")


# Delta: page with odata.maxpagesize=2 until the deltaLink (options only on the first request).
pages, applied = [], set()
url = f"{base}/users/{user}/mailFolders/inbox/messages/delta?$select=subject,receivedDateTime"
while True:
    response = graph.get(url, headers={"Prefer": "odata.maxpagesize=2"})
    response.raise_for_status()
    applied.add(response.headers.get("Preference-Applied"))
    page = response.json()
    pages.append([m["subject"] for m in page["value"]])
    if "@odata.nextLink" in page:
        url = page["@odata.nextLink"]
        continue
    delta_link = page["@odata.deltaLink"]
    break
out["delta_pages"] = pages
out["delta_preference_applied"] = sorted(a for a in applied if a)
out["delta_link_has_token"] = "$deltatoken=" in delta_link

# sendMail (JSON), to USER itself: the message the next delta round must report.
send = graph.post(
    f"{base}/users/{user}/sendMail",
    json={
        "message": {
            "subject": "graph-requests: new since the delta link",
            "body": {"contentType": "Text", "content": "Sent by Python requests."},
            "toRecipients": [{"emailAddress": {"address": user}}],
        },
        "saveToSentItems": True,
    },
)
out["send_mail_status"] = send.status_code
out["send_mail_body"] = send.text

response = graph.get(delta_link)
response.raise_for_status()
round_two = response.json()
out["delta_new_round"] = [m["subject"] for m in round_two["value"]]
out["delta_new_round_links"] = sorted(k for k in round_two if k.startswith("@odata.") and k.endswith("Link"))

# A draft, an upload session and a chunked upload of about 3.5 MB, then send.
draft = graph.post(
    f"{base}/users/{user}/messages",
    json={
        "subject": "graph-requests: large attachment",
        "body": {"contentType": "HTML", "content": "<p>The scan is attached.</p>"},
        "toRecipients": [{"emailAddress": {"address": recipient}}],
    },
)
out["draft_status"] = draft.status_code
draft_id = draft.json()["id"]
content = bytes((i * 7919 + (i >> 8)) % 251 for i in range(3_500_000))
out["attachment_sha256"] = hashlib.sha256(content).hexdigest()
session = graph.post(
    f"{base}/users/{user}/messages/{quoted(draft_id)}/attachments/createUploadSession",
    json={"AttachmentItem": {"attachmentType": "file", "name": "scan.pdf", "size": len(content)}},
)
out["session_status"] = session.status_code
session = session.json()
out["session_next_expected_ranges"] = session["nextExpectedRanges"]
upload_url = session["uploadUrl"]
out["upload_url"] = upload_url

# Microsoft: no Authorization header on the pre-authenticated URL (so a plain session, not `graph`). A PUT
# with one is refused.
upload = requests.Session()
upload.trust_env = False
upload.verify = ca
chunk_size = 4 * 320 * 1024
first_chunk = content[:chunk_size]
with_auth = upload.put(
    upload_url,
    data=first_chunk,
    headers={
        "Authorization": f"Bearer {token}",
        "Content-Range": f"bytes 0-{len(first_chunk) - 1}/{len(content)}",
        "Content-Type": "application/octet-stream",
    },
)
out["put_with_authorization"] = with_auth.status_code

puts = []
start = 0
while start < len(content):
    chunk = content[start : start + chunk_size]
    end = start + len(chunk) - 1
    response = upload.put(
        upload_url,
        data=chunk,
        headers={
            "Content-Length": str(len(chunk)),
            "Content-Range": f"bytes {start}-{end}/{len(content)}",
            "Content-Type": "application/octet-stream",
        },
    )
    entry = {"status": response.status_code}
    if response.status_code == 200:
        entry["next"] = response.json()["NextExpectedRanges"]
    if response.status_code == 201:
        entry["location"] = response.headers.get("Location")
    puts.append(entry)
    start = end + 1
out["puts"] = puts

sent = graph.post(f"{base}/users/{user}/messages/{quoted(draft_id)}/send")
out["send_status"] = sent.status_code

# $value of a message: the raw MIME bytes.
listed = graph.get(f"{base}/users/{user}/mailFolders/inbox/messages?$top=1&$select=subject")
listed.raise_for_status()
first = listed.json()["value"][0]
value = graph.get(f"{base}/users/{user}/messages/{quoted(first['id'])}/$value")
out["value_status"] = value.status_code
out["value_subject"] = first["subject"]
out["value_sha256"] = hashlib.sha256(value.content).hexdigest()

print(json.dumps(out))
