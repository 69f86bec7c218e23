#!/usr/bin/env python3
"""Benchmark: `m365mail read --protocol imap --out-dir` against the Python imaplib + email peer
(scripts/bench/imap_peer.py), on the same Dovecot mailbox, in one run, alternating, as a ratio.

  scripts/bench/imap_read.py [--messages 1000] [--rounds 3] [--rss-scale 10000] [--scale-big-every 50]
                             [--binary target/release/m365mail]

It starts the real servers (scripts/realservers.sh start, its default directory), seeds a fresh mailbox
with --messages mixed messages (scripts/realservers/seed.py: plain, HTML, alternative, attachments, inline
images, RFC 2047 headers, nested forwards; one message in 50 of 2 MiB), then per round runs each reader once
on the whole INBOX (nothing changed: --then none, the folder EXAMINEd; a fresh --state and output directory
each time) and measures its wall time and peak RSS (wait4's ru_maxrss of the child). Prints a Markdown table
and one JSON line. Both readers do the same work: IMAPS + AUTHENTICATE XOAUTH2, EXAMINE INBOX, UID SEARCH
ALL, UID FETCH (RFC822.SIZE INTERNALDATE) by 200, UID FETCH (BODY.PEEK[]) in batches of up to 25 messages /
4 MiB, parse MIME, write a JSON record and every attachment with temp + fsync + rename. The token request
is outside the peer's timing and inside m365mail's (one ROPC request to the loopback token server, about
30 ms). Both must write one record per message and the same number of attachment files (checked).

With --rss-scale N (e.g. 10000) it also seeds a second fresh mailbox of N messages (the same generator and
seed: its first --messages messages are the first mailbox's; one in --scale-big-every of 2 MiB, 0 = none)
and runs each reader once on it: peak RSS of m365mail at --messages vs N messages (the 1st figure is the
median of the rounds above). Seeding 10,000 messages over LMTP takes about 1.5 minutes with the 2 MiB ones,
about 1 minute without. Both seeded mailboxes are emptied at the end (seed.py --clear).
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run(argv, env=None, stdout=subprocess.DEVNULL):
    """Runs argv; returns (seconds, peak RSS in KiB of that child, stdout bytes or None, stderr text)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.PIPE)
    out = proc.stdout.read() if stdout == subprocess.PIPE else None
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[0]} failed: {err}")
    return seconds, usage.ru_maxrss, out, err


def counts(out):
    """(records, attachment files) in an output directory: DIR/*.json and DIR/<key>/*."""
    records = sum(1 for p in out.iterdir() if p.suffix == ".json" and p.is_file())
    files = sum(1 for d in out.iterdir() if d.is_dir() for f in d.iterdir() if f.is_file())
    return records, files


def seed(env, user, count, big_every):
    seeded = subprocess.run([sys.executable, ROOT / "scripts" / "realservers" / "seed.py", "--user", user,
                             "--count", str(count), "--big-every", str(big_every),
                             "--big-size", str(2 << 20)],
                            env=env, check=True, capture_output=True, text=True)
    result = json.loads(seeded.stdout.strip().splitlines()[-1])
    if result["delivered"] != count:
        sys.exit(f"seed.py delivered {result['delivered']} of {count}")
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rss-scale", type=int, default=0, metavar="N",
                    help="also read a second mailbox of N messages once (0 = skip)")
    ap.add_argument("--scale-big-every", type=int, default=50,
                    help="the N-message mailbox: one message in K of 2 MiB (0 = none, seeds faster)")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "m365mail"))
    a = ap.parse_args()
    if not pathlib.Path(a.binary).exists():
        sys.exit(f"{a.binary} missing: cargo build --release -p m365mail-cli")
    began = time.perf_counter()

    subprocess.run([ROOT / "scripts" / "realservers.sh", "start"], check=True, stdout=subprocess.DEVNULL)
    env_text = subprocess.run([ROOT / "scripts" / "realservers.sh", "env"], check=True,
                              capture_output=True, text=True).stdout
    env = dict(os.environ)
    for line in env_text.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    user = f"bench-imap-{os.getpid()}@example.test"
    seeded = seed(env, user, a.messages, 50)

    work = pathlib.Path(tempfile.mkdtemp(prefix="m365mail-bench-"))
    secret = work / "password"
    secret.write_text("any-password\n")
    secret.chmod(0o600)

    def config(name, username):
        path = work / f"{name}.toml"
        path.write_text(f"""[profiles.dovecot]
authority = "{env['REALSERVERS_AUTHORITY']}"
tenant = "{env['REALSERVERS_TENANT_ID']}"
client_id = "{env['REALSERVERS_CLIENT_ID']}"
flow = "password"
username = "{username}"
password_file = "{secret}"
ca_file = "{env['REALSERVERS_CA_FILE']}"
imap = "localhost:{env['REALSERVERS_IMAPS_PORT']}"
imap_tls = "implicit"
protocol = "imap"
""")
        return path

    def ours(cfg, tag):
        out = work / f"m365mail-{tag}"
        seconds, rss, _, _ = run(
            [a.binary, "--config", str(cfg), "-p", "dovecot", "read", "--protocol", "imap",
             "--state", str(work / f"state-{tag}.sqlite"), "--out-dir", str(out), "--no-cache",
             "--then", "none"],
            env=dict(env, M365MAIL_LOG="error"))
        records, files = counts(out)
        shutil.rmtree(out)
        return seconds, rss, records, files

    def peer(username, tag):
        out = work / f"python-{tag}"
        seconds, rss, stdout, _ = run(
            [sys.executable, str(ROOT / "scripts" / "bench" / "imap_peer.py"), "--user", username,
             "--out", str(out)], env=env, stdout=subprocess.PIPE)
        said = json.loads(stdout.decode().strip().splitlines()[-1])
        records, files = counts(out)
        if (said["messages"], said["attachments"]) != (records, files):
            sys.exit(f"imap_peer.py said {said}, wrote {records} records, {files} attachment files")
        shutil.rmtree(out)
        return seconds, rss, records, files

    def same_work(n, ours_row, peer_row):
        if ours_row[2] != n or peer_row[2] != n or ours_row[3] != peer_row[3]:
            sys.exit(f"{n} messages: m365mail wrote {ours_row[2]} records + {ours_row[3]} attachment "
                     f"files, the peer {peer_row[2]} + {peer_row[3]}")

    cfg = config("cfg", user)
    rows = {"m365mail": [], "python": []}
    for round_ in range(a.rounds):
        rows["m365mail"].append(ours(cfg, round_))
        rows["python"].append(peer(user, round_))
        same_work(a.messages, rows["m365mail"][-1], rows["python"][-1])

    def median(name, index):
        return statistics.median(r[index] for r in rows[name])

    ours_s, peer_s = median("m365mail", 0), median("python", 0)
    ours_rss, peer_rss = median("m365mail", 1), median("python", 1)
    n = a.messages
    load = os.getloadavg()
    print(f"{n} messages, {seeded['bytes'] / 1e6:.1f} MB seeded, {a.rounds} rounds, "
          f"{os.cpu_count()} CPUs, load {load[0]:.1f}")
    print("| reader | wall s (median) | messages/s | peak RSS MiB | records | attachment files |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, key, s, rss in [("m365mail (IMAPS)", "m365mail", ours_s, ours_rss),
                              ("python imaplib + email", "python", peer_s, peer_rss)]:
        print(f"| {name} | {s:.2f} | {n / s:.0f} | {rss / 1024:.1f} | {rows[key][0][2]} | {rows[key][0][3]} |")
    print(f"| ratio m365mail / python | {ours_s / peer_s:.2f} | {peer_s / ours_s:.2f}x | "
          f"{ours_rss / peer_rss:.2f} | | |")
    result = {"messages": n, "bytes": seeded["bytes"], "rounds": rows, "speedup": peer_s / ours_s,
              "rss_ratio": ours_rss / peer_rss, "load": load}

    scale_user = None
    if a.rss_scale:
        scale_user = f"bench-imap-{os.getpid()}-{a.rss_scale}@example.test"
        t0 = time.perf_counter()
        big = seed(env, scale_user, a.rss_scale, a.scale_big_every)
        seed_s = time.perf_counter() - t0
        cfg_scale = config("cfg-scale", scale_user)
        o = ours(cfg_scale, "scale")
        p = peer(scale_user, "scale")
        same_work(a.rss_scale, o, p)
        mix = (f"one in {a.scale_big_every} of 2 MiB" if a.scale_big_every
               else "no 2 MiB messages (--scale-big-every 0)")
        print()
        print(f"peak RSS vs mailbox size: {a.rss_scale} messages, {big['bytes'] / 1e6:.1f} MB, {mix}; "
              f"seeded in {seed_s:.0f} s; one run each")
        print("| reader | messages | wall s | messages/s | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|")
        print(f"| m365mail | {n} | {ours_s:.2f} | {n / ours_s:.0f} | {ours_rss / 1024:.1f} |")
        print(f"| m365mail | {a.rss_scale} | {o[0]:.2f} | {a.rss_scale / o[0]:.0f} | {o[1] / 1024:.1f} |")
        print(f"| python imaplib + email | {n} | {peer_s:.2f} | {n / peer_s:.0f} | {peer_rss / 1024:.1f} |")
        print(f"| python imaplib + email | {a.rss_scale} | {p[0]:.2f} | {a.rss_scale / p[0]:.0f} | "
              f"{p[1] / 1024:.1f} |")
        print(f"| m365mail RSS {a.rss_scale} / {n} | | | | {o[1] / ours_rss:.2f} |")
        result["rss_scale"] = {"messages": a.rss_scale, "bytes": big["bytes"],
                               "big_every": a.scale_big_every, "seed_seconds": round(seed_s, 1),
                               "m365mail": o, "python": p,
                               "m365mail_rss_kb": {str(n): ours_rss, str(a.rss_scale): o[1]},
                               "m365mail_rss_growth": o[1] / ours_rss}

    for u in filter(None, [user, scale_user]):   # empty the seeded mailboxes (no session is open now)
        subprocess.run([sys.executable, ROOT / "scripts" / "realservers" / "seed.py", "--user", u, "--clear"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
    result["script_seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(result))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
