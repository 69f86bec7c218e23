#!/usr/bin/env python3
"""Benchmark: `m365mail read --protocol graph --out-dir` against a Python Graph reader (urllib + email, four
downloads at once) and against `m365mail read --protocol imap` on the same mailbox of the same served sandbox,
in one run, alternating, as ratios; plus the Graph requests each message cost (the sandbox's own counter).

  scripts/bench/graph_read.py [--messages 1000] [--rounds 3] [--big-every 50] [--big-size 2097152]
                              [--binary target/release/m365mail]

It writes --messages mixed messages (scripts/realservers/seed.py's generator: plain, HTML, alternative,
attachments, inline images, RFC 2047 headers, forwards; one in --big-every with a --big-size attachment) into
a mail directory, serves a sandbox on it (`m365mail sandbox serve --free-ports --mail-dir`), then per round
runs each reader once on Adele's whole Inbox with a fresh checkpoint store and output directory (nothing is
changed: --then none) and measures its wall time and peak RSS (wait4's ru_maxrss of the child):

- m365mail over Graph: the daemon profile (app-only, Mail.Read) with --mailbox: delta pages of 100 with
  immutable ids, `$value` per message (four at once), parse, a JSON record and every attachment written with
  temp + fsync + rename, the checkpoint committed per message. Its time includes its start and one token
  request to the sandbox.
- m365mail over IMAP: the user profile: EXAMINE, UID SEARCH, FETCH in batches, the same records.
- the Python peer: the daemon's Graph token fetched before its timing starts (`token get --show-token`), then
  the same delta pages (`Prefer: IdType="ImmutableId", odata.maxpagesize=100`), `$value` for each message
  from four threads, and pop3_peer.py's parse-and-write (the email package, temp + fsync + rename).

All three must write one record per message (checked). Prints a Markdown table and one JSON line.
"""
import argparse
import json
import os
import pathlib
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
USER = "adele@contoso.onmicrosoft.com"

PEER = r'''
import concurrent.futures, json, os, ssl, sys, time, urllib.request
sys.path.insert(0, sys.argv[5])
from pop3_peer import process, fsync_dir
base, ca, token_file, out = sys.argv[1:5]
token = open(token_file).read().strip()
context = ssl.create_default_context(cafile=ca)
user = "adele@contoso.onmicrosoft.com"
def get(url, prefer=None):
    headers = {"Authorization": "Bearer " + token}
    if prefer:
        headers["Prefer"] = prefer
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=context) as r:
        return r.read()
start = time.perf_counter()
url = f"{base}v1.0/users/{user}/mailFolders/inbox/messages/delta?changeType=created&$select=id,subject"
ids, requests = [], 0
while url:
    page = json.loads(get(url, 'IdType="ImmutableId", odata.maxpagesize=100'))
    requests += 1
    ids.extend(m["id"] for m in page["value"])
    url = page.get("@odata.nextLink")
os.makedirs(out, exist_ok=True)
def fetch(item):
    n, message_id = item
    raw = get(f"{base}v1.0/users/{user}/messages/{urllib.parse.quote(message_id, safe='')}/$value")
    return n, message_id, raw
import urllib.parse
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    for n, message_id, raw in pool.map(fetch, enumerate(ids)):
        process(raw, f"m{n:06d}", n, out)
fsync_dir(out)
print(json.dumps({"messages": len(ids), "requests": requests + len(ids), "seconds": time.perf_counter() - start}))
'''


def run(argv, env=None, cwd=None):
    """Runs argv; returns (seconds, peak RSS in KiB of that child, stdout text, stderr text)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[:4]} failed: {err}")
    return seconds, usage.ru_maxrss, out.decode(), err


def records(out):
    return sum(1 for p in pathlib.Path(out).iterdir() if p.suffix == ".json" and p.is_file())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big-every", type=int, default=50)
    ap.add_argument("--big-size", type=int, default=2 << 20)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "m365mail"))
    a = ap.parse_args()
    if not pathlib.Path(a.binary).exists():
        sys.exit(f"{a.binary} missing: cargo build --release -p m365mail-cli")

    sys.path.insert(0, str(ROOT / "scripts" / "realservers"))
    import seed as generator  # the same mixed messages as the IMAP and POP3 benchmarks

    work = pathlib.Path(tempfile.mkdtemp(prefix="m365mail-bench-graph-"))
    inbox = work / "mail" / USER
    inbox.mkdir(parents=True)
    total_bytes = 0
    for i in range(a.messages):
        raw, _, _ = generator.build(1, i, USER, big_every=a.big_every, big_size=a.big_size)
        (inbox / f"{i:06d}.eml").write_bytes(raw)
        total_bytes += len(raw)
    env = dict(os.environ, M365MAIL_LOG="error")
    env.pop("M365MAIL_PROFILE", None)
    served = subprocess.Popen([a.binary, "--json", "sandbox", "serve", "--free-ports", "--config-out", "cfg.toml",
                               "--ca-out", "ca.pem", "--mail-dir", str(work / "mail")], cwd=work, env=env,
                              stdout=subprocess.PIPE)
    rows = {"graph": [], "imap": [], "python": []}
    try:
        line = json.loads(served.stdout.readline())
        base = line["endpoints"]["identity"]
        tls = ssl.create_default_context(cafile=str(work / "ca.pem"))

        def graph_requests():
            with urllib.request.urlopen(base + "_sandbox/admin/stats", context=tls) as answer:
                return json.load(answer)["by_endpoint"].get("graph", 0)

        token = subprocess.run([a.binary, "--config", "cfg.toml", "-p", "sandbox-daemon", "token", "get",
                                "--target", "graph", "--show-token"], cwd=work, env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        (work / "token").write_text(token)
        (work / "peer.py").write_text(PEER)
        cfg = str(work / "cfg.toml")
        for round_ in range(a.rounds):
            out = work / f"graph-{round_}"
            before = graph_requests()
            seconds, rss, _, _ = run([a.binary, "--config", cfg, "-p", "sandbox-daemon", "read", "--protocol",
                                      "graph", "--mailbox", USER, "--out-dir", str(out), "--state",
                                      str(work / f"graph-{round_}.sqlite")], env=env)
            requests = graph_requests() - before
            assert records(out) == a.messages, (records(out), a.messages)
            rows["graph"].append((seconds, rss, requests / a.messages))
            shutil.rmtree(out)

            out = work / f"imap-{round_}"
            seconds, rss, _, _ = run([a.binary, "--config", cfg, "-p", "sandbox-user", "read", "--out-dir",
                                      str(out), "--state", str(work / f"imap-{round_}.sqlite")], env=env)
            assert records(out) == a.messages, (records(out), a.messages)
            rows["imap"].append((seconds, rss, None))
            shutil.rmtree(out)

            out = work / f"python-{round_}"
            before = graph_requests()
            seconds, rss, printed, _ = run([sys.executable, str(work / "peer.py"), base, str(work / "ca.pem"),
                                            str(work / "token"), str(out), str(ROOT / "scripts" / "bench")],
                                           env=env)
            requests = graph_requests() - before
            assert records(out) == a.messages, (records(out), a.messages)
            rows["python"].append((seconds, rss, requests / a.messages))
            shutil.rmtree(out)
    finally:
        served.send_signal(signal.SIGINT)
        served.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    def median(name, index):
        return statistics.median(r[index] for r in rows[name])

    graph_s = median("graph", 0)
    print(f"{a.messages} messages, {total_bytes / 1e6:.1f} MB, {a.rounds} rounds (medians)\n")
    print("| reader | seconds | messages/s | peak RSS MiB | Graph requests/message | time vs m365mail Graph |")
    print("|---|---|---|---|---|---|")
    for label, name in [("m365mail read --protocol graph", "graph"), ("m365mail read (IMAP)", "imap"),
                        ("Python urllib + email, 4 threads (Graph)", "python")]:
        seconds = median(name, 0)
        per = rows[name][0][2]
        print(f"| {label} | {seconds:.2f} | {a.messages / seconds:,.0f} | {median(name, 1) / 1024:.1f} | "
              f"{'-' if per is None else f'{per:.2f}'} | {seconds / graph_s:.2f} |")
    print(json.dumps({
        "messages": a.messages, "bytes": total_bytes, "rounds": a.rounds,
        "graph_seconds": graph_s, "graph_messages_per_s": a.messages / graph_s,
        "graph_requests_per_message": rows["graph"][0][2],
        "imap_seconds": median("imap", 0), "python_seconds": median("python", 0),
        "python_over_graph": median("python", 0) / graph_s, "imap_over_graph": median("imap", 0) / graph_s,
        "graph_rss_kb": median("graph", 1), "python_rss_kb": median("python", 1),
    }))


if __name__ == "__main__":
    main()
