//! Evaluation metrics of translation: Levenshtein distance, error rate, exact match.

/// Edit distance (insertions, deletions, substitutions of one character each).
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// One example's error: Levenshtein(pred, gold) / len(gold); an empty gold counts as one
/// character so the ratio stays finite.
pub fn example_error(pred: &str, gold: &str) -> f64 {
    levenshtein(pred, gold) as f64 / gold.chars().count().max(1) as f64
}

/// The homework's error rate: the mean over examples of [`example_error`]; 0 for no examples.
pub fn error_rate<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> f64 {
    mean(pairs.into_iter().map(|(p, g)| example_error(p, g)))
}

/// One example's exact match: 1 when the prediction is its gold string, else 0.
pub fn example_match(pred: &str, gold: &str) -> f64 {
    f64::from(u8::from(pred == gold))
}

/// Fraction of predictions equal to their gold string: the mean of [`example_match`].
pub fn exact_match<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> f64 {
    mean(pairs.into_iter().map(|(p, g)| example_match(p, g)))
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_on_hand_made_pairs() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("tom is tall .", "tom is tall ."), 0);
        assert_eq!(levenshtein("flaw", "lawn"), 2);
        assert_eq!(
            levenshtein("ñandu", "nandu"),
            1,
            "counts characters, not bytes"
        );
    }

    #[test]
    fn error_rate_is_the_mean_of_per_example_ratios() {
        // 1/4 and 2/2: mean 0.625, not the pooled 3/6.
        let pairs = [("abcx", "abcd"), ("", "ab")];
        assert!((error_rate(pairs) - 0.625).abs() < 1e-12);
        assert_eq!(exact_match(pairs), 0.0);
        assert_eq!(exact_match([("a", "a"), ("b", "c")]), 0.5);
        assert_eq!(example_error("xy", ""), 2.0);
        assert_eq!(error_rate(std::iter::empty()), 0.0);
    }
}
