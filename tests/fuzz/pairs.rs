//! The TSV pairs reader (`data::pairs::read_pairs`) and what the translation task builds on
//! it (vocabularies, encoding, padded batches): never panics, never allocates more than a
//! small multiple of the file, reads what the format says (blank lines skipped, extra
//! columns ignored, `\r\n` endings) and names the file and line of a bad line.

use std::path::Path;

use orchestrate::data::pairs::{Batch, PairsError, ParallelData, normalize, read_pairs};
use proptest::prelude::*;

use crate::harness::{check_bounded, fuzz, peak_alloc, variant};
use crate::mutate::{edgy, mutated};

/// What reading `bytes` must give, by the format's definition: the pairs, or the 1-based line
/// of the first line that is not UTF-8 or lacks a column.
fn reference(bytes: &[u8], src: usize, tgt: usize) -> Result<Vec<(String, String)>, usize> {
    let mut pairs = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|_| i + 1)?;
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        match (cols.get(src), cols.get(tgt)) {
            (Some(s), Some(t)) => pairs.push((normalize(s), normalize(t))),
            _ => return Err(i + 1),
        }
    }
    Ok(pairs)
}

fn seeds() -> Vec<Vec<u8>> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spa-eng-mini");
    let mut out: Vec<Vec<u8>> = ["val-eng-spa.txt", "test-eng-spa.txt"]
        .iter()
        .map(|f| std::fs::read(fixtures.join(f)).unwrap())
        .collect();
    out.extend(
        [
            &b"go .\tve .\n"[..],
            b"hi .\thola .\r\n\r\n\t\n  \nbye\tadios\textra\tcolumns\n",
            "\u{130}stanbul\t\u{df}tra\u{df}e\n\u{bf}qu\u{e9}?\t\u{a1}ya!\n".as_bytes(),
            b"no tab here\n",
            b"\t\n\t\t\n",
            b"a\tb\xff\n",
        ]
        .iter()
        .map(|b| b.to_vec()),
    );
    out
}

/// A column index as a spec can give one: usually a small one, sometimes any TOML integer.
fn column() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0usize..4, 1 => edgy().prop_map(|v| (v & i64::MAX as u64) as usize)]
}

#[test]
fn fuzz_tsv_pairs_reader() {
    let dir = crate::harness::scratch();
    let path = dir.path().join("train-eng-spa.txt");
    let case = (mutated(seeds(), 512), column(), column());
    fuzz("tsv", 6000, case, |(input, src, tgt), tally| {
        std::fs::write(&path, &input.bytes).unwrap();
        let (result, peak) = peak_alloc(|| read_pairs(&path, src, tgt));
        check_bounded("read_pairs", peak, input.bytes.len(), 24)?;
        let expected = reference(&input.bytes, src, tgt);
        match result {
            Ok(pairs) => {
                tally.add("ok");
                let got: Vec<(String, String)> = pairs
                    .iter()
                    .map(|p| (p.source.clone(), p.target.clone()))
                    .collect();
                prop_assert_eq!(Ok(got), expected);
                // What translation builds on it: vocabularies round-trip every training
                // sentence and every example fits one padded batch.
                let data = ParallelData::from_pairs(pairs.clone(), pairs.clone(), pairs);
                for (p, e) in data.train.pairs.iter().zip(&data.train.examples) {
                    prop_assert_eq!(&data.src_vocab.decode(&e.src), &p.source);
                    prop_assert_eq!(&data.tgt_vocab.decode(&e.tgt), &p.target);
                }
                let all: Vec<_> = data.test.examples.iter().collect();
                let batch = Batch::new(&all);
                prop_assert_eq!(batch.size, all.len());
                let _ = batch.rows(0..all.len() / 2);
            }
            Err(e) => {
                tally.add(variant(&e));
                let msg = e.to_string();
                prop_assert!(
                    msg.contains("train-eng-spa.txt"),
                    "error does not name the file: {msg}"
                );
                match &e {
                    PairsError::Utf8 { line, .. } | PairsError::MissingColumn { line, .. } => {
                        prop_assert_eq!(Err(*line), expected.clone());
                        prop_assert!(
                            msg.contains(&format!(":{line}:")),
                            "error does not name line {}: {}",
                            line,
                            msg
                        );
                    }
                    PairsError::Empty { .. } => prop_assert_eq!(expected, Ok(vec![])),
                    other => prop_assert!(false, "unexpected error for a readable file: {other}"),
                }
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_vocab_decode_of_any_ids() {
    // A model's output is any index; decoding and labelling it must not panic.
    let case = (
        proptest::collection::vec(any::<char>(), 0..40),
        proptest::collection::vec(prop_oneof![0u32..60, any::<u32>()], 0..60),
    );
    fuzz("vocab", 5000, case, |(chars, ids), tally| {
        let text: String = chars.iter().collect();
        let v = orchestrate::data::vocab::Vocab::build([text.as_str()]);
        let out = v.decode(&ids);
        for &id in &ids {
            let _ = v.label(id);
        }
        prop_assert!(out.chars().count() <= ids.len());
        tally.add("ok");
        Ok(())
    });
}
