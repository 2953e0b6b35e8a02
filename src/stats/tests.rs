//! Against SciPy's values for the same inputs (`tools/stats_fixtures.py` made
//! `tests/fixtures/stats/reference.json`).

use super::*;
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/stats/reference.json")).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let tol = rel * want.abs().max(1e-12);
    assert!((got - want).abs() <= tol, "{what}: got {got}, SciPy {want}");
}

#[test]
fn t_cdf_and_quantile_match_scipy() {
    let r = reference();
    let rows = r["t"].as_array().unwrap();
    assert!(rows.len() > 50);
    for row in rows {
        let df = f(&row["df"]);
        if let Some(cdf) = row.get("cdf") {
            let t = f(&row["t"]);
            close(t_cdf(t, df), f(cdf), 1e-10, &format!("cdf({t}, {df})"));
        } else {
            let p = f(&row["p"]);
            let want = f(&row["quantile"]);
            let got = t_quantile(p, df);
            if want == 0.0 {
                assert!(got.abs() < 1e-12, "quantile({p}, {df}) = {got}");
            } else {
                close(got, want, 1e-9, &format!("quantile({p}, {df})"));
            }
        }
    }
}

#[test]
fn describe_matches_scipy() {
    for row in reference()["describe"].as_array().unwrap() {
        let xs = floats(&row["xs"]);
        let d = describe(&xs).unwrap();
        let name = row["name"].as_str().unwrap();
        assert_eq!(d.n, xs.len());
        close(d.mean, f(&row["mean"]), 1e-12, name);
        let sd = f(&row["sd"]);
        if sd == 0.0 {
            assert_eq!(d.sd, Some(0.0), "{name}");
        } else {
            close(d.sd.unwrap(), sd, 1e-10, name);
        }
        let ci = floats(&row["ci95"]);
        let got = d.ci95.unwrap();
        close(got.low, ci[0], 1e-10, name);
        close(got.high, ci[1], 1e-10, name);
    }
}

#[test]
fn welch_matches_scipy() {
    let r = reference();
    let sample = |name: &str| -> Vec<f64> {
        let rows = r["describe"].as_array().unwrap();
        let row = rows.iter().find(|x| x["name"] == name).unwrap();
        floats(&row["xs"])
    };
    for row in r["welch"].as_array().unwrap() {
        let (a, b) = (row["a"].as_str().unwrap(), row["b"].as_str().unwrap());
        let w = welch(&sample(a), &sample(b)).unwrap();
        let what = format!("{b} vs {a}");
        close(w.diff, f(&row["diff"]), 1e-9, &what);
        close(w.t, f(&row["t"]), 1e-9, &what);
        close(w.df, f(&row["df"]), 1e-9, &what);
        close(w.p, f(&row["p"]), 1e-8, &what);
        let ci = floats(&row["ci95"]);
        close(w.ci95.low, ci[0], 1e-9, &what);
        close(w.ci95.high, ci[1], 1e-9, &what);
    }
}

#[test]
fn a_single_value_has_no_spread_and_an_empty_sample_no_description() {
    assert_eq!(describe(&[]), None);
    let d = describe(&[0.5]).unwrap();
    assert_eq!((d.n, d.mean, d.sd, d.ci95), (1, 0.5, None, None));
    assert_eq!(welch(&[0.5], &[0.4, 0.6]), None);
}

#[test]
fn samples_without_spread_differ_with_certainty() {
    let w = welch(&[0.5, 0.5], &[0.25, 0.25]).unwrap();
    assert_eq!((w.diff, w.p), (-0.25, 0.0));
    assert!(w.ci95.contains(-0.25) && !w.ci95.contains(0.0));
    assert_eq!(welch(&[0.5, 0.5], &[0.5, 0.5]).unwrap().p, 1.0);
}

#[test]
fn a_nan_replicate_is_not_hidden() {
    let d = describe(&[0.5, f64::NAN, 0.4]).unwrap();
    assert!(d.mean.is_nan() && d.sd.unwrap().is_nan());
}

#[test]
fn intervals_overlap_when_they_share_a_point() {
    let a = Interval {
        low: 0.1,
        high: 0.2,
    };
    assert!(a.overlaps(&Interval {
        low: 0.2,
        high: 0.3
    }));
    assert!(!a.overlaps(&Interval {
        low: 0.21,
        high: 0.3
    }));
}

fn bootstrap_reference() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/stats/bootstrap.json")).unwrap()
}

#[test]
fn paired_bootstrap_over_numpys_draws_gives_numpys_numbers() {
    // `tools/bootstrap_fixtures.py` drew the indices as sacrebleu does and computed the
    // difference, the percentiles (NumPy's linear interpolation) and p from them.
    let r = bootstrap_reference();
    let cases = r["given_draws"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (a, b) = (floats(&case["a"]), floats(&case["b"]));
        let draws: Vec<Vec<usize>> = case["draws"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                d.as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_u64().unwrap() as usize)
                    .collect()
            })
            .collect();
        let bs = paired_bootstrap_over(&a, &b, &draws).unwrap();
        assert_eq!(bs.resamples, draws.len());
        close(bs.diff, f(&case["diff"]), 1e-12, name);
        let ci = floats(&case["ci95"]);
        assert!(
            (bs.ci95.low - ci[0]).abs() < 1e-12,
            "{name}: {bs:?} vs {ci:?}"
        );
        assert!(
            (bs.ci95.high - ci[1]).abs() < 1e-12,
            "{name}: {bs:?} vs {ci:?}"
        );
        close(bs.p, f(&case["p"]), 1e-12, name);
    }
}

#[test]
fn identical_systems_differ_by_nothing_with_p_one() {
    let a = [0.25, 0.5, 0.0, 1.0, 0.75];
    let mut i = 0;
    let bs = paired_bootstrap(&a, &a, 1000, |n| {
        i = (i * 7 + 3) % n;
        i
    })
    .unwrap();
    assert_eq!(bs.diff, 0.0);
    assert_eq!((bs.ci95.low, bs.ci95.high), (0.0, 0.0));
    assert_eq!(bs.p, 1.0);
}

#[test]
fn a_system_better_on_every_item_has_the_smallest_p_resampling_can_show() {
    let a = [0.5, 0.25, 0.75, 1.0];
    let b = [0.25, 0.0, 0.5, 0.5];
    // Every draw of items is better in B: no resample has the other sign, so p is 2/(R+1).
    let bs = paired_bootstrap_over(&a, &b, [[0, 1, 2, 3], [3, 3, 3, 3], [1, 1, 0, 2]]).unwrap();
    assert_eq!(bs.diff, -0.3125);
    assert_eq!(bs.p, 2.0 / 4.0);
    assert!(bs.ci95.high < 0.0, "{bs:?}");
    // The draws' differences are -0.3125, -0.5 and -0.25: the percentiles lie among them.
    assert!(bs.ci95.low >= -0.5 && bs.ci95.high <= -0.25, "{bs:?}");
}

#[test]
fn the_paired_bootstrap_refuses_what_it_cannot_pair() {
    let draw = [[0usize, 1]];
    assert_eq!(paired_bootstrap_over(&[0.1, 0.2], &[0.1], draw), None);
    assert_eq!(paired_bootstrap_over(&[], &[], [[0usize; 0]]), None);
    assert_eq!(
        paired_bootstrap_over(&[0.1, f64::NAN], &[0.1, 0.2], draw),
        None
    );
    assert_eq!(
        paired_bootstrap_over(&[0.1, 0.2], &[0.1, 0.2], [[0usize, 2]]),
        None
    );
    assert_eq!(
        paired_bootstrap_over(&[0.1, 0.2], &[0.1, 0.2], Vec::<Vec<usize>>::new()),
        None
    );
}
