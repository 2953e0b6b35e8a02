//! One seq2seq training step's forward and backward passes: by hand on the CPU
//! ([`crate::models::seq2seq_cpu`]), larger batches in data-parallel shards that the run's
//! threads share, and through Candle's autograd on other devices.
//!
//! A step is a few hundred small products (one `[B, H] x [H, 4H]` per time step, about
//! 4 M multiply-adds at the homework's sizes). Split product by product across two threads
//! they ran slower than on one: the hand-over costs more than the work
//! (`bench/notes/seq2seq.md`). Splitting the *batch* instead gives each thread whole
//! forward and backward passes over its rows. Each shard divides its summed token losses by
//! the whole batch's token count and makes its rows of the step's dropout masks (a mask
//! element depends on its batch row, not on the shard), so the shards' gradients add up to
//! the gradient of the whole batch's loss.
//!
//! How a batch is cut depends on its size alone ([`SHARD_ROWS`] sentences a shard), never
//! on the thread count: the threads only decide how many shards run at once, and the
//! gradients are added in shard order. So a run gives the same bits on one thread or two,
//! whatever `--jobs` leaves it.

use crate::data::pairs::Batch;
use crate::models::seeded::Dropout;
use crate::models::seq2seq::{BatchTensors, Seq2Seq};
use crate::models::seq2seq_cpu::{Grads, Workspace, train_step};
use crate::train::optim::Gradients;
use candle_core::backprop::GradStore;
use candle_core::{Error, Result, Tensor};
use std::sync::{Mutex, PoisonError};

/// Sentences per shard: a batch of up to this many runs whole (batch 8 has nothing to gain
/// from a second thread), a larger one is cut into `ceil(rows / SHARD_ROWS)` shards of near
/// equal size (the homework's 64: two of 32, one per core on two cores).
pub const SHARD_ROWS: usize = 32;

/// A training step's gradients: Candle's autograd store, or the CPU step's, by variable.
pub enum StepGrads {
    Autograd(GradStore),
    ByVar(Vec<(Tensor, Tensor)>),
}

impl Gradients for StepGrads {
    fn of(&self, var: &Tensor) -> Option<&Tensor> {
        match self {
            StepGrads::Autograd(g) => g.get(var),
            StepGrads::ByVar(gs) => gs.iter().find(|(v, _)| v.id() == var.id()).map(|(_, g)| g),
        }
    }
}

/// A training step's loss (mean per target token over the batch), its token count and
/// the gradients of every variable.
pub struct StepOutput {
    pub loss: f64,
    pub tokens: f64,
    pub grads: StepGrads,
}

/// Runs training steps on the run's threads, keeping each thread's buffers from step to
/// step.
pub struct StepRunner {
    /// A one-thread pool for work that must not be split by rayon (the optimizer step);
    /// `None` when the run has one thread anyway.
    pool: Option<rayon::ThreadPool>,
    /// One workspace per thread.
    workspaces: Vec<Mutex<Workspace>>,
}

impl Default for StepRunner {
    fn default() -> Self {
        StepRunner::new()
    }
}

impl StepRunner {
    /// A runner for the process's thread count (`RAYON_NUM_THREADS`, set from
    /// `train.threads` when the worker starts).
    pub fn new() -> Self {
        StepRunner::with_threads(candle_core::utils::get_num_threads())
    }

    /// A runner for `threads` threads.
    pub fn with_threads(threads: usize) -> Self {
        let pool = (threads > 1)
            .then(|| rayon::ThreadPoolBuilder::new().num_threads(1).build().ok())
            .flatten();
        StepRunner {
            workspaces: (0..threads.max(1)).map(|_| Mutex::default()).collect(),
            pool,
        }
    }

    /// How many shards a batch of `rows` sentences is split into (whatever the threads).
    pub fn shards(rows: usize) -> usize {
        rows.div_ceil(SHARD_ROWS).max(1)
    }

    /// Runs `f` on one thread without rayon splitting its work: for the optimizer step.
    pub fn in_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// The loss and gradients of one teacher-forced step over `batch`, with the next
    /// step's dropout masks of `dropout` (the same masks, sharded or not, on any device).
    pub fn step(
        &self,
        model: &Seq2Seq,
        batch: &Batch,
        dropout: &mut Dropout,
    ) -> Result<StepOutput> {
        let masks = dropout.next_step();
        let device = model.device();
        if !device.is_cpu() {
            let bt = BatchTensors::new(batch, device)?;
            let (loss, tokens) = model.loss(&bt, masks.as_ref())?;
            return Ok(StepOutput {
                loss: loss.to_scalar::<f32>()? as f64,
                tokens,
                grads: StepGrads::Autograd(loss.backward()?),
            });
        }
        let denom = batch.tokens();
        let shards = StepRunner::shards(batch.size);
        let threads = self.workspaces.len().min(shards);
        let rows = |k: usize| k * batch.size / shards..(k + 1) * batch.size / shards;
        // Thread `i` runs shards i, i + threads, ... in its own workspace.
        let work = |i: usize| -> Vec<Result<(f64, f64, Grads)>> {
            let mut ws = self.workspaces[i]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (i..shards)
                .step_by(threads)
                .map(|k| {
                    let mut grads = Grads::zeros(model.config());
                    let r = rows(k);
                    let part;
                    let shard = if shards == 1 {
                        batch
                    } else {
                        part = batch.rows(r.clone());
                        &part
                    };
                    let l = train_step(
                        model,
                        &mut ws,
                        shard,
                        r.start,
                        masks.as_ref(),
                        denom,
                        &mut grads,
                    )?;
                    Ok((l.loss, l.tokens, grads))
                })
                .collect()
        };
        let per_thread = std::thread::scope(|s| {
            let handles: Vec<_> = (1..threads).map(|i| s.spawn(move || work(i))).collect();
            let mut out = vec![work(0)];
            for h in handles {
                out.push(h.join().unwrap_or_else(|_| {
                    vec![Err(Error::Msg("seq2seq shard: its thread panicked".into()))]
                }))
            }
            out
        });
        // Back in shard order: shard k is the (k / threads)-th of thread k % threads.
        let mut per_thread: Vec<_> = per_thread.into_iter().map(Vec::into_iter).collect();
        let results: Vec<_> = (0..shards)
            .filter_map(|k| per_thread[k % threads].next())
            .collect();
        let mut results = results.into_iter();
        let Some(first) = results.next() else {
            candle_core::bail!("seq2seq shard: no shard ran")
        };
        let (mut loss, mut tokens, mut grads) = first?;
        // Fixed order (shard 0, 1, ...): the sum is the same bits every run.
        for r in results {
            let (l, n, mut g) = r?;
            loss += l;
            tokens += n;
            grads.add(&mut g);
        }
        Ok(StepOutput {
            loss,
            tokens,
            grads: StepGrads::ByVar(grads.into_tensors(model)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::pairs::Example;
    use crate::models::seq2seq::Seq2SeqConfig;
    use crate::spec::Attention;
    use candle_core::Device;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn model(attention: Attention, dropout: f64) -> Seq2Seq {
        let cfg = Seq2SeqConfig {
            src_vocab: 12,
            tgt_vocab: 10,
            embedding_dim: 8,
            encoder_hidden: 4,
            decoder_hidden: 8,
            attention,
            dropout,
            tie_embeddings: true,
        };
        Seq2Seq::new(cfg, &mut ChaCha8Rng::seed_from_u64(5), &Device::Cpu).unwrap()
    }

    /// 40 sentence pairs of varied lengths, so shards have different longest rows.
    fn batch() -> Batch {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let ex: Vec<Example> = (0..40)
            .map(|_| {
                use rand::Rng;
                let (ls, lt) = (rng.random_range(1..9), rng.random_range(1..7));
                Example {
                    src: (0..ls).map(|_| rng.random_range(4..12)).collect(),
                    tgt: (0..lt).map(|_| rng.random_range(4..10)).collect(),
                }
            })
            .collect();
        let refs: Vec<&Example> = ex.iter().collect();
        Batch::new(&refs)
    }

    fn grads(m: &Seq2Seq, out: &StepOutput) -> Vec<(String, Vec<f32>)> {
        m.params()
            .named()
            .iter()
            .map(|(name, var)| {
                let g = out
                    .grads
                    .of(var.as_tensor())
                    .unwrap_or_else(|| panic!("{name}"));
                (name.clone(), g.flatten_all().unwrap().to_vec1().unwrap())
            })
            .collect()
    }

    /// One, two or three threads give the same bits (the batch is cut by its size alone
    /// and the shards' gradients are added in shard order); the two shards add up to the
    /// whole batch's loss and gradients within rounding (dropout included: each shard makes
    /// its rows of the same masks); the dropout stream moves by one key a step.
    #[test]
    fn a_step_is_the_same_bits_on_any_thread_count_and_adds_up_to_the_whole_batch() {
        let b = batch();
        assert_eq!(StepRunner::shards(b.size), 2);
        for (att, p) in [
            (Attention::General, 0.3),
            (Attention::None, 0.3),
            (Attention::General, 0.0),
        ] {
            let m = model(att, p);
            let run = |threads: usize| {
                let runner = StepRunner::with_threads(threads);
                let mut d = Dropout::new(p, ChaCha8Rng::seed_from_u64(11));
                let out = runner.step(&m, &b, &mut d).unwrap();
                let next = d.next_step();
                (out, next)
            };
            let (one, next1) = run(1);
            for threads in [2, 3] {
                let (other, next) = run(threads);
                assert_eq!(next, next1, "{att:?}: dropout stream moved differently");
                assert_eq!(
                    other.loss.to_bits(),
                    one.loss.to_bits(),
                    "{att:?} {threads}"
                );
                assert_eq!(other.tokens, one.tokens);
                assert_eq!(
                    grads(&m, &other),
                    grads(&m, &one),
                    "{att:?} {threads} threads"
                );
            }
            let masks = Dropout::new(p, ChaCha8Rng::seed_from_u64(11)).next_step();
            let mut whole = Grads::zeros(m.config());
            let denom = b.tokens();
            let mut ws = Workspace::default();
            let l = train_step(&m, &mut ws, &b, 0, masks.as_ref(), denom, &mut whole).unwrap();
            assert_eq!(l.tokens, one.tokens);
            assert!(
                (l.loss - one.loss).abs() < 1e-6,
                "{att:?}: {} vs {}",
                l.loss,
                one.loss
            );
            let whole = StepOutput {
                loss: l.loss,
                tokens: l.tokens,
                grads: StepGrads::ByVar(whole.into_tensors(&m).unwrap()),
            };
            for ((name, a), (_, b)) in grads(&m, &one).iter().zip(&grads(&m, &whole)) {
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                        "{att:?} {name}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_batch_is_cut_by_its_size_alone() {
        assert_eq!(StepRunner::shards(8), 1);
        assert_eq!(StepRunner::shards(32), 1);
        assert_eq!(StepRunner::shards(33), 2);
        assert_eq!(StepRunner::shards(64), 2);
        assert_eq!(StepRunner::shards(100), 4);
        assert_eq!(StepRunner::shards(0), 1);
    }
}
