#!/usr/bin/env bash
# One-shot check of the CUDA build on a GPU machine (no Rust, no network needed there).
#
# Build on any machine with scripts/build-cuda.sh, carry the binary over (gzip/xz/zstd is fine:
# the PTX makes it large), then from the repository root:
#
#   scripts/device-check.sh [BINARY]      # default target/cuda/release/orchestrate
#
# It (1) shows the card and checks the binary's libraries resolve, (2) trains the smoke grid and
# the seq2seq smoke grid (Q3) on cuda:0 and on the CPU with the same binary and compares their
# metrics with `orchestrate diff` and record by record, checks that train.device = "auto" picks
# the GPU, (3) trains the Q2 grid for 2 epochs on cuda:0 one run after another, then 3 runs
# packed on the card (and under MPS where the driver has it), then one run with each
# GPU-specific choice undone for comparison, (4) times one Q2 run against the same CNN in
# PyTorch on the same GPU (interleaved, medians) when `import torch` works, (5) interrupts a
# run with Ctrl-C after its first epoch, resumes it and compares it with an undisturbed run,
# and prints one table, also appended to bench/results/device-check.md with the card's name.
# Budget: about 3 minutes on an H100; CHECKS="resume auto" (any of smoke q3 auto q2 torch
# resume) runs only those sections.
#
# Dry run without a GPU (shakes out the script itself before spending device time):
#   DEVICE=cpu scripts/device-check.sh target/release/orchestrate
# trains everything on the CPU instead of cuda:0 and writes its table to the scratch directory.
#
# Libraries: the binary needs libcuda.so.1 (driver) and CUDA 13 libcublas/libcurand/libcudart.
# Set CUDA_LIB_DIR to a directory holding them; by default PyTorch's nvidia/cu13/lib is used, then
# target/cuda-libs/ if present (copy e.g. libcurand.so.10 from target/cuda-toolkit there and carry).
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin="${1:-target/cuda/release/orchestrate}"
dev="${DEVICE:-cuda:0}"
work="$(mktemp -d /tmp/device-check.XXXXXX)"
results="bench/results/device-check.md"
[[ $dev == cpu ]] && results="$work/device-check.md"
rows=()
failures=0

say() { printf '\n== %s\n' "$*"; }
row() { rows+=("$(printf '| %-44s | %-52s |' "$1" "$2")"); }
fail() { failures=$((failures + 1)); row "$1" "FAIL: $2"; }
# CHECKS="smoke q3 auto q2 torch resume" picks sections (default: all), for a short device lease.
want() { [[ " ${CHECKS:-all} " == *" all "* || " ${CHECKS:-} " == *" $1 "* ]]; }
for c in ${CHECKS:-all}; do
  [[ " all smoke q3 auto q2 torch resume " == *" $c "* ]] ||
    { echo "CHECKS: unknown section '$c' (all smoke q3 auto q2 torch resume)" >&2; exit 2; }
done

# --- the binary (decompress a carried archive) ---------------------------------------------
case "$bin" in
*.gz) gzip -dc "$bin" >"$work/orchestrate" && bin="$work/orchestrate" ;;
*.xz) xz -dc "$bin" >"$work/orchestrate" && bin="$work/orchestrate" ;;
*.zst) zstd -qdc "$bin" >"$work/orchestrate" && bin="$work/orchestrate" ;;
esac
chmod +x "$bin" 2>/dev/null
[[ -x "$bin" ]] || { echo "no binary at $bin (build it with scripts/build-cuda.sh)" >&2; exit 2; }

# --- card and libraries --------------------------------------------------------------------
if [[ $dev == cpu ]]; then
  card="dry run on the CPU" driver="none"
else
  say "nvidia-smi"
  nvidia-smi || { echo "nvidia-smi failed: no driver or no GPU here" >&2; exit 2; }
  card="$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 | head -1)"
  driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader -i 0 | head -1)"
fi
row "card / driver" "$card / $driver"

have_torch=0
python3 -c 'import torch' 2>/dev/null && have_torch=1
if [[ -z "${CUDA_LIB_DIR:-}" && $have_torch == 1 && $dev != cpu ]]; then
  CUDA_LIB_DIR="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia", "cu13", "lib"))')"
fi
[[ -n "${CUDA_LIB_DIR:-}" ]] && export LD_LIBRARY_PATH="$CUDA_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Some PyTorch installs lack libcurand (Candle opens a cuRAND generator with every CUDA device
# although orchestrate draws nothing on the card): carried copies in target/cuda-libs come last.
[[ -d "$repo/target/cuda-libs" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$repo/target/cuda-libs"

say "ldd $bin (LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})"
ldd "$bin" | grep -E 'cuda|cublas|curand|nvrtc|not found'
if ldd "$bin" | grep -q 'not found'; then
  fail "ldd" "$(ldd "$bin" | grep 'not found' | awk '{print $1}' | tr '\n' ' ')"
  printf '%s\n' "${rows[@]}"
  exit 1
fi
row "ldd" "all libraries resolve (${CUDA_LIB_DIR:-system paths})"

# Wall seconds of a command; its output goes to $work/<label>.log.
timed() {
  local label="$1"; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$work/$label.log" 2>&1
  local rc=$?
  t1=$(date +%s.%N)
  elapsed=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
  [[ $rc == 0 ]] || { echo "--- $label failed (exit $rc):" >&2; tail -20 "$work/$label.log" >&2; }
  return $rc
}

# Per run name: max |CPU - CUDA| over every non-timing metric record, and whether all are equal.
compare_py='
import json, sys, os
def load(exp):
    s = json.load(open(os.path.join(exp, "summary.json")))
    out = {}
    for r in s["runs"]:
        recs = {}
        for line in open(os.path.join(exp, r["id"], "metrics.jsonl")):
            m = json.loads(line)
            if not m["tag"].startswith("time/"):
                recs[(m["epoch"], m["step"], m["tag"])] = m["value"]
        out[r["name"]] = recs
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
worst, same, n = 0.0, True, 0
for name, ra in a.items():
    rb = b.get(name, {})
    for k, v in ra.items():
        if k not in rb: same = False; continue
        n += 1; d = abs(v - rb[k]); worst = max(worst, d); same = same and d == 0
print(f"{n} records, max |diff| {worst:.3g}" + (", bit-identical" if same else ""))
'
# Mean time/epoch_seconds of EPOCH over all runs of an experiment.
epoch_py='
import json, sys, os
exp, epoch = sys.argv[1], int(sys.argv[2])
s = json.load(open(os.path.join(exp, "summary.json")))
v = [json.loads(l)["value"] for r in s["runs"] for l in open(os.path.join(exp, r["id"], "metrics.jsonl"))
     if json.loads(l)["tag"] == "time/epoch_seconds" and json.loads(l)["epoch"] == epoch]
print(f"{sum(v)/len(v):.2f}" if v else "n/a")
'

# --- smoke grid: CUDA vs CPU ---------------------------------------------------------------
if want smoke; then
say "smoke grid on $dev and on CPU"
if timed smoke_cuda "$bin" run experiments/smoke.toml --runs-dir "$work/cuda" --devices "$dev" --quiet; then
  row "smoke on $dev (wall)" "${elapsed}s"
  smoke_cuda_ok=1
else
  fail "smoke on $dev" "see $work/smoke_cuda.log"
fi
if timed smoke_cpu "$bin" run experiments/smoke.toml --runs-dir "$work/cpu" --devices cpu --quiet; then
  row "smoke on CPU, same binary (wall)" "${elapsed}s"
  smoke_cpu_ok=1
else
  fail "smoke on CPU" "see $work/smoke_cpu.log"
fi
if [[ ${smoke_cuda_ok:-0} == 1 && ${smoke_cpu_ok:-0} == 1 ]]; then
  if "$bin" diff "$work/cpu/smoke" "$work/cuda/smoke" --tol dev/accuracy=0.02 \
    --tol test/accuracy=0.02 --tol '*=5%' >"$work/smoke_diff.log" 2>&1; then
    row "smoke CUDA vs CPU: orchestrate diff" "within tolerance (acc 0.02, others 5%)"
  else
    fail "smoke CUDA vs CPU: orchestrate diff" "outside tolerance (see below)"
    cat "$work/smoke_diff.log"
  fi
  row "smoke CUDA vs CPU: every metric record" "$(python3 -c "$compare_py" "$work/cpu/smoke" "$work/cuda/smoke")"
  "$bin" diff experiments/baselines/smoke.json "$work/cuda/smoke" --tol dev/accuracy=0.02 \
    --tol test/accuracy=0.02 --tol '*=5%' >/dev/null 2>&1 &&
    row "smoke CUDA vs committed CPU baseline" "within tolerance" ||
    row "smoke CUDA vs committed CPU baseline" "outside tolerance"
fi
fi

# --- Q3 smoke grid (the seq2seq translator, attention x decoding): CUDA vs CPU ------------
if want q3; then
say "Q3 smoke grid on $dev and on CPU"
if timed q3_cuda "$bin" run experiments/q3_smoke.toml --runs-dir "$work/cuda" --devices "$dev" --quiet &&
  timed q3_cpu "$bin" run experiments/q3_smoke.toml --runs-dir "$work/cpu" --devices cpu --quiet; then
  row "Q3 smoke (seq2seq) on $dev" "trained and decoded, 4 runs"
  row "Q3 smoke CUDA vs CPU: every metric record" "$(python3 -c "$compare_py" "$work/cpu/q3_smoke" "$work/cuda/q3_smoke")"
  "$bin" diff "$work/cpu/q3_smoke" "$work/cuda/q3_smoke" --tol dev/error_rate=0.05 \
    --tol test/error_rate=0.05 --tol '*=10%' >"$work/q3_diff.log" 2>&1 &&
    row "Q3 smoke CUDA vs CPU: orchestrate diff" "within tolerance (error rate 0.05, others 10%)" ||
    { row "Q3 smoke CUDA vs CPU: orchestrate diff" "outside tolerance (see below)"; cat "$work/q3_diff.log"; }
else
  fail "Q3 smoke on $dev" "see $work/q3_cuda.log / q3_cpu.log"
fi
fi

# --- train.device = "auto" picks the GPU -----------------------------------------------------
if want auto; then
if timed auto "$bin" run experiments/smoke.toml --runs-dir "$work/auto" --set train.device=auto \
  --set train.epochs=1 --quiet; then
  row "train.device = auto" "$(grep -ho 'device auto -> [a-z0-9:]*' "$work"/auto/smoke/*/worker.log | sort -u | tr '\n' ' ')"
else
  fail "train.device = auto" "see $work/auto.log"
fi
fi

# --- Q2 grid, 2 epochs: one after another, then packed 3 on the card -----------------------
if want q2; then
# Epoch 2 is the steady-state figure: epoch 1 also pays the driver's PTX JIT and cuBLAS setup.
q2=(experiments/q2_grid.toml --set train.epochs=2 --devices "$dev" --quiet)
say "Q2 grid (3 runs x 2 epochs) on $dev, sequential"
if timed q2_seq "$bin" run "${q2[@]}" --runs-dir "$work/q2seq" --jobs 1; then
  seq_wall=$elapsed
  row "Q2 3 runs sequential on $dev (wall)" "${seq_wall}s"
  row "Q2 epoch on $dev (epoch 1 / epoch 2)" \
    "$(python3 -c "$epoch_py" "$work/q2seq/q2_grid" 1)s / $(python3 -c "$epoch_py" "$work/q2seq/q2_grid" 2)s"
else
  fail "Q2 sequential on $dev" "see $work/q2_seq.log"
fi
say "Q2 grid packed: --jobs 3, launch.jobs_per_device=3 on $dev"
if timed q2_pack "$bin" run "${q2[@]}" --runs-dir "$work/q2pack" --jobs 3 --set launch.jobs_per_device=3; then
  row "Q2 3 runs packed on $dev (wall)" "${elapsed}s"
  row "Q2 packed epoch 2 (mean over runs)" "$(python3 -c "$epoch_py" "$work/q2pack/q2_grid" 2)s"
  [[ -n "${seq_wall:-}" ]] && row "packing throughput gain (seq / packed wall)" \
    "$(python3 -c "print(f'{$seq_wall / $elapsed:.2f}x (goal >= 2x)')")"
  [[ -n "${seq_wall:-}" ]] && row "Q2 packed vs sequential metrics" \
    "$(python3 -c "$compare_py" "$work/q2seq/q2_grid" "$work/q2pack/q2_grid")"
else
  fail "Q2 packed on $dev" "see $work/q2_pack.log"
fi

# --- the same packing under MPS, which lets the processes' kernels share the card at once --
# Without it the GPU time-slices between the workers' contexts.
export PATH="$PATH:/usr/local/nvidia/bin"
if [[ $dev != cpu ]] && command -v nvidia-cuda-mps-control >/dev/null; then
  say "Q2 grid packed under MPS"
  export CUDA_MPS_PIPE_DIRECTORY="$work/mps-pipe" CUDA_MPS_LOG_DIRECTORY="$work/mps-log"
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d; then
    if timed q2_mps timeout 120 "$bin" run "${q2[@]}" --runs-dir "$work/q2mps" --jobs 3 \
      --set launch.jobs_per_device=3; then
      row "Q2 3 runs packed under MPS (wall)" \
        "${elapsed}s$([[ -n "${seq_wall:-}" ]] && python3 -c "print(f', {$seq_wall / $elapsed:.2f}x sequential')")"
      row "Q2 under MPS vs sequential metrics" "$(python3 -c "$compare_py" "$work/q2seq/q2_grid" "$work/q2mps/q2_grid")"
    else
      fail "Q2 packed under MPS" "see $work/q2_mps.log and $CUDA_MPS_LOG_DIRECTORY"
      tail -5 "$CUDA_MPS_LOG_DIRECTORY"/* 2>/dev/null
    fi
    echo quit | nvidia-cuda-mps-control
    sleep 1
  else
    row "MPS" "nvidia-cuda-mps-control -d failed"
  fi
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
else
  row "MPS" "not available here (no nvidia-cuda-mps-control)"
fi

# --- what each GPU-specific choice buys: one run (lr 0.0005, 2 epochs) with it undone -------
# Each switch restores the straightforward path; the metrics column compares the run with
# the same run of the sequential grid above.
ablation() {
  local label="$1" what="$2"; shift 2
  say "Q2 lr 0.0005, 2 epochs, with $label"
  if timed "abl_$label" env "$@" "$bin" run "${q2[@]}" --runs-dir "$work/abl_$label" \
    --set 'grid."optimizer.lr"=[0.0005]'; then
    row "Q2 epoch 2 with $what" \
      "$(python3 -c "$epoch_py" "$work/abl_$label/q2_grid" 2)s; $(python3 -c "$compare_py" "$work/abl_$label/q2_grid" "$work/q2seq/q2_grid")"
  else
    fail "Q2 with $what" "see $work/abl_$label.log"
  fi
}
if [[ $dev != cpu ]]; then
  ablation tensor_optim "the tensor-op optimizer" ORCHESTRATE_GPU_OPTIM=tensor
  ablation im2col "the tensor-op im2col conv" ORCHESTRATE_GPU_CONV=im2col
fi
fi

# --- one Q2 run against PyTorch on the same GPU, interleaved: PyTorch, ours, PyTorch -------
if want torch; then
# 5 epochs each; medians of epochs 2-5 (epoch 1 also pays cuDNN autotuning / module loading).
median_py='
import json, statistics, sys, os
ours_dir, torch_logs = sys.argv[1], sys.argv[2:]
s = json.load(open(os.path.join(ours_dir, "summary.json")))
ours = [json.loads(l)["value"] for r in s["runs"] for l in open(os.path.join(ours_dir, r["id"], "metrics.jsonl"))
        if json.loads(l)["tag"] == "time/epoch_seconds" and json.loads(l)["epoch"] >= 2]
runs = [json.loads(open(f).read().strip().splitlines()[-1]) for f in torch_logs]
theirs = [t for r in runs for t in r["epoch_seconds"][1:]]
o, t, version = statistics.median(ours), statistics.median(theirs), runs[0]["torch"]
print(f"{o:.2f}s / {t:.2f}s = {t / o:.2f}x (ours {min(ours):.2f}-{max(ours):.2f}, torch {min(theirs):.2f}-{max(theirs):.2f}, torch {version})")
'
if [[ $have_torch == 1 ]]; then
  say "Q2 epoch, batch 8: PyTorch, orchestrate, PyTorch (5 epochs each)"
  torch_run() { python3 scripts/torch_q2_epoch.py data/fashion-mnist-mini --batch 8 --epochs 5 --device "$dev"; }
  if timed torch1 torch_run &&
    timed ours5 "$bin" run experiments/q2_grid.toml --set train.epochs=5 --devices "$dev" --quiet \
      --runs-dir "$work/ours5" --set 'grid."optimizer.lr"=[0.0005]' &&
    timed torch2 torch_run; then
    row "Q2 epoch, batch 8: ours / PyTorch (medians)" \
      "$(python3 -c "$median_py" "$work/ours5/q2_grid" "$work/torch1.log" "$work/torch2.log")"
  else
    fail "Q2 epoch against PyTorch" "see $work/torch1.log, ours5.log, torch2.log"
  fi
else
  row "PyTorch epoch" "skipped: python3 cannot import torch"
fi
fi

# --- resume on the card: Ctrl-C after epoch 1, the same command again, vs an undisturbed run -
if want resume; then
say "resume on $dev: a 3-epoch Q2 run interrupted after epoch 1, run again, against an undisturbed one"
r=(experiments/q2_grid.toml --set train.epochs=3 --devices "$dev" --set 'grid."optimizer.lr"=[0.0005]')
"$bin" run "${r[@]}" --runs-dir "$work/resume" --plain >"$work/resume1.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
  python3 - "$work/resume" <<'PY' 2>/dev/null && break
import glob, json, sys
done = [json.load(open(f)).get("epoch", 0) for f in glob.glob(sys.argv[1] + "/q2_grid/*/status.json")]
sys.exit(0 if any(e >= 1 for e in done) else 1)
PY
  sleep 0.2
done
kill -INT "$pid"
wait "$pid"
first=$?
if timed resume2 "$bin" run "${r[@]}" --runs-dir "$work/resume" --plain &&
  timed resume_ref "$bin" run "${r[@]}" --runs-dir "$work/resume_ref" --quiet; then
  row "resume on $dev (Ctrl-C after epoch 1: exit $first)" \
    "$(grep -o 'resuming after epoch [0-9/]*' "$work/resume2.log" | head -1 || echo 'did not resume'); $(python3 -c "$compare_py" "$work/resume_ref/q2_grid" "$work/resume/q2_grid")"
else
  fail "resume on $dev" "see $work/resume1.log, resume2.log, resume_ref.log"
fi
fi

# --- the table -----------------------------------------------------------------------------
header="$(printf '| %-44s | %-52s |\n|%s|%s|' "check" "result" "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..54})")"
table="$(printf '%s\n' "$header" "${rows[@]}")"
say "device check: $card ($(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD 2>/dev/null || echo no-git))"
echo "$table"
mkdir -p "$(dirname "$results")"
{
  printf '\n## %s, driver %s, %s, commit %s\n\n' "$card" "$driver" "$(date -u +%Y-%m-%dT%H:%MZ)" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "$table"
} >>"$results"
echo "appended to $results; logs and run directories in $work"
[[ $failures == 0 ]]
