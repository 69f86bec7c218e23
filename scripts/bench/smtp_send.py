#!/usr/bin/env python3
"""Benchmark: `m365mail send --input` against a Python smtplib + email loop, both sending the same
--messages messages over ONE connection each to the same server (the sandbox's SMTP submission service,
STARTTLS + XOAUTH2), in one run, alternating, as a ratio.

  scripts/bench/smtp_send.py [--messages 1000] [--rounds 3] [--binary target/release/m365mail] [--graph]

With --graph, each round also runs `m365mail send --via graph` on the same messages (Graph's JSON sendMail, the default form, on
the sandbox's /v1.0/), and the table adds its row and the Graph requests it made per message (the sandbox's own
request counter, /_sandbox/admin/stats).

It serves a sandbox (`m365mail sandbox serve --free-ports --config-out`), writes the messages once as NDJSON
(a subject, a text body, and in one message of 10 a 20 KiB CSV attachment), then per round runs each sender
once and measures its wall time and peak RSS (wait4's ru_maxrss). Both build every MIME message from the same
fields (m365mail with mail-builder, Python with email.message.EmailMessage) and submit it to alex's mailbox.
m365mail's time includes its start, reading the profile and one token request to the sandbox (a cached token
after the first round); the peer gets its token before its timing starts. --no-pacing: Exchange's 30 a minute
would make both take 33 minutes.
"""
import argparse
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
PEER = r'''
import base64, json, smtplib, ssl, sys
from email.message import EmailMessage
host, port, ca, user, token_file, path = sys.argv[1:]
token = open(token_file).read().strip()
context = ssl.create_default_context(cafile=ca)
sent = 0
with smtplib.SMTP(host, int(port)) as s:
    s.starttls(context=context)
    s.ehlo()
    auth = base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
    code, reply = s.docmd("AUTH", "XOAUTH2 " + auth)
    assert code == 235, (code, reply)
    for line in open(path):
        m = json.loads(line)
        msg = EmailMessage()
        msg["From"] = user
        msg["To"] = ", ".join(m["to"])
        msg["Subject"] = m["subject"]
        msg.set_content(m["text"])
        for a in m.get("attachments", []):
            msg.add_attachment(base64.b64decode(a["data_base64"]), maintype="text", subtype="csv",
                               filename=a["name"])
        s.send_message(msg)
        sent += 1
print(json.dumps({"sent": sent}))
'''


def run(argv, env=None):
    """Runs argv; returns (seconds, peak RSS in KiB of that child, stdout text)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[:3]} failed: {err}")
    return seconds, usage.ru_maxrss, out.decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "m365mail"))
    ap.add_argument("--graph", action="store_true", help="also send through Graph (send --via graph)")
    a = ap.parse_args()
    if not pathlib.Path(a.binary).exists():
        sys.exit(f"{a.binary} missing: cargo build --release -p m365mail-cli")

    work = pathlib.Path(tempfile.mkdtemp(prefix="m365mail-bench-smtp-"))
    env = dict(os.environ, M365MAIL_LOG="error")
    env.pop("M365MAIL_PROFILE", None)
    served = subprocess.Popen([a.binary, "--json", "sandbox", "serve", "--free-ports", "--config-out", "cfg.toml",
                               "--ca-out", "ca.pem"], cwd=work, env=env, stdout=subprocess.PIPE)
    try:
        line = json.loads(served.stdout.readline())
        smtp = line["endpoints"]["smtp"]
        host, port = smtp.rsplit(":", 1)
        user, to = "adele@contoso.onmicrosoft.com", "alex@contoso.onmicrosoft.com"
        attachment = ("quarter,region,total\n" + "Q4,north,123456\n" * 1280)[:20480]
        import base64
        with open(work / "messages.ndjson", "w") as f:
            for i in range(a.messages):
                m = {"id": i, "to": [to], "subject": f"Report {i:05d}",
                     "text": f"Report {i}.\nTotals are attached every tenth message.\n"}
                if i % 10 == 0:
                    m["attachments"] = [{"name": f"report-{i}.csv",
                                         "data_base64": base64.b64encode(attachment.encode()).decode()}]
                f.write(json.dumps(m) + "\n")
        token = subprocess.run([a.binary, "--config", "cfg.toml", "-p", "sandbox-user", "token", "get",
                                "--target", "smtp", "--show-token"], cwd=work, env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        (work / "token").write_text(token)
        (work / "peer.py").write_text(PEER)
        rows = {"m365mail": [], "python": []}
        if a.graph:
            rows["graph"] = []
            import ssl
            import urllib.request
            stats_url = line["endpoints"]["identity"] + "_sandbox/admin/stats"
            tls = ssl.create_default_context(cafile=str(work / "ca.pem"))

            def graph_requests():
                with urllib.request.urlopen(stats_url, context=tls) as answer:
                    return json.load(answer)["by_endpoint"].get("graph", 0)
        for _ in range(a.rounds):
            if a.graph:
                before = graph_requests()
                seconds, rss, out = run([a.binary, "--config", str(work / "cfg.toml"), "-p", "sandbox-user", "send",
                                         "--via", "graph", "--input", str(work / "messages.ndjson")], env=env)
                sent = sum(1 for l in out.splitlines() if json.loads(l)["status"] == "sent")
                rows["graph"].append((seconds, rss, sent, (graph_requests() - before) / max(sent, 1)))
            seconds, rss, out = run([a.binary, "--config", str(work / "cfg.toml"), "-p", "sandbox-user", "send",
                                     "--input", str(work / "messages.ndjson"), "--no-pacing"], env=env)
            sent = sum(1 for l in out.splitlines() if json.loads(l)["status"] == "sent")
            rows["m365mail"].append((seconds, rss, sent))
            seconds, rss, out = run([sys.executable, str(work / "peer.py"), host, port, str(work / "ca.pem"),
                                     user, str(work / "token"), str(work / "messages.ndjson")], env=env)
            rows["python"].append((seconds, rss, json.loads(out.strip().splitlines()[-1])["sent"]))
    finally:
        served.send_signal(signal.SIGINT)
        served.wait(timeout=30)

    def median(name, index):
        return statistics.median(r[index] for r in rows[name])

    ours_s, peer_s = median("m365mail", 0), median("python", 0)
    ours_rss, peer_rss = median("m365mail", 1), median("python", 1)
    n = a.messages
    load = os.getloadavg()
    print(f"{n} messages over one connection each, {a.rounds} rounds, {os.cpu_count()} CPUs, load {load[0]:.1f}")
    print("| sender | wall s (median) | messages/s | peak RSS MiB | sent |")
    print("|---|---:|---:|---:|---:|")
    senders = [("m365mail send", "m365mail", ours_s, ours_rss),
               ("python smtplib + email", "python", peer_s, peer_rss)]
    if a.graph:
        senders.append(("m365mail send --via graph", "graph", median("graph", 0), median("graph", 1)))
    for name, key, s, rss in senders:
        print(f"| {name} | {s:.2f} | {n / s:.0f} | {rss / 1024:.1f} | {rows[key][0][2]} |")
    if a.graph:
        print(f"Graph requests per message (the sandbox's counter): {rows['graph'][0][3]:.2f}")
    print(f"| ratio m365mail / python | {ours_s / peer_s:.2f} | {peer_s / ours_s:.2f}x | "
          f"{ours_rss / peer_rss:.2f} | |")
    print(json.dumps({"messages": n, "rounds": rows, "speedup": peer_s / ours_s,
                      "rss_ratio": ours_rss / peer_rss, "load": load}))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
