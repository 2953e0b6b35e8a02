use super::*;
use crate::data::pairs::Example;
use crate::models::seq2seq::BatchTensors;
use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A tiny translator; untied, its embeddings (6) are narrower than the decoder (8).
fn model(attention: Attention, tie: bool) -> Seq2Seq {
    let cfg = Seq2SeqConfig {
        src_vocab: 11,
        tgt_vocab: 9,
        embedding_dim: if tie { 8 } else { 6 },
        encoder_hidden: 4,
        decoder_hidden: 8,
        attention,
        dropout: 0.3,
        tie_embeddings: tie,
    };
    Seq2Seq::new(cfg, &mut ChaCha8Rng::seed_from_u64(1), &Device::Cpu).unwrap()
}

/// Sentence pairs of varied lengths (ties included), so packing reorders the rows
/// differently on the two sides and every row ends at another step.
fn examples(n: usize, seed: u64) -> Vec<Example> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let (ls, lt) = (rng.random_range(1..8), rng.random_range(0..6));
            Example {
                src: (0..ls).map(|_| rng.random_range(3..11)).collect(),
                tgt: (0..lt).map(|_| rng.random_range(3..9)).collect(),
            }
        })
        .collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// The hand-written step's loss and gradients against Candle's autograd on the tensor
/// path, with the same dropout masks.
fn compare(attention: Attention, tie: bool, p: f64) {
    let m = model(attention, tie);
    let ex = examples(13, 4);
    let refs: Vec<&Example> = ex.iter().collect();
    let batch = Batch::new(&refs);
    let masks = (p > 0.0).then(|| StepMasks::new(p, 77));
    let bt = BatchTensors::new(&batch, &Device::Cpu).unwrap();
    let (loss, count) = m.loss(&bt, masks.as_ref()).unwrap();
    let want = loss.backward().unwrap();
    let mut grads = Grads::zeros(m.config());
    let mut ws = Workspace::default();
    let got = train_step(&m, &mut ws, &batch, 0, masks.as_ref(), count, &mut grads).unwrap();
    let label = format!("{attention:?} tie={tie} p={p}");
    assert_eq!(got.tokens, count, "{label}");
    let l = loss.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (got.loss - l).abs() <= 1e-5 * l,
        "{label}: loss {} vs {l}",
        got.loss
    );
    for ((name, var), (_, g)) in m
        .params()
        .named()
        .iter()
        .zip(grads.into_tensors(&m).unwrap())
    {
        let w = flat(want.get(var.as_tensor()).unwrap());
        let g = flat(&g);
        let scale = w.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-3);
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!(
                (a - b).abs() <= 2e-5 * scale,
                "{label} {name}[{i}]: {a} vs autograd {b} (largest {scale})"
            );
        }
    }
}

#[test]
fn loss_and_gradients_equal_autograd_without_dropout() {
    for (attention, tie) in [
        (Attention::None, true),
        (Attention::General, true),
        (Attention::General, false),
    ] {
        compare(attention, tie, 0.0);
    }
}

#[test]
fn loss_and_gradients_equal_autograd_with_dropout() {
    for (attention, tie) in [
        (Attention::None, true),
        (Attention::General, true),
        (Attention::None, false),
    ] {
        compare(attention, tie, 0.3);
    }
}

/// Two shards (each with its own rows of the masks) add up to the whole batch, and a step
/// repeats bit for bit, also in a workspace left dirty by another batch.
#[test]
fn shards_add_up_and_steps_repeat_bit_for_bit() {
    let m = model(Attention::General, true);
    let ex = examples(20, 8);
    let refs: Vec<&Example> = ex.iter().collect();
    let batch = Batch::new(&refs);
    let masks = StepMasks::new(0.3, 5);
    let denom = batch.tokens();
    let run = |ws: &mut Workspace| {
        let mut g = Grads::zeros(m.config());
        let l = train_step(&m, ws, &batch, 0, Some(&masks), denom, &mut g).unwrap();
        (l, g.into_tensors(&m).unwrap())
    };
    let mut ws = Workspace::default();
    let (whole, gw) = run(&mut ws);
    let other = examples(7, 99);
    let other_refs: Vec<&Example> = other.iter().collect();
    let mut g = Grads::zeros(m.config());
    train_step(&m, &mut ws, &Batch::new(&other_refs), 0, None, 10.0, &mut g).unwrap();
    let (again, ga) = run(&mut ws);
    assert_eq!(whole, again);
    for ((_, a), (_, b)) in gw.iter().zip(&ga) {
        assert_eq!(flat(a), flat(b));
    }
    let mut g0 = Grads::zeros(m.config());
    let mut g1 = Grads::zeros(m.config());
    let (a, b) = (batch.rows(0..9), batch.rows(9..20));
    let l0 = train_step(&m, &mut ws, &a, 0, Some(&masks), denom, &mut g0).unwrap();
    let l1 = train_step(
        &m,
        &mut Workspace::default(),
        &b,
        9,
        Some(&masks),
        denom,
        &mut g1,
    )
    .unwrap();
    assert_eq!(l0.tokens + l1.tokens, whole.tokens);
    assert!((l0.loss + l1.loss - whole.loss).abs() < 1e-6);
    g0.add(&mut g1);
    for ((_, a), (_, b)) in g0.into_tensors(&m).unwrap().iter().zip(&gw) {
        for (x, y) in flat(a).iter().zip(flat(b)) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
}
