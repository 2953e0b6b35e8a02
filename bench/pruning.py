#!/usr/bin/env python3
"""The pruning benchmark (issue 17): one grid trained in full and under each schedule.

For each spec and each `schedule.kind` it runs `orchestrate run SPEC --json` in a fresh runs
directory and timestamps every event line as it arrives, so everything is measured from
outside the tool: epochs trained (per training, the epoch its training run stopped at, read
from the run directories; decode-only variants train nothing), wall time, how long the worker slots stood idle (slots x wall time minus the
time attempts were running), and the winner, compared with the full grid's.

    cargo build --release
    python3 bench/pruning.py --bin target/release/orchestrate \
        --out bench/results/$(date +%F)-pruning.md

Schedules the binary refuses (exit 3) are reported as refused, not measured.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

KINDS = ["none", "successive_halving", "asha", "median"]


def run_once(binary, spec, kind, extra, jobs):
    runs_dir = tempfile.mkdtemp(prefix="prune-bench-")
    cmd = [binary, "run", spec, "--runs-dir", runs_dir, "--json", "--jobs", str(jobs)]
    cmd += ["--set", f'schedule.kind="{kind}"']
    for s in extra:
        cmd += ["--set", s]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    running = {}  # run id -> start time of its attempt
    busy = 0.0
    winner = None
    states = {}
    for line in proc.stdout:
        now = time.monotonic() - t0
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind_ = ev.get("event")
        if kind_ == "run_started":
            running[ev["run_id"]] = now
        elif kind_ == "run_finished":
            start = running.pop(ev["run_id"], None)
            if start is not None:
                busy += now - start
            states[ev["name"]] = ev["state"]
        elif kind_ == "winner":
            winner = ev.get("line")
    err = proc.stderr.read()
    rc = proc.wait()
    wall = time.monotonic() - t0
    for start in running.values():
        busy += wall - start
    trained = epochs_trained(runs_dir)
    shutil.rmtree(runs_dir, ignore_errors=True)
    return {
        "kind": kind,
        "rc": rc,
        "stderr": err.strip().splitlines()[-1:] if rc else [],
        "epochs": trained,
        "wall": wall,
        "idle": max(0.0, jobs * wall - busy),
        "winner": winner,
        "pruned": sum(1 for s in states.values() if s == "pruned"),
    }


def epochs_trained(runs_dir):
    """Epochs trained over the grid: per training (runs sharing a `training_id`, such as a
    model's greedy and beam runs, train once), the epoch its training run stopped at."""
    (exp,) = [
        os.path.join(runs_dir, d)
        for d in os.listdir(runs_dir)
        if not d.startswith(".") and os.path.isdir(os.path.join(runs_dir, d))
    ]
    by_training = {}
    for d in os.listdir(exp):
        plan_path = os.path.join(exp, d, "plan.json")
        if not os.path.isfile(plan_path):
            continue
        with open(plan_path) as f:
            plan = json.load(f)
        with open(os.path.join(exp, d, "status.json")) as f:
            epoch = json.load(f).get("epoch", 0)
        first = by_training.get(plan["training_id"])
        if first is None or plan["index"] < first[0]:
            by_training[plan["training_id"]] = (plan["index"], epoch)
    return sum(e for _, e in by_training.values())


def winner_name(line):
    # "best: NAME (ID) metric=..." -> NAME
    if not line or not line.startswith("best: "):
        return None
    return line[len("best: "):].split(" (")[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/orchestrate")
    ap.add_argument("--spec", action="append", help="default: bench/prune_q2.toml and prune_q3.toml")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], dest="extra")
    ap.add_argument("--out", help="also write the table here (markdown)")
    a = ap.parse_args()
    specs = a.spec or ["bench/prune_q2.toml", "bench/prune_q3.toml"]
    kinds = a.kinds.split(",")
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    load0 = os.getloadavg()
    say(f"# Pruning benchmark, {datetime.date.today()}")
    say()
    say(f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
        f"load average before {load0[0]:.2f}. `--jobs {a.jobs}`, `{a.bin}`"
        + (f", --set {' '.join(a.extra)}" if a.extra else "") + ".")
    for spec in specs:
        say()
        say(f"## {spec}")
        say()
        say("| schedule | epochs trained | share of full | wall s | slot idle s | pruned | winner | same winner |")
        say("|---|---:|---:|---:|---:|---:|---|---|")
        full = None
        for kind in kinds:
            r = run_once(a.bin, spec, kind, a.extra, a.jobs)
            if r["rc"] == 3:
                say(f"| {kind} | refused (exit 3) | | | | | | |")
                continue
            if r["rc"] not in (0,):
                say(f"| {kind} | failed (exit {r['rc']}: {' '.join(r['stderr'])}) | | | | | | |")
                continue
            if kind == "none":
                full = r
            share = f"{100 * r['epochs'] / full['epochs']:.0f}%" if full else ""
            same = ""
            if full and kind != "none":
                same = "yes" if winner_name(r["winner"]) == winner_name(full["winner"]) else "no"
            say(f"| {kind} | {r['epochs']} | {share} | {r['wall']:.1f} | {r['idle']:.1f} | "
                f"{r['pruned']} | `{winner_name(r['winner'])}` | {same} |")
            print(f"  {kind}: {r['winner']}", file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    say()
    say(f"Load average after: {load1[0]:.2f}.")
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
