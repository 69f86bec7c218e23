#!/usr/bin/env bash
# start-servers.sh DIR  --  real Dovecot 2.3 (IMAP/POP3/LMTP/submission) + Postfix
# + a local token issuer on 127.0.0.1 high ports, accepting OAuth2 bearer JWTs
# (SASL XOAUTH2 / OAUTHBEARER) shaped like Microsoft 365's.  Debian 12, needs
# root (apt, Postfix, Dovecot privsep).  With OAUTH_MODE=sandbox the issuer is
# m365mail's own sandbox tenant (`m365mail sandbox serve --http`) instead, and
# Dovecot accepts the tokens it issues, by RFC 7662 introspection.
# Part of m365mail's "real servers" test recipe (MIT OR Apache-2.0, like the
# project); normally called as `scripts/realservers.sh start [DIR]`.
#
# Idempotent: installs missing packages (apt-get update first; never leaves
# their systemd units enabled), generates TLS CA + server cert, JWT keys and
# configs under DIR -- keys/certs are kept if present, so earlier tokens stay
# valid --.  If this DIR's servers already run with the same configuration it
# leaves them alone; otherwise it stops them (by recorded PID only) and starts
# fresh ones, waits until every port accepts connections, records the PIDs in
# DIR/pids/, writes DIR/servers.env and prints it on stdout (progress goes to
# stderr).  Mail data (DIR/mail) survives restarts; CLEAN=1 wipes it.
#
# Environment knobs:
#   PORT_OFFSET=0                 added to every port (parallel instances need
#                                 their own DIR and offset)
#   NO_POSTFIX=1                  skip Postfix (Dovecot submission then has no relay)
#   OAUTH_MODE=local|introspect|sandbox
#                                 local: Dovecot validates the JWT itself (default)
#                                 introspect: Dovecot POSTs it to token-server.py
#                                 sandbox: no token-server.py; this script starts
#                                 `$SANDBOX_BIN sandbox serve --http` on port
#                                 10081+offset (its mail listeners on free ports;
#                                 CA and --config-out profiles in DIR/sandbox/,
#                                 its PID in DIR/pids/sandbox.pid) and Dovecot
#                                 POSTs each token to its /_sandbox/introspect:
#                                 delegated tokens of its demo tenant's users
#                                 (adele@contoso.onmicrosoft.com ...) sign in to
#                                 their own mailbox here.  servers.env then has
#                                 REALSERVERS_SANDBOX_URL, _PORT, _CONFIG (the
#                                 profiles) instead of the token-server lines
#   SANDBOX_BIN=<repo>/target/debug/m365mail   sandbox mode: the m365mail binary
#                                 (cargo build -p m365mail-cli)
#   SANDBOX_TOKEN_LIFETIME=       sandbox mode: --access-token-lifetime SECS for
#                                 every token (default: Entra's 60-90 minutes)
#   JWT_ALG=RS256|ES256|HS256     alg of the tokens token-server/mint-token issue
#                                 (Dovecot accepts all three at once)
#   USERNAME_CLAIM=upn            claim compared with the SASL user (upn,
#                                 preferred_username, email, unique_name ...)
#   IMAP_SCOPE=IMAP.AccessAsUser.All  POP_SCOPE=POP.AccessAsUser.All  SMTP_SCOPE=SMTP.Send
#                                 local and sandbox modes: scope each protocol
#                                 demands ("" = none)
#                                 (introspect mode: same values hard-coded in the endpoint)
#   TOKEN_LIFETIME=3600           expires_in / exp of issued access tokens (seconds)
#   USER_DOMAINS=example.test     token-server: domains whose users may sign in
#                                 (space separated; "*" = any)
#   AUTH_DEBUG=no|yes             Dovecot auth_debug (verbose auth log)
#   AUTH_PENALTY=no|yes           keep Dovecot's per-IP failure penalty (default no)
#   AUTH_FAILURE_DELAY=0          seconds before a failure answer (Dovecot default 2)
#   MAX_USERIP_CONN=1000          Dovecot mail_max_userip_connections (its default: 10)
#   PROCESS_LIMIT=500             Dovecot default_process_limit (its default: 100)
#   PERF_MODE=1                   Dovecot high-performance login mode (for load tests)
#   CLEAN=1                       wipe DIR/mail (and Postfix's queue) before starting
#   FORCE_RESTART=1               restart even if the same configuration already runs
set -euo pipefail
umask 022

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"
D="${1:?usage: start-servers.sh DIR}"
mkdir -p "$D"; D="$(cd "$D" && pwd)"

OAUTH_MODE="${OAUTH_MODE:-local}"
JWT_ALG="${JWT_ALG:-RS256}"
USERNAME_CLAIM="${USERNAME_CLAIM:-upn}"
IMAP_SCOPE="${IMAP_SCOPE-IMAP.AccessAsUser.All}"
POP_SCOPE="${POP_SCOPE-POP.AccessAsUser.All}"
SMTP_SCOPE="${SMTP_SCOPE-SMTP.Send}"
TOKEN_LIFETIME="${TOKEN_LIFETIME:-3600}"
USER_DOMAINS="${USER_DOMAINS:-example.test}"
AUTH_DEBUG="${AUTH_DEBUG:-no}"
AUTH_PENALTY="${AUTH_PENALTY:-no}"              # yes = keep Dovecot's anti-bruteforce delays
AUTH_FAILURE_DELAY="${AUTH_FAILURE_DELAY:-0}"   # Dovecot default is 2 (seconds)
MAX_USERIP_CONN="${MAX_USERIP_CONN:-1000}"
PROCESS_LIMIT="${PROCESS_LIMIT:-500}"
NO_POSTFIX="${NO_POSTFIX:-}"
O="${PORT_OFFSET:-0}"
case "$O" in ''|*[!0-9]*) echo "PORT_OFFSET must be a non-negative integer" >&2; exit 2;; esac
IMAP_PORT=$((10143+O)); IMAPS_PORT=$((10993+O))
POP3_PORT=$((10110+O)); POP3S_PORT=$((10995+O))
SUBMISSION_PORT=$((10587+O))   # Postfix, STARTTLS required before AUTH
SMTPS_PORT=$((10465+O))        # Postfix, implicit TLS
SMTP_IN_PORT=$((10025+O))      # Postfix, no auth (MX-style injection, relay for Dovecot submission)
DSUB_PORT=$((10588+O))         # Dovecot submission service (STARTTLS), relays to SMTP_IN_PORT
LMTP_PORT=$((10024+O))         # Dovecot LMTP (delivery into maildirs; seed.py)
AUTH_PORT=$((10026+O))         # Dovecot auth socket over TCP, used by Postfix SASL
TOKEN_PORT=$((10080+O))        # token-server.py: /<tenant>/oauth2/v2.0/token and /introspect
SANDBOX_PORT=$((10081+O))      # OAUTH_MODE=sandbox: m365mail sandbox serve --http (identity listener)
SANDBOX_URL="http://127.0.0.1:$SANDBOX_PORT"
SANDBOX_BIN="${SANDBOX_BIN:-$(cd "$HERE/../.." && pwd)/target/debug/m365mail}"
SANDBOX_TOKEN_LIFETIME="${SANDBOX_TOKEN_LIFETIME:-}"
TENANT_ID="11111111-2222-3333-4444-555555555555"
ISSUER="https://sts.windows.net/${TENANT_ID}/"
AUDIENCE="https://outlook.office.com"
CLIENT_ID="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"   # appid when a request names none
KID="test-key-1"
MAILHOST="mail.example.test"
PYTHON="$(command -v python3)"

[ "$(id -u)" = 0 ] || { echo "start-servers.sh: needs root (apt, postfix, dovecot privsep)" >&2; exit 1; }
case "$OAUTH_MODE" in local|introspect|sandbox) ;; *) echo "OAUTH_MODE must be local, introspect or sandbox" >&2; exit 2;; esac
if [ "$OAUTH_MODE" = sandbox ]; then
  [ -x "$SANDBOX_BIN" ] || { echo "start-servers.sh: OAUTH_MODE=sandbox runs the m365mail binary, and $SANDBOX_BIN is missing: build it with \`cargo build -p m365mail-cli\` (or point SANDBOX_BIN at one)" >&2; exit 1; }
  case "$SANDBOX_TOKEN_LIFETIME" in *[!0-9]*) echo "SANDBOX_TOKEN_LIFETIME must be a number of seconds" >&2; exit 2;; esac
fi

T0=$EPOCHREALTIME
log() { printf '[realservers %ss] %s\n' "$(awk "BEGIN{printf \"%.2f\", $EPOCHREALTIME-$T0}")" "$*" >&2; }

# ---------------------------------------------------------------- 1. packages
PKGS="dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-submissiond openssl"
[ -n "$NO_POSTFIX" ] || PKGS="$PKGS postfix"
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"; done
if [ -n "$missing" ]; then
  log "installing:$missing (log: $D/apt-install.log)"
  # keep the packages' own services from starting (Docker-style images already
  # have such a policy-rc.d; only add/remove ours if there is none)
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update && apt-get install -y --no-install-recommends $missing; } >"$D/apt-install.log" 2>&1 \
    || { echo "apt-get failed, see $D/apt-install.log:" >&2; tail -5 "$D/apt-install.log" >&2
         [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
  # the packages enable their units; we never want the system-wide instances
  for u in dovecot.service dovecot.socket postfix.service; do
    systemctl disable "$u" >/dev/null 2>&1 || true
    [ -d /run/systemd/system ] && systemctl stop "$u" >/dev/null 2>&1 || true
  done
fi
log "packages ok: dovecot $(dovecot --version | cut -d' ' -f1), postfix $( [ -n "$NO_POSTFIX" ] && echo skipped || postconf -dh mail_version)"

# mail files belong to an unprivileged user (Dovecot refuses uid 0 for mail)
id vmail >/dev/null 2>&1 || useradd --system --user-group --no-create-home \
  --home-dir /nonexistent --shell /usr/sbin/nologin vmail
VMAIL_UID=$(id -u vmail)

# ------------------------------------------------------------ 2. files/keys
mkdir -p "$D"/{tls,jwt,keys,dovecot,postfix/conf,log,pids,mail,run,state}
chmod 755 "$D"
touch "$D/deny-users"

# TLS: a CA and a server certificate it signs.  (One self-signed CA:TRUE
# certificate would do for OpenSSL clients, but rustls/webpki refuses a CA
# certificate as the server's: "CaUsedAsEndEntity".)
if [ ! -s "$D/tls/ca.crt" ] || [ ! -s "$D/tls/server.crt" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
    -keyout "$D/tls/ca.key" -out "$D/tls/ca.crt" -subj "/CN=m365mail realservers test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
    -keyout "$D/tls/server.key" -out "$D/tls/server.csr" >/dev/null 2>&1
  cat > "$D/tls/server.ext" <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,DNS:${MAILHOST},IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  openssl x509 -req -in "$D/tls/server.csr" -CA "$D/tls/ca.crt" -CAkey "$D/tls/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$D/tls/server.ext" \
    -out "$D/tls/server.crt" >/dev/null 2>&1
  chmod 600 "$D/tls/server.key" "$D/tls/ca.key"
fi
# JWT signing keys (issuer side) -> verification keys (Dovecot side, dict fs)
[ -s "$D/jwt/hs256.b64" ] || head -c 32 /dev/urandom | base64 -w0 > "$D/jwt/hs256.b64"
[ -s "$D/jwt/rs256.key" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$D/jwt/rs256.key" 2>/dev/null
[ -s "$D/jwt/es256.key" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$D/jwt/es256.key" 2>/dev/null
openssl pkey -in "$D/jwt/rs256.key" -pubout -out "$D/jwt/rs256.pub" 2>/dev/null
openssl pkey -in "$D/jwt/es256.key" -pubout -out "$D/jwt/es256.pub" 2>/dev/null
# Dovecot 2.3 looks up  <dict>shared/<azp|default>/<ALG>/<kid|default>
# fs:posix:prefix=$D/keys/  ->  file $D/keys/default/<ALG>/<kid>
# HS*: base64 of the raw secret; RS*/ES*/PS*: PEM public key.
for alg in HS256 RS256 ES256; do mkdir -p "$D/keys/default/$alg"; done
printf '%s' "$(cat "$D/jwt/hs256.b64")" > "$D/keys/default/HS256/$KID"
cp "$D/jwt/rs256.pub" "$D/keys/default/RS256/$KID"
cp "$D/jwt/es256.pub" "$D/keys/default/ES256/$KID"
# test-only keys: world-readable so a non-root test process can mint tokens
chmod 755 "$D/jwt"; chmod 644 "$D"/jwt/*
chgrp -R dovecot "$D/keys"; chmod -R g+rX,o-rwx "$D/keys"
# the global dummy passdb's password (never usable: mechanisms = none); kept
# stable so an unchanged configuration is recognised as such
[ -s "$D/dovecot/static-password" ] || head -c 18 /dev/urandom | base64 | tr -d '/+=\n' > "$D/dovecot/static-password"

cat > "$D/issuer.json" <<EOF
{
  "issuer": "$ISSUER",
  "audience": "$AUDIENCE",
  "tenant_id": "$TENANT_ID",
  "client_id": "$CLIENT_ID",
  "kid": "$KID",
  "default_alg": "$JWT_ALG",
  "username_claim": "$USERNAME_CLAIM",
  "token_lifetime": $TOKEN_LIFETIME,
  "user_domains": "$USER_DOMAINS",
  "keys":    {"HS256": "$D/jwt/hs256.b64", "RS256": "$D/jwt/rs256.key", "ES256": "$D/jwt/es256.key"},
  "pubkeys": {"RS256": "$D/jwt/rs256.pub", "ES256": "$D/jwt/es256.pub"}
}
EOF

# ------------------------------------------------------------ 3. Dovecot
rm -f "$D"/dovecot/oauth2*.conf.ext
if [ "$OAUTH_MODE" = sandbox ]; then
# one passdb config per protocol, so each protocol demands its own scope (as
# Exchange does: a POP-only token does not open IMAP)
for proto in imap pop3 smtp; do
  case $proto in imap) sc=$IMAP_SCOPE;; pop3) sc=$POP_SCOPE;; smtp) sc=$SMTP_SCOPE;; esac
  cat > "$D/dovecot/oauth2-$proto.conf.ext" <<EOF
# passdb oauth2 for $proto, validation by m365mail's sandbox (RFC 7662 introspection)
introspection_mode = post
introspection_url = $SANDBOX_URL/_sandbox/introspect
# the sandbox answers {"active": true, "username": "<UPN>", "scope": "<its Exchange
# scopes>", ...} for its own tokens, {"active": false} for anything else
username_attribute = username
# the UPN is compared with the SASL user case-insensitively, as Exchange does
username_format = %Lu
active_attribute = active
active_value = true
# must be one of the answer's space-separated "scope" values ("" = no check)
scope = $sc
timeout_msecs = 5000
debug = $AUTH_DEBUG
EOF
done
elif [ "$OAUTH_MODE" = local ]; then
# one passdb config per protocol, so each protocol can demand its own scope
for proto in imap pop3 smtp; do
  case $proto in imap) sc=$IMAP_SCOPE;; pop3) sc=$POP_SCOPE;; smtp) sc=$SMTP_SCOPE;; esac
  cat > "$D/dovecot/oauth2-$proto.conf.ext" <<EOF
# passdb oauth2 for $proto, local JWT validation (Dovecot 2.3.19, Debian 12)
introspection_mode = local
local_validation_key_dict = fs:posix:prefix=$D/keys/
# token claim compared with the SASL user; both sides go through username_format
username_attribute = $USERNAME_CLAIM
username_format = %Lu
issuers = $ISSUER
# Debian's 2.3.19.1+dfsg1-2.1+deb12u7 (JWT code backported from 2.3.21):
# local validation then requires this value in the token's "aud" (string or array).
# Older builds ignore client_id in local mode (no audience check at all).
client_id = $AUDIENCE
# must appear in the token's claim literally named "scope" (Entra uses "scp";
# our issuer writes both). Empty = no scope check.
scope = $sc
debug = $AUTH_DEBUG
EOF
done
else
cat > "$D/dovecot/oauth2.conf.ext" <<EOF
# passdb oauth2, validation by an RFC 7662-style HTTP endpoint
introspection_mode = post
introspection_url = http://127.0.0.1:$TOKEN_PORT/introspect
client_id = dovecot
client_secret = dovecot
# adds X-Dovecot-Auth-Service: imap|pop3|smtp|submission  (per-protocol scope check)
send_auth_headers = yes
username_attribute = $USERNAME_CLAIM
username_format = %Lu
active_attribute = active
active_value = true
timeout_msecs = 5000
debug = $AUTH_DEBUG
EOF
fi

cat > "$D/dovecot/dovecot.conf" <<EOF
# generated by m365mail scripts/realservers/start-servers.sh -- standalone,
# does not include /etc/dovecot
instance_name = m365mail-realservers-$O
base_dir = $D/run/dovecot
state_dir = $D/state
protocols = imap pop3 lmtp submission
listen = 127.0.0.1
hostname = $MAILHOST
postmaster_address = postmaster@example.test
log_path = $D/log/dovecot.log
auth_verbose = yes
auth_debug = $AUTH_DEBUG
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = $VMAIL_UID

ssl = yes
ssl_cert = <$D/tls/server.crt
ssl_key = <$D/tls/server.key
ssl_min_protocol = TLSv1.2
# LOGIN/PLAIN are not offered at all (Exchange Online has basic auth disabled).
# NB: connections from 127.0.0.1 to 127.0.0.1 count as "secured", so the
# plaintext ports accept AUTH XOAUTH2 without STARTTLS/STLS too.
auth_mechanisms = xoauth2 oauthbearer
disable_plaintext_auth = yes

EOF
if [ "$OAUTH_MODE" != introspect ]; then
# Per-protocol passdbs.  A protocol block's passdb is *chained* with the global
# ones, so the global passdb must never answer SASL: "mechanisms = none" makes
# it apply only to lookups without authentication.  Postfix authenticates
# through Dovecot with service name "smtp", Dovecot's own submission with
# "submission".
cat >> "$D/dovecot/dovecot.conf" <<EOF
passdb {
  driver = static
  args = password=$(cat "$D/dovecot/static-password")
  mechanisms = none
}
EOF
for pair in imap:imap pop3:pop3 smtp:smtp submission:smtp; do
cat >> "$D/dovecot/dovecot.conf" <<EOF
protocol ${pair%%:*} {
  passdb {
    driver = oauth2
    mechanisms = xoauth2 oauthbearer
    args = $D/dovecot/oauth2-${pair#*:}.conf.ext
  }
}
EOF
done
else
cat >> "$D/dovecot/dovecot.conf" <<EOF
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $D/dovecot/oauth2.conf.ext
}
EOF
fi
cat >> "$D/dovecot/dovecot.conf" <<EOF
userdb {
  driver = static
  args = uid=vmail gid=vmail home=$D/mail/%d/%n allow_all_users=yes
}
mail_location = maildir:~/Maildir
# Exchange Online's default folders, created on first login with their RFC 6154 special use, so an IMAP
# reader can file into Archive or Deleted Items here as it does there.
namespace inbox {
  inbox = yes
  mailbox Archive {
    auto = create
    special_use = \\Archive
  }
  mailbox "Deleted Items" {
    auto = create
    special_use = \\Trash
  }
  mailbox "Sent Items" {
    auto = create
    special_use = \\Sent
  }
  mailbox Drafts {
    auto = create
    special_use = \\Drafts
  }
  mailbox "Junk Email" {
    auto = create
    special_use = \\Junk
  }
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $POP3_PORT
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $POP3S_PORT
    ssl = yes
  }
}
service submission-login {
  inet_listener submission {
    address = 127.0.0.1
    port = $DSUB_PORT
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LMTP_PORT
  }
}
service auth {
  # Postfix: smtpd_sasl_type = dovecot, smtpd_sasl_path = inet:127.0.0.1:$AUTH_PORT
  inet_listener auth-inet {
    address = 127.0.0.1
    port = $AUTH_PORT
  }
}
# Test-friendliness: no 2 s delay before each failure answer, and no anvil
# "auth penalty" (after a failure Dovecot otherwise delays EVERY following auth
# from 127.0.0.1 by 2, 4, 8, 15 s).  2.3 has no switch for the penalty; auth
# disables it when it cannot connect to this socket, and mode = 0 disables the
# listener (auth logs "net_connect_unix(anvil-auth-penalty) failed" once).
auth_failure_delay = $AUTH_FAILURE_DELAY
EOF
if [ "$AUTH_PENALTY" != yes ]; then cat >> "$D/dovecot/dovecot.conf" <<EOF
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
fi
cat >> "$D/dovecot/dovecot.conf" <<EOF
submission_relay_host = 127.0.0.1
submission_relay_port = $SMTP_IN_PORT
submission_relay_trusted = yes
# UIDL = <uid><uidvalidity> as 16 hex digits (stable for a message's life)
pop3_uidl_format = %08Xu%08Xv
# Dovecot defaults: 10 sessions per user+IP ("NO [LIMIT] Maximum number of
# connections from user+IP exceeded"), 100 processes per service
mail_max_userip_connections = $MAX_USERIP_CONN
default_process_limit = $PROCESS_LIMIT
service auth {
  client_limit = $((PROCESS_LIMIT * 8 + 2100))
}
service anvil {
  client_limit = $((PROCESS_LIMIT * 8 + 2100))
}
EOF
if [ -n "${PERF_MODE:-}" ]; then cat >> "$D/dovecot/dovecot.conf" <<EOF
# PERF_MODE: Dovecot "high-performance" login mode + reused mail processes
# (login ~0.7 ms instead of ~7 ms; all users share uid vmail, so reuse is safe)
service imap-login {
  service_count = 0
  process_min_avail = 2
}
service pop3-login {
  service_count = 0
  process_min_avail = 2
}
service submission-login {
  service_count = 0
  process_min_avail = 1
}
service imap {
  service_count = 100
  process_min_avail = 2
}
service pop3 {
  service_count = 100
  process_min_avail = 2
}
EOF
fi

# ------------------------------------------------------------ 4. Postfix
rm -f "$D/postfix/conf/main.cf" "$D/postfix/conf/master.cf"
if [ -z "$NO_POSTFIX" ]; then
cat > "$D/postfix/conf/main.cf" <<EOF
# generated by m365mail scripts/realservers/start-servers.sh -- sink MTA:
# everything goes to Dovecot LMTP
compatibility_level = 3.6
queue_directory = $D/postfix/spool
data_directory = $D/postfix/data
maillog_file = $D/log/postfix.log
# without this: "fatal: maillog_file value ... does not match any prefix in maillog_file_prefixes"
maillog_file_prefixes = $D/log
mail_owner = postfix
setgid_group = postdrop
myhostname = $MAILHOST
mydomain = example.test
myorigin = \$mydomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_transport = error:local delivery is disabled
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
# any recipient domain is delivered into the Dovecot maildirs, nothing leaves the box
default_transport = lmtp:inet:127.0.0.1:$LMTP_PORT
relay_transport = lmtp:inet:127.0.0.1:$LMTP_PORT
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject
smtpd_tls_cert_file = $D/tls/server.crt
smtpd_tls_key_file = $D/tls/server.key
smtpd_tls_security_level = may
smtpd_tls_loglevel = 0
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:$AUTH_PORT
smtpd_sasl_auth_enable = no
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
smtpd_banner = \$myhostname ESMTP test sink
message_size_limit = 36700160
# default 2048 truncates "AUTH XOAUTH2 <initial response>" for real-sized
# (1.5-3 KB) tokens -> "535 5.7.8 Error: authentication failed: Invalid base64 data in initial response"
line_length_limit = 16384
biff = no
readme_directory = no
EOF
cat > "$D/postfix/conf/master.cf" <<EOF
# generated by m365mail scripts/realservers/start-servers.sh -- nothing chrooted
127.0.0.1:$SMTP_IN_PORT inet n - n - - smtpd
127.0.0.1:$SUBMISSION_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:$SMTPS_PORT inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
fi

# ------------------------------------------------- 5. already running as is?
# the token issuer: token-server.py, or in sandbox mode the sandbox
ISSUER_NAME=tokenserver ISSUER_PORT=$TOKEN_PORT
[ "$OAUTH_MODE" != sandbox ] || ISSUER_NAME=sandbox ISSUER_PORT=$SANDBOX_PORT
ALL_PORTS="$IMAP_PORT $IMAPS_PORT $POP3_PORT $POP3S_PORT $DSUB_PORT $LMTP_PORT $AUTH_PORT $ISSUER_PORT"
[ -n "$NO_POSTFIX" ] || ALL_PORTS="$ALL_PORTS $SUBMISSION_PORT $SMTPS_PORT $SMTP_IN_PORT"
[ -z "$NO_POSTFIX" ] || SUBMISSION_PORT="" SMTPS_PORT="" SMTP_IN_PORT=""
write_env() {
  cat > "$D/servers.env.tmp" <<EOF
REALSERVERS_DIR=$D
REALSERVERS_HOST=127.0.0.1
REALSERVERS_PORT_OFFSET=$O
REALSERVERS_OAUTH_MODE=$OAUTH_MODE
REALSERVERS_IMAP_PORT=$IMAP_PORT
REALSERVERS_IMAPS_PORT=$IMAPS_PORT
REALSERVERS_POP3_PORT=$POP3_PORT
REALSERVERS_POP3S_PORT=$POP3S_PORT
REALSERVERS_SMTP_SUBMISSION_PORT=$SUBMISSION_PORT
REALSERVERS_SMTPS_PORT=$SMTPS_PORT
REALSERVERS_SMTP_INBOUND_PORT=$SMTP_IN_PORT
REALSERVERS_DOVECOT_SUBMISSION_PORT=$DSUB_PORT
REALSERVERS_LMTP_PORT=$LMTP_PORT
REALSERVERS_DOVECOT_AUTH_PORT=$AUTH_PORT
REALSERVERS_CA_FILE=$D/tls/ca.crt
REALSERVERS_TLS_SERVER_NAME=localhost
REALSERVERS_MAILDIR_ROOT=$D/mail
EOF
  if [ "$OAUTH_MODE" = sandbox ]; then cat >> "$D/servers.env.tmp" <<EOF
REALSERVERS_SANDBOX_PORT=$SANDBOX_PORT
REALSERVERS_SANDBOX_URL=$SANDBOX_URL
REALSERVERS_SANDBOX_CONFIG=$D/sandbox/m365mail.toml
REALSERVERS_SANDBOX_TOKEN_LIFETIME=$SANDBOX_TOKEN_LIFETIME
EOF
  else cat >> "$D/servers.env.tmp" <<EOF
REALSERVERS_TOKEN_PORT=$TOKEN_PORT
REALSERVERS_AUTHORITY=http://127.0.0.1:$TOKEN_PORT
REALSERVERS_TENANT_ID=$TENANT_ID
REALSERVERS_CLIENT_ID=$CLIENT_ID
REALSERVERS_TOKEN_URL=http://127.0.0.1:$TOKEN_PORT/$TENANT_ID/oauth2/v2.0/token
REALSERVERS_USER_DOMAIN=${USER_DOMAINS%% *}
REALSERVERS_DENY_USERS_FILE=$D/deny-users
REALSERVERS_ISSUER=$ISSUER
REALSERVERS_AUDIENCE=$AUDIENCE
EOF
  fi
  mv "$D/servers.env.tmp" "$D/servers.env"
}
STAMP=$(
  { printf '%s\n' "$O" "$NO_POSTFIX" "$OAUTH_MODE" "$JWT_ALG" "$TOKEN_LIFETIME" "$USER_DOMAINS" "$PYTHON"
    # sandbox mode: a rebuilt binary (or another lifetime) restarts the sandbox
    [ "$OAUTH_MODE" != sandbox ] \
      || printf '%s\n' "$SANDBOX_BIN" "$(stat -Lc '%s %Y' "$SANDBOX_BIN")" "$SANDBOX_TOKEN_LIFETIME"
    cat "$D/dovecot/dovecot.conf" "$D"/dovecot/oauth2*.conf.ext "$D/issuer.json" \
      "$HERE/token-server.py" "$HERE/mint-token.py" "$HERE/lib.sh"
    [ -n "$NO_POSTFIX" ] || cat "$D/postfix/conf/main.cf" "$D/postfix/conf/master.cf"
  } | sha256sum | cut -d' ' -f1)
running() {  # every recorded server is ours, alive, and every port answers
  local n pid p
  for n in dovecot $ISSUER_NAME $([ -n "$NO_POSTFIX" ] || echo postfix); do
    pid=$(tr -dc '0-9' 2>/dev/null < "$D/pids/$n.pid") || return 1
    [ -n "$pid" ] && is_ours "$n" "$pid" "$D" || return 1
  done
  for p in $ALL_PORTS; do port_open "$p" || return 1; done
}
if [ -z "${FORCE_RESTART:-}" ] && [ -z "${CLEAN:-}" ] \
   && [ "$(cat "$D/run.stamp" 2>/dev/null)" = "$STAMP" ] && running; then
  log "already running with this configuration (FORCE_RESTART=1 restarts)"
  write_env
  cat "$D/servers.env"
  exit 0
fi

# ------------------------------------------- 6. stop what we started before
"$HERE/stop-servers.sh" "$D" >/dev/null 2>&1 || true
if [ -n "${CLEAN:-}" ]; then
  rm -rf "${D:?}/mail" "${D:?}/postfix/spool" "${D:?}/postfix/data"
fi
mkdir -p "$D/mail"; chown vmail:vmail "$D/mail"; chmod 750 "$D/mail"

# ------------------------------------------------------------ 7. start
log "config written to $D (OAUTH_MODE=$OAUTH_MODE, claim=$USERNAME_CLAIM, offset=$O)"
# refuse to start on ports someone else holds (another DIR? use PORT_OFFSET)
for p in $ALL_PORTS; do
  if port_open "$p"; then
    echo "start-servers.sh: 127.0.0.1:$p is already in use (another instance? set PORT_OFFSET)" >&2; exit 1
  fi
done
if [ "$OAUTH_MODE" = sandbox ]; then
  # m365mail's sandbox tenant: its identity listener over plain HTTP on
  # SANDBOX_PORT (token endpoint for clients, /_sandbox/introspect for Dovecot),
  # its own IMAP/POP3/SMTP listeners on free ports (never the ports above).  Up
  # before Dovecot, which asks it about every token.
  mkdir -p "$D/sandbox"; rm -f "$D/sandbox/ready.json"
  lifetime_args=()
  [ -z "$SANDBOX_TOKEN_LIFETIME" ] || lifetime_args=(--access-token-lifetime "$SANDBOX_TOKEN_LIFETIME")
  setsid "$SANDBOX_BIN" --json sandbox serve --http --bind "127.0.0.1:$SANDBOX_PORT" \
    --pops-port 0 --imaps-port 0 --imap-port 0 --smtp-port 0 --smtps-port 0 \
    --ca-out "$D/sandbox/ca.pem" --config-out "$D/sandbox/m365mail.toml" "${lifetime_args[@]}" \
    >"$D/sandbox/ready.json" 2>>"$D/log/sandbox.stderr" </dev/null &
  echo $! > "$D/pids/sandbox.pid"
  # ready: its --json line is out (every listener bound, every file written) and
  # its introspection endpoint answers
  ok=""
  for _ in $(seq 300); do
    if [ -s "$D/sandbox/ready.json" ] && "$PYTHON" - "$SANDBOX_URL/_sandbox/introspect" <<'PY' 2>/dev/null
import json, sys, urllib.request
answer = urllib.request.urlopen(sys.argv[1], data=b"token=not-a-token", timeout=2)
sys.exit(json.load(answer) != {"active": False})
PY
    then ok=1; break; fi
    kill -0 "$(cat "$D/pids/sandbox.pid")" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "the sandbox ($SANDBOX_BIN) did not come up on $SANDBOX_URL; $D/log/sandbox.stderr:" >&2
                    tail -5 "$D/log/sandbox.stderr" >&2; exit 1; }
  log "sandbox up on $SANDBOX_URL, its profiles in $D/sandbox/m365mail.toml"
else
  # local token issuer (token endpoint for clients; introspection for Dovecot)
  TOKEN_LIFETIME=$TOKEN_LIFETIME setsid "$PYTHON" "$HERE/token-server.py" "$D" "$TOKEN_PORT" \
    >>"$D/log/token-server.stderr" 2>&1 < /dev/null &
  echo $! > "$D/pids/tokenserver.pid"
fi

doveconf -c "$D/dovecot/dovecot.conf" -n >/dev/null 2>"$D/log/doveconf.err" \
  || { cat "$D/log/doveconf.err" >&2; exit 1; }
# (daemons must not inherit our stdout: a caller piping us would never see EOF)
rm -f "$D/run/dovecot/master.pid"
dovecot -c "$D/dovecot/dovecot.conf" </dev/null >>"$D/log/dovecot.stderr" 2>&1 \
  || { tail -5 "$D/log/dovecot.stderr" "$D/log/dovecot.log" >&2; exit 1; }
for _ in $(seq 50); do [ -s "$D/run/dovecot/master.pid" ] && break; sleep 0.1; done
cp "$D/run/dovecot/master.pid" "$D/pids/dovecot.pid" \
  || { echo "dovecot did not start, see $D/log/dovecot.log" >&2; tail -5 "$D/log/dovecot.log" >&2; exit 1; }

if [ -z "$NO_POSTFIX" ]; then
  mkdir -p "$D/postfix/spool" "$D/postfix/data"
  chown postfix "$D/postfix/data"
  # Postfix commands print errors only to a tty or the maillog ("postfix check"
  # just exits 1 without a word; `script -qc "postfix -c DIR check" /dev/null`
  # shows why).  "postfix start" creates/fixes the queue directories itself.
  rm -f "$D/postfix/spool/pid/master.pid"
  postfix -c "$D/postfix/conf" start </dev/null >"$D/log/postfix-start.log" 2>&1 \
    || { cat "$D/log/postfix-start.log" >&2; tail -5 "$D/log/postfix.log" >&2 2>/dev/null; exit 1; }
  for _ in $(seq 50); do [ -s "$D/postfix/spool/pid/master.pid" ] && break; sleep 0.1; done
  tr -d ' \n' < "$D/postfix/spool/pid/master.pid" > "$D/pids/postfix.pid"
fi

# wait until every listener answers (10 s each at most)
for p in $ALL_PORTS; do
  ok=""
  for _ in $(seq 200); do
    if port_open "$p"; then ok=1; break; fi
    sleep 0.05
  done
  [ -n "$ok" ] || { echo "port $p did not come up; see $D/log/" >&2; exit 1; }
done
log "all listeners up: $ALL_PORTS"

write_env
echo "$STAMP" > "$D/run.stamp"
log "pids: $(cd "$D/pids" && for f in *.pid; do printf '%s=%s ' "${f%.pid}" "$(cat "$f")"; done)"
cat "$D/servers.env"
