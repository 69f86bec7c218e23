#!/usr/bin/env bash
# The test command: installs what the tests need, then runs formatting, lints and every test
# (including the #[ignore]d ones that need external programs: MSAL Python, jsonschema, curl, msmtp, swaks, and Debian's
# Dovecot with a local token issuer, and a second Dovecot that asks the sandbox about its tokens, started here on
# loopback and stopped on exit).
# Usage: scripts/test.sh            (from anywhere; run as a user that may `pip install`)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies (curl, msmtp, swaks, Python MSAL, jsonschema)"
# curl, msmtp and swaks are the bridge's legacy clients (and curl the sandbox's HTTP/SMTP peer).
missing=()
for tool in curl msmtp swaks; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
python3 -m pip install --disable-pip-version-check --root-user-action=ignore --quiet \
    -r tests/msal/requirements.txt -r tests/schema/requirements.txt
python3 -c 'import msal; print("msal", msal.__version__)'
python3 -c 'import importlib.metadata as m; print("jsonschema", m.version("jsonschema"))'

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "starting the real servers (Dovecot, Postfix, token server) on loopback"
# Their own directory and ports (offset 200), so a developer's own scripts/realservers.sh instance is left
# alone; stopped on exit, by the PIDs this start recorded.
REALSERVERS_TEST_DIR="${TMPDIR:-/tmp}/m365mail-realservers-test"
REALSERVERS_SANDBOX_TEST_DIR="${TMPDIR:-/tmp}/m365mail-realservers-sandbox"
trap 'scripts/realservers.sh stop "$REALSERVERS_TEST_DIR" >/dev/null 2>&1 || true
      scripts/realservers.sh stop "$REALSERVERS_SANDBOX_TEST_DIR" >/dev/null 2>&1 || true' EXIT
PORT_OFFSET=200 scripts/realservers.sh start "$REALSERVERS_TEST_DIR" >/dev/null
eval "$(scripts/realservers.sh env "$REALSERVERS_TEST_DIR")"

step "starting a second Dovecot that introspects the sandbox's tokens (OAUTH_MODE=sandbox)"
# It runs target/debug/m365mail's sandbox; its variables are exported as REALSERVERS_SANDBOX_*
# (REALSERVERS_IMAP_PORT -> REALSERVERS_SANDBOX_IMAP_PORT, ...).
cargo build --locked -p m365mail-cli
OAUTH_MODE=sandbox NO_POSTFIX=1 PORT_OFFSET=300 \
    scripts/realservers.sh start "$REALSERVERS_SANDBOX_TEST_DIR" >/dev/null
eval "$(scripts/realservers.sh env "$REALSERVERS_SANDBOX_TEST_DIR" \
    | sed '/^export REALSERVERS_SANDBOX_/!s/^export REALSERVERS_/export REALSERVERS_SANDBOX_/')"

step "cargo test --workspace -- --include-ignored"
cargo test --workspace --locked -- --include-ignored
