//! The paired bootstrap of two systems scored item by item on one test set (Koehn 2004,
//! "Statistical Significance Tests for Machine Translation Evaluation"): draw test sets of
//! the same size with replacement, score both systems on each draw, and look at how the
//! difference varies. The same draw serves both systems, so what the items have in common
//! (hard sentences are hard for both) cancels out of the difference.

use super::{CONFIDENCE, Interval, mean};

/// A paired bootstrap of `b` against `a`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedBootstrap {
    /// mean(b) - mean(a) on the whole test set (no resampling involved).
    pub diff: f64,
    /// The 2.5th and 97.5th percentiles of the resampled differences (linear interpolation
    /// between order statistics, NumPy's default).
    pub ci95: Interval,
    /// Two-sided p of "no difference": twice the share of resamples whose difference is on
    /// the far side of zero (ties count as that side), with one added to the count and to the
    /// resamples as for any Monte Carlo p (so it is never 0), capped at 1.
    pub p: f64,
    /// Resamples drawn.
    pub resamples: usize,
}

/// The paired bootstrap of `b` against `a` (one value per test item, same items in the same
/// order) over `resamples` draws of item indices taken from `index`, which returns a uniform
/// index below its argument. `None` when the lengths differ, there are no items or no
/// resamples, or a value is not finite.
pub fn paired_bootstrap(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    mut index: impl FnMut(usize) -> usize,
) -> Option<PairedBootstrap> {
    let n = a.len();
    let draws = (0..resamples).map(|_| (0..n).map(|_| index(n)).collect::<Vec<usize>>());
    paired_bootstrap_over(a, b, draws)
}

/// [`paired_bootstrap`] over the given draws, each a list of `a.len()` item indices; the
/// reference tests feed it draws made elsewhere.
pub fn paired_bootstrap_over<D: AsRef<[usize]>>(
    a: &[f64],
    b: &[f64],
    draws: impl IntoIterator<Item = D>,
) -> Option<PairedBootstrap> {
    let n = a.len();
    if n == 0 || b.len() != n || !a.iter().chain(b).all(|v| v.is_finite()) {
        return None;
    }
    // Resampled means of the per-item differences: mean(b*) - mean(a*) without its rounding
    // noise, so identical systems give exactly 0 on every draw.
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let mut diffs: Vec<f64> = Vec::new();
    for draw in draws {
        let draw = draw.as_ref();
        if draw.len() != n || draw.iter().any(|&i| i >= n) {
            return None;
        }
        diffs.push(draw.iter().map(|&i| d[i]).sum::<f64>() / n as f64);
    }
    let r = diffs.len();
    if r == 0 {
        return None;
    }
    diffs.sort_by(f64::total_cmp);
    let at_most_zero = diffs.iter().filter(|&&x| x <= 0.0).count();
    let at_least_zero = diffs.iter().filter(|&&x| x >= 0.0).count();
    let far_side = at_most_zero.min(at_least_zero);
    let p = (2.0 * (far_side + 1) as f64 / (r + 1) as f64).min(1.0);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Some(PairedBootstrap {
        diff: mean(b) - mean(a),
        ci95: Interval {
            low: percentile(&diffs, tail),
            high: percentile(&diffs, 1.0 - tail),
        },
        p,
        resamples: r,
    })
}

/// The `q` quantile of the sorted `xs`, interpolating linearly between order statistics.
fn percentile(xs: &[f64], q: f64) -> f64 {
    let pos = q * (xs.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(xs.len() - 1);
    xs[lo] + (pos - lo as f64) * (xs[hi] - xs[lo])
}
