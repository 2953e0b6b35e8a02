#!/usr/bin/env bash
# The whole test suite, with everything it needs installed and started first.
# Usage: scripts/test.sh            (from the repository root, as root on Debian)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "installing test tools"
# TensorBoard's own reader checks the event files we write (tests/tensorboard.rs).
if ! python3 -c "import tensorboard" 2>/dev/null; then
  python3 -m pip install --quiet tensorboard ||
    python3 -m pip install --quiet --break-system-packages tensorboard
fi

# A real one-node Slurm cluster on 127.0.0.1 for the Slurm launcher's tests (tests/slurm.rs);
# stopped again however the tests end.
bash .ci/slurm/up.sh
trap 'bash .ci/slurm/down.sh' EXIT
export ORCHESTRATE_REQUIRE_SLURM=1

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

step "tests"
# Benchmarks are plain programs (harness = false) that `cargo test --all-targets` would run in
# full; clippy above already compiles them, `cargo bench` runs them.
cargo test --lib --bins --tests --examples

step "optional features compile"
# candle-datasets (hub downloaders, ~450 crates) stays off by default; it must still build.
cargo check --quiet --features candle-datasets

step "the cuda feature compiles"
# No GPU here: NVIDIA's compiler and libraries come from PyPI (about 1.2 GB, kept under the
# target directory), Candle's kernels are compiled once (~13 minutes on 2 cores, cached after),
# and every target is linted with the feature on, the CUDA-only code included (README, GPUs).
bash scripts/build-cuda.sh --check

step "smoke experiment against its committed baseline"
# Trains the shipped smoke grid with the real binary and fails on a metric regression
# (experiments/baselines/README.md says how to refresh the baseline on purpose).
smoke_runs=$(mktemp -d)
cargo run --quiet -- run experiments/smoke.toml --runs-dir "$smoke_runs" --quiet
cargo run --quiet -- diff experiments/baselines/smoke.json "$smoke_runs/smoke" \
  --tol dev/accuracy=0.02 --tol test/accuracy=0.02 --tol '*=5%'
rm -rf "$smoke_runs"
