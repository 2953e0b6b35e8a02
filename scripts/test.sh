#!/usr/bin/env bash
# The whole test suite, with everything it needs installed and started first.
# Usage: scripts/test.sh            (from the repository root, as root on Debian)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

step "tests"
cargo test --all-targets
