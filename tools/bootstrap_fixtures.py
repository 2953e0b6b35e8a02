#!/usr/bin/env python3
"""Reference values for the paired bootstrap of src/stats/bootstrap.rs, computed with NumPy.

Writes tests/fixtures/stats/bootstrap.json; the unit tests in src/stats/tests.rs read it.
Run: python3 tools/bootstrap_fixtures.py   (NumPy 2.4 made the committed file)

Two kinds of reference:
- "given_draws": item indices drawn here the way sacrebleu's paired bootstrap draws them
  (numpy default_rng(12345).choice(n, size=(R, n))), with the difference, the percentile
  interval and p computed here from those draws. The Rust code, fed the same draws, must give
  the same numbers: this checks everything but its own random number generator.
- "exact": the exact bootstrap distribution of the resampled mean difference (the n-fold
  convolution of the per-item differences' empirical distribution), so that the Rust code's
  own 1,000 resamples can be judged against the ideal they estimate, within Monte Carlo
  error. Per-item values are multiples of 1/4 (per-sentence error rates of 4-character
  sentences; 0/1 accuracies), which keeps the distribution's support small and exact.
"""
import json
import pathlib

import numpy as np

SEED = 12345  # sacrebleu's default SACREBLEU_SEED, and diff --paired's
out = {"numpy": np.__version__, "given_draws": [], "exact": []}


def p_value(diffs):
    """Two-sided: twice the far side of zero (ties included), +1 Monte Carlo, capped at 1."""
    r = len(diffs)
    far = min(int(np.sum(diffs <= 0)), int(np.sum(diffs >= 0)))
    return min(1.0, 2.0 * (far + 1) / (r + 1))


rng = np.random.default_rng(20261204)
# Per-sentence errors of two translators on 12 sentences (B better on most), and per-image
# correctness of two classifiers on 15 images (B wrong on a few more).
a_err = rng.integers(0, 9, 12) / 8
b_err = np.clip(a_err - rng.integers(-1, 3, 12) / 8, 0, None)
a_acc = rng.integers(0, 2, 15).astype(float)
b_acc = a_acc.copy()
b_acc[[1, 4, 9]] = 1 - b_acc[[1, 4, 9]]
for name, a, b, r in [("errors", a_err, b_err, 200), ("accuracy", a_acc, b_acc, 150)]:
    n = len(a)
    draws = np.random.default_rng(SEED).choice(n, size=(r, n), replace=True)
    diffs = (b - a)[draws].mean(axis=1)
    out["given_draws"].append({
        "name": name,
        "a": list(map(float, a)),
        "b": list(map(float, b)),
        "draws": draws.tolist(),
        "diff": float(b.mean() - a.mean()),
        "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
        "p": p_value(diffs),
    })


def exact(name, a, b):
    """The exact distribution of mean(d*) over all n^n equally likely draws."""
    a, b = np.array(a, dtype=float), np.array(b, dtype=float)
    n = len(a)
    units = np.rint((b - a) * 4).astype(int)  # per-item differences in quarters
    lo = units.min()
    pmf = np.bincount(units - lo) / n  # one draw's distribution, shifted to start at 0
    total = np.array([1.0])
    for _ in range(n):
        total = np.convolve(total, pmf)
    sums = np.arange(len(total)) + n * lo  # in quarters
    keep = total > 0
    values = sums[keep] / 4 / n
    probs = total[keep]
    out["exact"].append({
        "name": name,
        "a": list(map(float, a)),
        "b": list(map(float, b)),
        "diff": float(b.mean() - a.mean()),
        "values": list(map(float, values)),
        "probabilities": list(map(float, probs)),
        "p_ideal": min(1.0, 2 * min(float(probs[values <= 0].sum()), float(probs[values >= 0].sum()))),
    })


rng = np.random.default_rng(7)
a = rng.integers(0, 5, 31) / 4
b = np.clip(a + rng.choice([-0.25, 0, 0, 0, 0.25, 0.25], 31), 0, None)
exact("errors_31", a, b)
a = rng.integers(0, 2, 40).astype(float)
b = a.copy()
flip = rng.choice(40, 6, replace=False)
b[flip] = 1 - b[flip]
exact("accuracy_40", a, b)

path = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/stats/bootstrap.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}")
for e in out["exact"]:
    print(e["name"], "diff", e["diff"], "p_ideal", e["p_ideal"])
for g in out["given_draws"]:
    print(g["name"], "diff", g["diff"], "ci", g["ci95"], "p", g["p"])
