#!/usr/bin/env bash
# The test command: installs what the tests need, then runs formatting, lints and every test
# (including the #[ignore]d ones that need external programs such as MSAL Python).
# Usage: scripts/test.sh            (from anywhere; run as a user that may `pip install`)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies (curl, Python MSAL, jsonschema)"
if ! command -v curl >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl
fi
python3 -m pip install --disable-pip-version-check --root-user-action=ignore --quiet \
    -r tests/msal/requirements.txt -r tests/schema/requirements.txt
python3 -c 'import msal; print("msal", msal.__version__)'
python3 -c 'import importlib.metadata as m; print("jsonschema", m.version("jsonschema"))'

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test --workspace -- --include-ignored"
cargo test --workspace --locked -- --include-ignored
