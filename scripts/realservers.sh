#!/usr/bin/env bash
# Real mail servers on loopback for m365mail's tests against peers nobody here
# wrote: Debian's Dovecot 2.3 (IMAP, POP3, LMTP, submission) and Postfix, plus a
# local Entra-ID-shaped token issuer, on 127.0.0.1 high ports, accepting SASL
# XOAUTH2/OAUTHBEARER with RS256 JWTs that the issuer signs.  Needs root
# (Debian 12: apt, Postfix, Dovecot privilege separation).
#
# Usage: scripts/realservers.sh start|stop|env [DIR]
#   DIR defaults to $REALSERVERS_DIR, else ${TMPDIR:-/tmp}/m365mail-realservers
#   start   install missing packages (apt-get update + install), write the
#           configs, start Dovecot, Postfix and the token server (or leave them
#           running if this DIR's servers already run with the same
#           configuration), wait until every port answers, write DIR/servers.env
#           and print it (progress on stderr)
#   stop    stop the servers this DIR's start recorded (DIR/pids/*.pid), only them
#   env     print `export REALSERVERS_...=...` lines for a running DIR:
#           eval "$(scripts/realservers.sh env)"   (exit 1 when not running)
#
# Knobs (environment): PORT_OFFSET=N, NO_POSTFIX=1, CLEAN=1, FORCE_RESTART=1,
# TOKEN_LIFETIME, USER_DOMAINS, OAUTH_MODE, ... -- see realservers/start-servers.sh.
# OAUTH_MODE=sandbox: m365mail's sandbox tenant (target/debug/m365mail, port
# 10081) issues the tokens instead and Dovecot introspects them there.
# Ports (offset 0): IMAP 10143 (STARTTLS), IMAPS 10993, POP3 10110 (STLS),
# POP3S 10995, LMTP 10024, token server 10080, Postfix submission 10587
# (STARTTLS), SMTPS 10465, SMTP inbound 10025, Dovecot submission 10588,
# Dovecot auth 10026.
# Mail: scripts/realservers/seed.py --dir DIR --user alice@example.test --count N
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/realservers"
usage() { sed -n '8,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
cmd=$1
D="${2:-${REALSERVERS_DIR:-${TMPDIR:-/tmp}/m365mail-realservers}}"
case "$cmd" in
  start) exec "$HERE/start-servers.sh" "$D" ;;
  stop)  exec "$HERE/stop-servers.sh" "$D" ;;
  env)
    . "$HERE/lib.sh"
    [ -s "$D/servers.env" ] || { echo "realservers: no $D/servers.env (run: $0 start $D)" >&2; exit 1; }
    pid=$(tr -dc '0-9' 2>/dev/null < "$D/pids/dovecot.pid" || true)
    D="$(cd "$D" && pwd)"
    [ -n "$pid" ] && is_ours dovecot "$pid" "$D" \
      || { echo "realservers: the servers of $D are not running (run: $0 start $D)" >&2; exit 1; }
    while IFS='=' read -r k v; do
      [[ "$k" =~ ^REALSERVERS_[A-Z0-9_]+$ ]] || continue
      printf 'export %s=%q\n' "$k" "$v"
    done < "$D/servers.env"
    ;;
  *) usage ;;
esac
