//! The statistics a study reports over replicates: mean, spread and a Student-t interval of a
//! sample, and Welch's test of two samples; and the paired bootstrap of two runs scored item
//! by item on one test set. Plain functions on slices of finite values; what a
//! sample is (the replicates of one configuration, the runs of a baseline) is the summary's
//! business.
//!
//! The distribution functions are the textbook ones (Student's t through the regularized
//! incomplete beta function, evaluated by its continued fraction); `tests/fixtures/stats/`
//! holds SciPy's values for the same inputs, which the tests compare against.

mod bootstrap;
mod distribution;

pub use bootstrap::{PairedBootstrap, paired_bootstrap, paired_bootstrap_over};
pub use distribution::{t_cdf, t_quantile};

/// A closed interval of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// True when the two intervals share a point.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.low <= other.high && other.low <= self.high
    }

    /// True when the interval holds `x`.
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// The confidence level of every interval this module gives.
pub const CONFIDENCE: f64 = 0.95;

/// Mean, sample standard deviation and the 95% Student-t interval of the mean of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Describe {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (divisor n - 1); `None` for a single value.
    pub sd: Option<f64>,
    /// The 95% interval of the mean; `None` for a single value.
    pub ci95: Option<Interval>,
}

/// Describes a sample; `None` when it is empty. A non-finite value makes every figure NaN.
pub fn describe(xs: &[f64]) -> Option<Describe> {
    let n = xs.len();
    if n == 0 {
        return None;
    }
    let m = mean(xs);
    if n == 1 {
        return Some(Describe {
            n,
            mean: m,
            sd: None,
            ci95: None,
        });
    }
    let sd = variance(xs, m).sqrt();
    let half = t_quantile(0.5 + CONFIDENCE / 2.0, (n - 1) as f64) * sd / (n as f64).sqrt();
    Some(Describe {
        n,
        mean: m,
        sd: Some(sd),
        ci95: Some(Interval {
            low: m - half,
            high: m + half,
        }),
    })
}

/// Welch's unequal-variance t-test of `b` against `a`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welch {
    /// mean(b) - mean(a).
    pub diff: f64,
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value of "the means are equal".
    pub p: f64,
    /// The 95% interval of `diff`.
    pub ci95: Interval,
}

/// Welch's test of `b` against `a`; `None` unless both have at least two values.
///
/// Two samples without spread (every value equal within each) have no standard error: their
/// difference is then certain, p = 0 when the means differ and 1 when they do not, and the
/// interval is the difference itself.
pub fn welch(a: &[f64], b: &[f64]) -> Option<Welch> {
    welch_described(&describe(a)?, &describe(b)?)
}

/// Welch's test from two samples' descriptions (what a summary keeps of its replicates), as
/// [`welch`]; `None` unless both have a standard deviation.
pub fn welch_described(a: &Describe, b: &Describe) -> Option<Welch> {
    let (na, nb) = (a.n as f64, b.n as f64);
    let (va, vb) = (a.sd?.powi(2) / na, b.sd?.powi(2) / nb);
    let diff = b.mean - a.mean;
    let se = (va + vb).sqrt();
    if se == 0.0 {
        let certain = Interval {
            low: diff,
            high: diff,
        };
        let (t, p) = if diff == 0.0 {
            (0.0, 1.0)
        } else {
            (diff.signum() * f64::INFINITY, 0.0)
        };
        return Some(Welch {
            diff,
            t,
            df: na + nb - 2.0,
            p,
            ci95: certain,
        });
    }
    let df = (va + vb).powi(2) / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
    let t = diff / se;
    let p = (2.0 * t_cdf(-t.abs(), df)).min(1.0);
    let half = t_quantile(0.5 + CONFIDENCE / 2.0, df) * se;
    Some(Welch {
        diff,
        t,
        df,
        p,
        ci95: Interval {
            low: diff - half,
            high: diff + half,
        },
    })
}

/// The arithmetic mean, summed in order (so that the same values give the same bits).
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// The sample variance about `m` (divisor n - 1).
fn variance(xs: &[f64], m: f64) -> f64 {
    xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() as f64 - 1.0)
}

#[cfg(test)]
mod tests;
