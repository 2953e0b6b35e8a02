#!/usr/bin/env python3
"""Reference values for src/stats, computed with SciPy (an implementation independent of ours).

Writes tests/fixtures/stats/reference.json; the unit tests in src/stats/tests.rs read it.
Run: python3 tools/stats_fixtures.py   (SciPy 1.17 made the committed file)
"""
import json
import pathlib

import numpy as np
import scipy
from scipy import stats

rng = np.random.default_rng(20261202)
samples = {
    "q2_like_a": [0.8590, 0.8612, 0.8571, 0.8603, 0.8588],
    "q2_like_b": [0.8401, 0.8530, 0.8467, 0.8512, 0.8390],
    "two": [0.5, 0.75],
    "tied": [0.3, 0.3, 0.3],
    "wide": list(map(float, rng.normal(0.4, 0.05, 12).round(6))),
    "narrow": list(map(float, rng.normal(0.42, 0.01, 4).round(6))),
    "skewed": [1e-3, 2e-3, 1.5e-3, 0.25, 3e-3, 2.5e-3],
}

out = {"scipy": scipy.__version__, "describe": [], "t": [], "welch": []}
for name, xs in samples.items():
    a = np.array(xs)
    n = len(a)
    sd = float(a.std(ddof=1))
    lo, hi = stats.t.interval(0.95, n - 1, loc=a.mean(), scale=stats.sem(a)) if sd > 0 else (a.mean(), a.mean())
    out["describe"].append({"name": name, "xs": xs, "mean": float(a.mean()), "sd": sd,
                            "ci95": [float(lo), float(hi)]})
for df in [1, 2, 3, 4, 7.5, 10, 29, 100, 1000]:
    for t in [-4.0, -1.3, 0.0, 0.4, 2.0, 6.5]:
        out["t"].append({"df": df, "t": t, "cdf": float(stats.t.cdf(t, df))})
    for p in [0.025, 0.5, 0.9, 0.975, 0.995]:
        out["t"].append({"df": df, "p": p, "quantile": float(stats.t.ppf(p, df))})
pairs = [("q2_like_a", "q2_like_b"), ("wide", "narrow"), ("two", "tied"), ("skewed", "wide"),
         ("q2_like_a", "q2_like_a")]
for x, y in pairs:
    a, b = np.array(samples[x]), np.array(samples[y])
    r = stats.ttest_ind(b, a, equal_var=False)
    ci = r.confidence_interval(0.95)
    out["welch"].append({"a": x, "b": y, "diff": float(b.mean() - a.mean()), "t": float(r.statistic),
                         "df": float(r.df), "p": float(r.pvalue), "ci95": [float(ci.low), float(ci.high)]})

path = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/stats/reference.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}")
