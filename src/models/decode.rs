//! Greedy and beam-search decoding, batched across examples.
//!
//! Both run the decoder step by step for at most `max_len` steps; the log-probabilities come
//! back to the host each step (the vocabulary is a few dozen characters), where choosing
//! tokens and reordering beams is plain Rust. Ties go to the lower token index, so decoding
//! is deterministic.

use super::seq2seq::{BatchTensors, Seq2Seq};
use crate::data::pairs::{Batch, Example};
use crate::data::vocab::{EOS, SOS};
use crate::spec::{DecodeSpec, DecodeStrategy};
use candle_core::{DType, Result, Tensor};

/// One decoded output.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Output indices, without SOS and EOS.
    pub tokens: Vec<u32>,
    /// Sum of the log-probabilities of the tokens, and of EOS when finished.
    pub logprob: f64,
    /// Whether EOS was produced within `max_len` steps.
    pub finished: bool,
    /// Attention weights over the batch's source positions, one row per step (EOS included);
    /// empty without attention.
    pub attention: Vec<Vec<f32>>,
}

impl Hypothesis {
    fn start() -> Self {
        Hypothesis {
            tokens: Vec::new(),
            logprob: 0.0,
            finished: false,
            attention: Vec::new(),
        }
    }

    /// Number of decoding steps it took: its tokens, plus EOS when finished.
    pub fn steps(&self) -> usize {
        self.tokens.len() + usize::from(self.finished)
    }

    /// The score beams are ranked by at the end: log-probability / steps^alpha.
    pub fn score(&self, alpha: f64) -> f64 {
        normalized_score(self.logprob, self.steps(), alpha)
    }

    fn extend(&self, token: u32, logp: f32, attention: Option<&[f32]>) -> Self {
        let mut h = self.clone();
        h.logprob += logp as f64;
        if token == EOS {
            h.finished = true;
        } else {
            h.tokens.push(token);
        }
        if let Some(w) = attention {
            h.attention.push(w.to_vec());
        }
        h
    }
}

/// Length-normalised score: `logprob / len^alpha` (alpha 0 = raw log-probability).
pub fn normalized_score(logprob: f64, len: usize, alpha: f64) -> f64 {
    if alpha == 0.0 {
        logprob
    } else {
        logprob / (len.max(1) as f64).powf(alpha)
    }
}

/// Index of the largest value; the lowest index among equals.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

fn host_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    t.to_dtype(DType::F32)?.to_vec2::<f32>()
}

/// Decodes a batch with the strategy of `spec`.
pub fn decode(model: &Seq2Seq, b: &BatchTensors, spec: &DecodeSpec) -> Result<Vec<Hypothesis>> {
    match spec.strategy {
        DecodeStrategy::Greedy => greedy(model, b, spec.max_len),
        DecodeStrategy::Beam => beam(model, b, spec.beam_width, spec.length_penalty, spec.max_len),
    }
}

/// Greedy decoding: the most probable next character at every step.
pub fn greedy(model: &Seq2Seq, b: &BatchTensors, max_len: usize) -> Result<Vec<Hypothesis>> {
    let enc = model.encode(b)?;
    let n = b.src.dim(0)?;
    let mut hyps = vec![Hypothesis::start(); n];
    let mut tokens = vec![SOS; n];
    let mut state = enc.state;
    for _ in 0..max_len {
        if hyps.iter().all(|h| h.finished) {
            break;
        }
        let (logp, next, w) = model.next_logp(&tokens, &state, enc.memory.as_ref())?;
        let rows = host_rows(&logp)?;
        let w = w.map(|w| host_rows(&w)).transpose()?;
        for (i, h) in hyps.iter_mut().enumerate() {
            if h.finished {
                continue;
            }
            let a = argmax(&rows[i]);
            *h = h.extend(a as u32, rows[i][a], w.as_ref().map(|w| w[i].as_slice()));
            tokens[i] = a as u32;
        }
        state = next;
    }
    Ok(hyps)
}

/// A beam entry: a hypothesis, or an empty slot when fewer candidates than slots exist.
type Slot = Option<Hypothesis>;

/// Beam search with `width` hypotheses per example. Beams are pruned by summed
/// log-probability; the final choice maximises `logprob / steps^alpha` over the finished
/// hypotheses and those cut at `max_len`.
///
/// Plain beam search can end below greedy decoding (the greedy prefix may be pruned and the
/// rivals that beat it then fall further), so greedy's own hypothesis joins the final
/// candidates: the beam's output never scores below greedy's, at the cost of one greedy pass.
/// Width 1 is exactly greedy.
pub fn beam(
    model: &Seq2Seq,
    b: &BatchTensors,
    width: usize,
    alpha: f64,
    max_len: usize,
) -> Result<Vec<Hypothesis>> {
    let k = width.max(1);
    let n = b.src.dim(0)?;
    let enc = model.encode(b)?;
    let rows_of: Vec<u32> = (0..n as u32)
        .flat_map(|i| std::iter::repeat_n(i, k))
        .collect();
    let enc = enc.select(&Tensor::from_vec(rows_of, n * k, model.device())?)?;
    let mut state = enc.state.clone();
    // Slot 0 of each example starts alive; the others fill from its first expansion.
    let mut beams: Vec<Vec<Slot>> = (0..n)
        .map(|_| {
            let mut v = vec![None; k];
            v[0] = Some(Hypothesis::start());
            v
        })
        .collect();
    let mut tokens = vec![SOS; n * k];
    for _ in 0..max_len {
        let live = beams.iter().flatten().flatten().any(|h| !h.finished);
        if !live {
            break;
        }
        let (logp, next, w) = model.next_logp(&tokens, &state, enc.memory.as_ref())?;
        let rows = host_rows(&logp)?;
        let w = w.map(|w| host_rows(&w)).transpose()?;
        let mut parents = Vec::with_capacity(n * k);
        for (i, slots) in beams.iter_mut().enumerate() {
            // (score, token logp for ties, parent slot, token; None = finished, carried over)
            let mut cands: Vec<(f64, f32, usize, Option<u32>)> = Vec::new();
            for (j, slot) in slots.iter().enumerate() {
                let Some(h) = slot else { continue };
                if h.finished {
                    cands.push((h.logprob, 0.0, j, None));
                    continue;
                }
                for (v, &lp) in rows[i * k + j].iter().enumerate() {
                    cands.push((h.logprob + lp as f64, lp, j, Some(v as u32)));
                }
            }
            // Stable sort: equal scores keep slot-then-token order, i.e. lower index wins.
            cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
            let mut fresh: Vec<Slot> = Vec::with_capacity(k);
            for &(_, lp, j, tok) in cands.iter().take(k) {
                let row = i * k + j;
                let parent = slots[j].as_ref();
                let h = match (parent, tok) {
                    (Some(p), Some(v)) => p.extend(v, lp, w.as_ref().map(|w| w[row].as_slice())),
                    (Some(p), None) => p.clone(),
                    (None, _) => continue,
                };
                parents.push(row as u32);
                tokens[i * k + fresh.len()] = tok.unwrap_or(EOS);
                fresh.push(Some(h));
            }
            while fresh.len() < k {
                parents.push((i * k) as u32);
                tokens[i * k + fresh.len()] = EOS;
                fresh.push(None);
            }
            *slots = fresh;
        }
        let idx = Tensor::from_vec(parents, n * k, model.device())?;
        state = next.select(&idx)?;
    }
    let mut best: Vec<Hypothesis> = beams
        .into_iter()
        .map(|slots| pick(slots.into_iter().flatten(), alpha))
        .collect();
    if k > 1 {
        for (b_hyp, g) in best.iter_mut().zip(greedy(model, b, max_len)?) {
            if g.score(alpha) > b_hyp.score(alpha) {
                *b_hyp = g;
            }
        }
    }
    Ok(best)
}

/// The best-scoring hypothesis; the first among equals.
fn pick(hyps: impl Iterator<Item = Hypothesis>, alpha: f64) -> Hypothesis {
    let mut best: Option<Hypothesis> = None;
    for h in hyps {
        if best
            .as_ref()
            .is_none_or(|b| h.score(alpha) > b.score(alpha))
        {
            best = Some(h);
        }
    }
    best.unwrap_or_else(Hypothesis::start)
}

/// Decodes every example of a split in batches of `batch_size`, in order.
pub fn decode_examples(
    model: &Seq2Seq,
    examples: &[Example],
    batch_size: usize,
    spec: &DecodeSpec,
) -> Result<Vec<Hypothesis>> {
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let bt = BatchTensors::new(&Batch::new(&refs), model.device())?;
        out.extend(decode(model, &bt, spec)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::seq2seq::Seq2SeqConfig;
    use crate::spec::Attention;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn model(attention: Attention, seed: u64) -> Seq2Seq {
        let cfg = Seq2SeqConfig {
            src_vocab: 12,
            tgt_vocab: 10,
            embedding_dim: 16,
            encoder_hidden: 8,
            decoder_hidden: 16,
            attention,
            dropout: 0.0,
            tie_embeddings: true,
        };
        Seq2Seq::new(cfg, &mut ChaCha8Rng::seed_from_u64(seed), &Device::Cpu).unwrap()
    }

    fn random_batch(n: usize, seed: u64) -> (Vec<Example>, BatchTensors) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let examples: Vec<Example> = (0..n)
            .map(|_| {
                let len = rng.random_range(1..9);
                Example {
                    src: (0..len).map(|_| rng.random_range(4..12)).collect(),
                    tgt: vec![],
                }
            })
            .collect();
        let refs: Vec<&Example> = examples.iter().collect();
        let bt = BatchTensors::new(&Batch::new(&refs), &Device::Cpu).unwrap();
        (examples, bt)
    }

    #[test]
    fn beam_of_width_one_is_greedy() {
        for att in [Attention::None, Attention::General] {
            let m = model(att, 2);
            let (_, bt) = random_batch(40, 3);
            let g = greedy(&m, &bt, 15).unwrap();
            for alpha in [0.0, 1.0] {
                let b = beam(&m, &bt, 1, alpha, 15).unwrap();
                assert_eq!(b, g, "{att:?} alpha={alpha}");
            }
        }
    }

    /// Scores are recomputed by teacher forcing, one example at a time, so this checks the
    /// decoders' bookkeeping as well as the search.
    #[test]
    fn beam_never_scores_below_greedy_and_often_above() {
        let mut better = 0;
        let mut total = 0;
        for (att, seed) in [
            (Attention::None, 4),
            (Attention::General, 5),
            (Attention::General, 6),
        ] {
            let m = model(att, seed);
            let (examples, bt) = random_batch(48, seed + 100);
            let g = greedy(&m, &bt, 12).unwrap();
            let b = beam(&m, &bt, 4, 0.0, 12).unwrap();
            for ((ex, g), b) in examples.iter().zip(&g).zip(&b) {
                let sg = m.sequence_logprob(&ex.src, &g.tokens, g.finished).unwrap();
                let sb = m.sequence_logprob(&ex.src, &b.tokens, b.finished).unwrap();
                assert!(
                    (sg - g.logprob).abs() < 1e-4,
                    "greedy bookkeeping {sg} vs {}",
                    g.logprob
                );
                assert!(
                    (sb - b.logprob).abs() < 1e-4,
                    "beam bookkeeping {sb} vs {}",
                    b.logprob
                );
                assert!(sb >= sg - 1e-4, "{att:?}: beam {sb} < greedy {sg}");
                total += 1;
                if sb > sg + 1e-4 {
                    better += 1;
                }
            }
        }
        assert!(
            better > 0,
            "beam never found a better sequence in {total} examples"
        );
    }

    #[test]
    fn attention_rows_follow_the_output() {
        let m = model(Attention::General, 7);
        let (examples, bt) = random_batch(5, 8);
        for h in beam(&m, &bt, 3, 1.0, 10)
            .unwrap()
            .iter()
            .chain(&greedy(&m, &bt, 10).unwrap())
        {
            assert_eq!(h.attention.len(), h.steps());
        }
        let g = greedy(&m, &bt, 10).unwrap();
        for (ex, h) in examples.iter().zip(&g) {
            for row in &h.attention {
                let s: f32 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-5);
                assert!(row[ex.src.len()..].iter().all(|&x| x == 0.0));
            }
        }
    }

    #[test]
    fn length_normalisation() {
        assert_eq!(normalized_score(-6.0, 3, 0.0), -6.0);
        assert_eq!(normalized_score(-6.0, 3, 1.0), -2.0);
        assert!((normalized_score(-8.0, 4, 0.5) + 4.0).abs() < 1e-12);
    }
}
