#!/usr/bin/env python3
"""Deliver realistic, varied RFC 5322 messages into a mailbox of the loopback
Dovecot (scripts/realservers.sh start) over LMTP, or empty that mailbox.

Part of m365mail's "real servers" test recipe (MIT OR Apache-2.0, like the
project).  Standard library only.

Usage
  seed.py [--dir DIR] --user alice@example.test --count N [--big-every K]
          [--big-size BYTES] [--seed S] [--first I] [--clear]

  --dir        the servers' directory (default $REALSERVERS_DIR or
               ${TMPDIR:-/tmp}/m365mail-realservers); ports come from DIR/servers.env
  --count N    messages to deliver, in ONE LMTP session (one transaction each)
  --big-every K  every K-th message (index % K == K-1) carries a large
               incompressible attachment of --big-size bytes (default 3 MiB)
  --seed S     RNG seed (default 1).  Message i is a pure function of (S, i):
               the same bytes whatever --count is; its Message-ID is
               <S.i.xxxxxxxx@domain>, unique per (S, i)
  --first I    index of the first message (default 0): continue a mailbox
               without repeating Message-IDs
  --clear      first delete every message file of the user's Maildir (cur/,
               new/, tmp/) and Dovecot's index/UID list of it (see clear());
               UIDLs then continue under a new UIDVALIDITY

The mix (per message, drawn from the seeded RNG): plain text (us-ascii 7bit,
UTF-8 quoted-printable / base64 / 8bit, ISO-8859-1 8bit), HTML only,
multipart/alternative, attachments (PDF-like binary and ZIP as base64, CSV
with an RFC 2231 or an RFC 2047 ("Outlook-style") file name), an inline
image referenced by cid: inside multipart/related, nested multiparts
(mixed > alternative > related), and a forwarded message/rfc822.  Display
names and subjects use RFC 2047 encoded words: UTF-8 B, UTF-8 Q and
ISO-8859-1 Q.  Dates step forward ~17 minutes per index with varied zones.

Prints one JSON line: {"user", "delivered", "failed", "bytes", "seconds",
"messages_per_s", "kinds": {...}, "cleared"}.  Exit status 1 if any delivery
failed.
"""
import argparse
import base64
import datetime
import io
import json
import os
import quopri
import random
import re
import smtplib
import struct
import sys
import time
import zipfile
import zlib
from email import message_from_bytes
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import compat32
from email.utils import format_datetime

POLICY = compat32.clone(linesep="\r\n")

PEOPLE = [
    ("Adele Vance", "adele.vance@contoso.example"),
    ("Alex Wilber", "alexw@contoso.example"),
    ("Jürgen Müller", "juergen.mueller@example.de"),
    ("Zoë Ñúñez", "zoe.nunez@example.es"),
    ("François Lefèvre", "f.lefevre@example.fr"),
    ("Søren Kierkegård", "soren@example.dk"),
    ("Ólafur Þórsson", "olafur@example.is"),
    ("Renée O'Brien", "renee.obrien@example.ie"),
    ("李雷", "li.lei@example.cn"),
    ("Ζωή Παπαδοπούλου", "zoi@example.gr"),
    ("Иван Петров", "ivan.petrov@example.ru"),
    ("Megan Bowen", "meganb@contoso.example"),
    ("Billing Department", "billing@fabrikam.example"),
    ("GitHub", "noreply@notifications.example.com"),
]
SUBJECTS = [
    "Quarterly report Q{q} {y}",
    "Meeting notes – {day}",
    "Re: Invoice #{n} overdue",
    "Fwd: Travel itinerary for {city}",
    "Grüße aus {city} – Übersicht der Änderungen",
    "Résumé de la réunion du {day}",
    "Your order {n} has shipped",
    "Déjà vu: the naïve café problem, part {q}",
    "会议纪要 {day}",
    "Προσφορά για το έργο {n}",
    "Счёт №{n} за услуги",
    "[ops] disk usage on host-{q} at {pct}%",
    "Lunch on {day}? 🍕",
    "Weekly digest: {n} new items",
]
CITIES = ["München", "Zürich", "Kraków", "Reykjavík", "São Paulo", "Malmö", "Genève", "Tokyo"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "lundi", "Dienstag"]
WORDS = ("the of and to in is for on that with as by this be are from at or it an we will "
         "report budget meeting project deadline review draft customer invoice payment "
         "schedule update team release server mailbox message attachment quarter revenue "
         "forecast please find attached regards thanks agenda minutes action item owner "
         "Änderung Übersicht größer café naïve façade résumé Ærø smörgåsbord piñata").split()
ZONES = [0, 60, -300, 330, 540, 120, -420, 600]
KINDS = [  # (name, weight)
    ("plain", 25), ("html_only", 10), ("alternative", 20), ("mixed_pdf", 10),
    ("mixed_csv", 8), ("related_inline", 8), ("nested", 9), ("forward", 10),
]


# ------------------------------------------------------------ encoded words
def _b_words(text, charset):
    """RFC 2047 B encoded words of at most 75 characters, split on characters."""
    out, chunk = [], ""
    for ch in text:
        cand = chunk + ch
        if len(base64.b64encode(cand.encode(charset))) + len(charset) + 7 > 75:
            out.append(chunk)
            cand = ch
        chunk = cand
    out.append(chunk)
    return [f"=?{charset}?B?{base64.b64encode(c.encode(charset)).decode()}?=" for c in out if c]


def _q_char(b):
    c = chr(b)
    if c == " ":
        return "_"
    if c.isascii() and (c.isalnum() or c in "!*+-/"):
        return c
    return f"={b:02X}"


def _q_words(text, charset):
    out, cur = [], ""
    limit = 75 - len(charset) - 7
    for ch in text:
        enc = "".join(_q_char(b) for b in ch.encode(charset))
        if len(cur) + len(enc) > limit:
            out.append(cur)
            cur = ""
        cur += enc
    out.append(cur)
    return [f"=?{charset}?Q?{c}?=" for c in out if c]


def encode_words(text, style):
    """style: utf8-b | utf8-q | latin1-q (falls back to utf8-b when not Latin-1)."""
    if text.isascii():
        return text
    if style == "latin1-q":
        try:
            text.encode("iso-8859-1")
            return "\r\n ".join(_q_words(text, "ISO-8859-1"))
        except UnicodeEncodeError:
            style = "utf8-b"
    if style == "utf8-q":
        return "\r\n ".join(_q_words(text, "UTF-8"))
    return "\r\n ".join(_b_words(text, "UTF-8"))


def mailbox(name, addr, style):
    if not name:
        return addr
    if name.isascii():
        if re.search(r"[()<>\[\]:;@\\,.\"']", name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{addr}>"
    return f"{encode_words(name, style)} <{addr}>"


# ------------------------------------------------------------ content
def sentence(rng, n=None):
    words = [rng.choice(WORDS) for _ in range(n or rng.randint(6, 16))]
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])


def paragraphs(rng, count):
    return ["\n".join(" ".join(sentence(rng) for _ in range(rng.randint(1, 3)))
                      for _ in range(rng.randint(1, 4))) for _ in range(count)]


def text_body(rng, size_hint):
    paras = []
    while sum(len(p) for p in paras) < size_hint:
        paras.extend(paragraphs(rng, 1))
    sign = rng.choice(["\n-- \nAdele Vance\nContoso Ltd.\n", "\nThanks,\nJürgen\n", "\nBest regards\n", ""])
    return "Hello,\n\n" + "\n\n".join(paras) + "\n" + sign


def html_from_text(rng, text, cid=None):
    esc = (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    paras = "".join(f"<p>{p.replace(chr(10), '<br>')}</p>\r\n" for p in esc.split("\n\n"))
    rows = "".join(f"<tr><td>{rng.choice(WORDS)}</td><td>{rng.randint(1, 99999)}</td></tr>"
                   for _ in range(rng.randint(0, 8)))
    table = f"<table border=\"1\" cellpadding=\"4\">{rows}</table>\r\n" if rows else ""
    img = f'<p><img src="cid:{cid}" alt="chart" width="32" height="32"></p>\r\n' if cid else ""
    return ("<!DOCTYPE html>\r\n<html><head><meta http-equiv=\"Content-Type\" "
            "content=\"text/html; charset=utf-8\"><style>p{font-family:Calibri,sans-serif}"
            "</style></head>\r\n<body>\r\n" + paras + table + img + "</body></html>\r\n")


def png_bytes(rng, w=32, h=32):
    """A small real PNG (gradient + noise), stdlib only."""
    r0, g0, b0 = rng.randrange(256), rng.randrange(256), rng.randrange(256)
    raw = b"".join(b"\x00" + bytes(
        v for x in range(w) for v in ((r0 + x * 7) % 256, (g0 + y * 7) % 256, (b0 + x * y) % 256))
        for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def pdf_bytes(rng, size):
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\nstream\n"
    return head + rng.randbytes(max(0, size)) + b"\nendstream\n%%EOF\n"


def csv_text(rng):
    rows = ["id;name;city;amount;date"]
    for i in range(rng.randint(5, 400)):
        name = rng.choice(PEOPLE)[0]
        rows.append(f"{i + 1};{name};{rng.choice(CITIES)};{rng.randint(1, 999999) / 100:.2f};"
                    f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}")
    return "\r\n".join(rows) + "\r\n"


def zip_bytes(rng):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("notes/readme.txt", date_time=(2025, 1, 2, 3, 4, 5))
        z.writestr(info, text_body(rng, 2000))
        info = zipfile.ZipInfo("data.bin", date_time=(2025, 1, 2, 3, 4, 5))
        z.writestr(info, rng.randbytes(rng.randint(100, 5000)))
    return buf.getvalue()


# ------------------------------------------------------------ MIME parts
def _clean(part):
    del part["MIME-Version"]   # email.mime puts it on every part; only the root keeps it
    return part


def finish(root, rng):
    """MIME-Version once, at the top (a forwarded message/rfc822 keeps its own),
    and boundaries from the seeded RNG (the email package would draw random ones)."""
    def walk(part):
        if part is not root:
            del part["MIME-Version"]
        if part.get_content_type() != "message/rfc822" and part.is_multipart():
            part.set_boundary(f"----=_Part_{rng.getrandbits(64):016x}")
            for sub in part.get_payload():
                walk(sub)
    walk(root)
    if root["MIME-Version"] is None:
        root["MIME-Version"] = "1.0"


def text_part(subtype, text, charset="utf-8", cte="quoted-printable"):
    p = MIMENonMultipart("text", subtype, charset=charset)
    lf = text.replace("\r\n", "\n")
    data = lf.replace("\n", "\r\n").encode(charset)   # canonical form: CRLF line ends
    if cte == "quoted-printable":
        # encode LF-ended lines: the line breaks stay real breaks (quopri would turn a
        # CR into "=0D"); the generator writes them as CRLF
        p.set_payload(quopri.encodestring(lf.encode(charset)).decode("ascii"))
    elif cte == "base64":
        p.set_payload(base64.encodebytes(data).decode("ascii"))
    else:                      # 7bit / 8bit: raw bytes (kept by the bytes generator)
        p.set_payload(data)
    p["Content-Transfer-Encoding"] = cte
    return _clean(p)


def binary_part(maintype, subtype, data, filename=None, disposition="attachment",
                name_style="plain", cid=None):
    p = MIMEBase(maintype, subtype)
    p.set_payload(base64.encodebytes(data).decode("ascii"))
    p["Content-Transfer-Encoding"] = "base64"
    if filename:
        if name_style == "rfc2231" and not filename.isascii():
            p.set_param("name", ("utf-8", "", filename))
            p.add_header("Content-Disposition", disposition, filename=("utf-8", "", filename))
        elif name_style == "rfc2047" and not filename.isascii():
            enc = "".join(_b_words(filename, "UTF-8"))  # one long encoded string, as Outlook does
            p.set_param("name", enc)
            p.add_header("Content-Disposition", disposition, filename=enc)
        else:
            p.set_param("name", filename)
            p.add_header("Content-Disposition", disposition, filename=filename)
    else:
        p.add_header("Content-Disposition", disposition)
    if cid:
        p["Content-ID"] = f"<{cid}>"
    return _clean(p)


def plain_any(rng, text):
    enc = rng.choice(["7bit-ascii", "qp", "qp", "b64", "8bit", "latin1-8bit"])
    if enc == "7bit-ascii":
        return text_part("plain", text.encode("ascii", "replace").decode(), "us-ascii", "7bit")
    if enc == "b64":
        return text_part("plain", text, "utf-8", "base64")
    if enc == "8bit":
        return text_part("plain", text, "utf-8", "8bit")
    if enc == "latin1-8bit":
        return text_part("plain", text.encode("iso-8859-1", "replace").decode("iso-8859-1"),
                         "iso-8859-1", "8bit")
    return text_part("plain", text, "utf-8", "quoted-printable")


def alternative(rng, text, cid=None, image=None):
    alt = MIMEMultipart("alternative")
    alt.attach(plain_any(rng, text))
    html = text_part("html", html_from_text(rng, text, cid), "utf-8",
                     rng.choice(["quoted-printable", "base64"]))
    if image is not None:
        rel = MIMEMultipart("related", type="text/html")
        rel.attach(html)
        rel.attach(image)
        alt.attach(_clean(rel))
    else:
        alt.attach(html)
    return alt


def attachment(rng, kind, big=0):
    if kind == "pdf":
        name = rng.choice(["report.pdf", "Rechnung März 2025.pdf", "facture_été.pdf", "scan0001.pdf"])
        return binary_part("application", "pdf", pdf_bytes(rng, big or rng.randint(5_000, 200_000)),
                           name, name_style=rng.choice(["rfc2231", "rfc2047"]))
    if kind == "csv":
        name = rng.choice(["export.csv", "Übersicht 2025.csv", "données.csv"])
        p = text_part("csv", csv_text(rng), "utf-8", rng.choice(["base64", "quoted-printable"]))
        style = rng.choice(["rfc2231", "rfc2047"])
        if style == "rfc2231" and not name.isascii():
            p.add_header("Content-Disposition", "attachment", filename=("utf-8", "", name))
        elif not name.isascii():
            p.add_header("Content-Disposition", "attachment", filename="".join(_b_words(name, "UTF-8")))
        else:
            p.add_header("Content-Disposition", "attachment", filename=name)
        return p
    if kind == "zip":
        return binary_part("application", "zip", zip_bytes(rng), "archive.zip")
    if kind == "big":
        return binary_part("application", "octet-stream", rng.randbytes(big), "big-dataset.bin")
    raise ValueError(kind)


# ------------------------------------------------------------ whole messages
def build(seed, index, user, big_every=0, big_size=3 << 20, depth=0):
    """-> (raw bytes with CRLF, kind, needs_8bit)"""
    rng = random.Random(f"m365mail-seed/{seed}/{index}/{depth}")
    style = rng.choice(["utf8-b", "utf8-q", "latin1-q"])
    kind = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
    if depth:  # a forwarded message: no further nesting
        kind = rng.choice(["plain", "alternative", "mixed_pdf", "mixed_csv"])
    big = big_every and depth == 0 and index % big_every == big_every - 1
    sender = rng.choice(PEOPLE)
    subject = rng.choice(SUBJECTS).format(
        q=rng.randint(1, 4), y=2025, n=rng.randint(1000, 99999), day=rng.choice(DAYS),
        city=rng.choice(CITIES), pct=rng.randint(80, 99))
    if kind == "forward" and not subject.startswith("Fwd:"):
        subject = "Fwd: " + subject
    text = text_body(rng, rng.choice([300, 800, 2000, 6000, 15000]))

    if kind == "plain":
        root = plain_any(rng, text)
    elif kind == "html_only":
        root = text_part("html", html_from_text(rng, text), "utf-8",
                         rng.choice(["quoted-printable", "base64", "8bit"]))
    elif kind == "alternative":
        root = alternative(rng, text)
    elif kind == "mixed_pdf":
        root = MIMEMultipart("mixed")
        root.attach(alternative(rng, text) if rng.random() < 0.6 else plain_any(rng, text))
        root.attach(attachment(rng, "pdf"))
    elif kind == "mixed_csv":
        root = MIMEMultipart("mixed")
        root.attach(plain_any(rng, text))
        root.attach(attachment(rng, "csv"))
    elif kind == "related_inline":
        cid = f"image001.png@{seed:x}.{index}"
        img = binary_part("image", "png", png_bytes(rng), "image001.png", "inline", cid=cid)
        root = alternative(rng, text, cid, img)
    elif kind == "nested":
        cid = f"chart.png@{seed:x}.{index}"
        img = binary_part("image", "png", png_bytes(rng), "chart.png", "inline", cid=cid)
        root = MIMEMultipart("mixed")
        root.attach(alternative(rng, text, cid, img))
        root.attach(attachment(rng, "pdf"))
        root.attach(attachment(rng, rng.choice(["csv", "zip"])))
    else:  # forward
        inner_raw, _, _ = build(seed, index, user, depth=1)
        root = MIMEMultipart("mixed")
        root.attach(plain_any(rng, "Please see the forwarded message below.\n\n" + sentence(rng) + "\n"))
        inner = MIMEMessage(message_from_bytes(inner_raw, policy=compat32))
        inner.add_header("Content-Disposition", "attachment")
        root.attach(_clean(inner))
    if big:
        if not root.is_multipart() or root.get_content_subtype() != "mixed":
            mixed = MIMEMultipart("mixed")
            mixed.attach(root)
            root = mixed
        root.attach(attachment(rng, "big", big=big_size))
        kind += "+big"

    # top-level headers, written by hand so the encoded words stay as chosen
    base = datetime.datetime(2025, 1, 6, 8, 0, tzinfo=datetime.timezone.utc)
    when = base + datetime.timedelta(minutes=17 * index + rng.randint(0, 16), seconds=rng.randint(0, 59))
    if depth:
        when -= datetime.timedelta(days=rng.randint(1, 30))
    tz = datetime.timezone(datetime.timedelta(minutes=rng.choice(ZONES)))
    date = format_datetime(when.astimezone(tz))
    domain = sender[1].split("@", 1)[1]
    msgid = f"<{seed}.{index}{'.fwd' if depth else ''}.{rng.getrandbits(32):08x}@{domain}>"
    to = [mailbox(rng.choice(["", "Alice", "Alice Ødegård"]), user, style)]
    for _ in range(rng.choice([0, 0, 1, 2])):
        to.append(mailbox(*rng.choice(PEOPLE), style))
    lines = [
        f"Received: from mail.{domain} (mail.{domain} [192.0.2.{rng.randint(1, 254)}])\r\n"
        f"\tby mx.example.test with ESMTPS id {rng.getrandbits(48):012X}; {date}",
        f"From: {mailbox(*sender, style)}",
        "To: " + ",\r\n ".join(to),
    ]
    if rng.random() < 0.3:
        lines.append("Cc: " + mailbox(*rng.choice(PEOPLE), style))
    lines += [f"Subject: {encode_words(subject, style)}", f"Date: {date}", f"Message-ID: {msgid}"]
    if subject.startswith("Re:"):
        ref = f"<{seed}.{max(0, index - 1)}.parent@{domain}>"
        lines += [f"In-Reply-To: {ref}", f"References: {ref}"]
    if rng.random() < 0.4:
        lines.append("X-Mailer: " + rng.choice(["Microsoft Outlook 16.0", "Apple Mail (2.3774)",
                                                "Thunderbird/128.5.0", "m365mail-seed"]))
    finish(root, rng)
    body = root.as_bytes(policy=POLICY)
    raw = ("\r\n".join(lines) + "\r\n").encode("ascii") + body
    raw = re.sub(rb"(?<!\r)\n", b"\r\n", raw)   # LMTP wants CRLF everywhere
    needs_8bit = not raw.isascii()
    return raw, kind, needs_8bit


# ------------------------------------------------------------ CLI
def load_env(d):
    env = {}
    try:
        with open(os.path.join(d, "servers.env")) as fh:
            for line in fh:
                k, sep, v = line.rstrip("\n").partition("=")
                if sep:
                    env[k] = v
    except FileNotFoundError:
        sys.exit(f"seed.py: no {d}/servers.env -- run scripts/realservers.sh start {d}")
    return env


def maildir_of(env, d, user):
    local, _, domain = user.lower().rpartition("@")
    root = env.get("REALSERVERS_MAILDIR_ROOT") or os.path.join(d, "mail")
    return os.path.join(root, domain, local, "Maildir")


def clear(maildir):
    """Delete the message files, and Dovecot's index and UID list of the folder.

    Deleting only the files is not enough: Dovecot may trust its index (its
    maildir sync skips the rescan when the directories look unchanged to it),
    and a POP3 session then lists the deleted messages and answers RETR with
    "-ERR Message 1 expunged."  Without dovecot-uidlist Dovecot starts a new
    UIDVALIDITY (from dovecot-uidvalidity, kept), so UIDLs are never reused.
    Run it while no session has the mailbox open."""
    n = 0
    for sub in ("cur", "new", "tmp"):
        p = os.path.join(maildir, sub)
        if not os.path.isdir(p):
            continue
        for name in os.listdir(p):
            fp = os.path.join(p, name)
            if os.path.isfile(fp):
                os.unlink(fp)
                n += 1
    if os.path.isdir(maildir):
        for name in os.listdir(maildir):
            if name == "dovecot-uidlist" or name.startswith("dovecot.index"):
                os.unlink(os.path.join(maildir, name))
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=os.environ.get("REALSERVERS_DIR") or os.path.join(
        os.environ.get("TMPDIR") or "/tmp", "m365mail-realservers"))
    ap.add_argument("--user", required=True)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--big-every", type=int, default=0)
    ap.add_argument("--big-size", type=int, default=3 << 20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--clear", action="store_true")
    a = ap.parse_args(argv)
    if "@" not in a.user:
        ap.error("--user must be <name>@<domain>")
    env = load_env(a.dir)
    cleared = clear(maildir_of(env, a.dir, a.user)) if a.clear else 0

    kinds, delivered, failed, total = {}, 0, 0, 0
    t0 = time.perf_counter()
    if a.count > 0:
        lmtp = smtplib.LMTP(env.get("REALSERVERS_HOST", "127.0.0.1"), int(env["REALSERVERS_LMTP_PORT"]))
        lmtp.ehlo("seed.example.test")   # LHLO
        for i in range(a.first, a.first + a.count):
            raw, kind, eight = build(a.seed, i, a.user, a.big_every, a.big_size)
            opts = ["BODY=8BITMIME"] if eight else []
            # A 4xx is temporary: Dovecot 2.3's auth process can die under concurrent oauth2 failures
            # (signal 11), and the LMTP process's first userdb lookup afterwards fails once. Retry those.
            for attempt in range(3):
                try:
                    lmtp.sendmail("seed@example.test", [a.user], raw, mail_options=opts)
                    delivered += 1
                    total += len(raw)
                    kinds[kind] = kinds.get(kind, 0) + 1
                    break
                except smtplib.SMTPException as e:
                    temporary = isinstance(e, smtplib.SMTPRecipientsRefused) and all(
                        400 <= code < 500 for code, _ in e.recipients.values())
                    try:
                        lmtp.rset()
                    except smtplib.SMTPException:
                        pass
                    if temporary and attempt < 2:
                        time.sleep(0.2)
                        continue
                    failed += 1
                    print(f"seed.py: message {i} refused: {e}", file=sys.stderr)
                    break
        lmtp.quit()
    dt = time.perf_counter() - t0
    print(json.dumps({"user": a.user, "delivered": delivered, "failed": failed, "bytes": total,
                      "seconds": round(dt, 3),
                      "messages_per_s": round(delivered / dt, 1) if dt > 0 and delivered else 0,
                      "kinds": dict(sorted(kinds.items())), "cleared": cleared}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
