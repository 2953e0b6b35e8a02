//! Parallel text as TSV (`source<TAB>target`, columns configurable), the homework's
//! normalisation and length filter, and padded batches with masks.
//!
//! Errors name the file and, where one is to blame, the line: a user with a 10,000-line file
//! must be able to find the bad line without a debugger.

use super::vocab::{EOS, PAD, SOS, Vocab};
use crate::spec::DataSpec;
use rand::Rng;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};

/// Why parallel text could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PairsError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line is not valid UTF-8.
    #[error("{path}:{line}: invalid UTF-8 ({source})")]
    Utf8 {
        path: PathBuf,
        line: usize,
        #[source]
        source: std::str::Utf8Error,
    },
    /// A line has fewer columns than `data.source_column` / `data.target_column` need.
    #[error(
        "{path}:{line}: data.{key} = {column} needs {need} tab-separated columns, the line has {found}"
    )]
    MissingColumn {
        path: PathBuf,
        line: usize,
        key: &'static str,
        column: usize,
        need: usize,
        found: usize,
    },
    /// The file holds no sentence pair at all.
    #[error("{path}: the file holds no sentence pairs")]
    Empty { path: PathBuf },
    /// Every pair is at least `data.max_len` characters long.
    #[error("{path}: all {read} pairs are dropped by data.max_len = {max_len}")]
    AllFiltered {
        path: PathBuf,
        read: usize,
        max_len: usize,
    },
    /// A split's file name is empty in the spec.
    #[error("data.{key} is empty: tsv-pairs needs a {key} file")]
    NoFile { key: &'static str },
}

/// One sentence pair after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub source: String,
    pub target: String,
}

/// The homework's normalisation as far as it matters here: lower-case and strip. On the
/// homework files its only effect is removing the space that `¿`/`¡` left in front of
/// Spanish sentences.
pub fn normalize(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Reads one TSV file; blank lines are skipped, extra columns ignored.
pub fn read_pairs(
    path: &Path,
    source_column: usize,
    target_column: usize,
) -> Result<Vec<Pair>, PairsError> {
    let read_error = |source| PairsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let (file, len) = super::open_data_file(path).map_err(read_error)?;
    // A regular file's size bounds what we hold; one that grows meanwhile is cut there.
    let mut bytes = Vec::with_capacity(len.min(1 << 30) as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(file, len), &mut bytes)
        .map_err(read_error)?;
    let need = source_column.max(target_column) + 1;
    let mut pairs = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|source| PairsError::Utf8 {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        for (key, column) in [
            ("source_column", source_column),
            ("target_column", target_column),
        ] {
            if column >= cols.len() {
                return Err(PairsError::MissingColumn {
                    path: path.to_path_buf(),
                    line: i + 1,
                    key,
                    column,
                    need,
                    found: cols.len(),
                });
            }
        }
        pairs.push(Pair {
            source: normalize(cols[source_column]),
            target: normalize(cols[target_column]),
        });
    }
    if pairs.is_empty() {
        return Err(PairsError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(pairs)
}

/// Keeps pairs whose source and target are both shorter than `max_len` characters
/// (0 = no limit) and whose source is not empty (an empty source has nothing to encode).
pub fn filter_len(pairs: Vec<Pair>, max_len: usize) -> Vec<Pair> {
    pairs
        .into_iter()
        .filter(|p| {
            let (s, t) = (p.source.chars().count(), p.target.chars().count());
            s > 0 && (max_len == 0 || (s < max_len && t < max_len))
        })
        .collect()
}

/// One pair as vocabulary indices, without SOS or EOS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub src: Vec<u32>,
    pub tgt: Vec<u32>,
}

/// One split: the normalised text (for sample tables and the metric's gold strings) and its
/// encoding.
#[derive(Debug, Clone)]
pub struct Split {
    pub pairs: Vec<Pair>,
    pub examples: Vec<Example>,
}

/// Train, dev and test splits with the vocabularies built on train.
#[derive(Debug, Clone)]
pub struct ParallelData {
    pub train: Split,
    pub dev: Split,
    pub test: Split,
    pub src_vocab: Vocab,
    pub tgt_vocab: Vocab,
}

fn load_split(
    spec: &DataSpec,
    key: &'static str,
    file: &str,
    limit: usize,
) -> Result<Vec<Pair>, PairsError> {
    if file.is_empty() {
        return Err(PairsError::NoFile { key });
    }
    let path = Path::new(&spec.dir).join(file);
    let mut pairs = read_pairs(&path, spec.source_column, spec.target_column)?;
    let read = pairs.len();
    pairs = filter_len(pairs, spec.max_len);
    if pairs.is_empty() {
        return Err(PairsError::AllFiltered {
            path,
            read,
            max_len: spec.max_len,
        });
    }
    if limit > 0 {
        pairs.truncate(limit);
    }
    Ok(pairs)
}

/// Checks that the train, dev and test files `spec` names are there and are regular files,
/// without reading them: what validation can know before a run starts.
pub fn check_files(spec: &DataSpec) -> Result<(), PairsError> {
    for (key, file) in [
        ("train", &spec.train),
        ("dev", &spec.dev),
        ("test", &spec.test),
    ] {
        if file.is_empty() {
            return Err(PairsError::NoFile { key });
        }
        let path = Path::new(&spec.dir).join(file);
        super::open_data_file(&path).map_err(|source| PairsError::Read { path, source })?;
    }
    Ok(())
}

/// The training pairs exactly as training keeps them: normalised, filtered by `max_len`,
/// cut at `train_limit`.
pub fn load_train(spec: &DataSpec) -> Result<Vec<Pair>, PairsError> {
    load_split(spec, "train", &spec.train, spec.train_limit)
}

/// The source and target vocabularies of `train`: the ones training builds (and `inspect`
/// counts).
pub fn vocabularies(train: &[Pair]) -> (Vocab, Vocab) {
    (
        Vocab::build(train.iter().map(|p| p.source.as_str())),
        Vocab::build(train.iter().map(|p| p.target.as_str())),
    )
}

impl ParallelData {
    /// Reads `data.dir`/{train,dev,test}, filters, limits and encodes them.
    pub fn load(spec: &DataSpec) -> Result<Self, PairsError> {
        let train = load_train(spec)?;
        let dev = load_split(spec, "dev", &spec.dev, spec.test_limit)?;
        let test = load_split(spec, "test", &spec.test, spec.test_limit)?;
        Ok(Self::from_pairs(train, dev, test))
    }

    /// Builds the vocabularies on `train` and encodes all three splits.
    pub fn from_pairs(train: Vec<Pair>, dev: Vec<Pair>, test: Vec<Pair>) -> Self {
        let (src_vocab, tgt_vocab) = vocabularies(&train);
        let encode = |pairs: Vec<Pair>| Split {
            examples: pairs
                .iter()
                .map(|p| Example {
                    src: src_vocab.encode(&p.source),
                    tgt: tgt_vocab.encode(&p.target),
                })
                .collect(),
            pairs,
        };
        ParallelData {
            train: encode(train),
            dev: encode(dev),
            test: encode(test),
            src_vocab,
            tgt_vocab,
        }
    }
}

/// A padded batch on the host, row-major `[batch, time]`; the model moves it to its device.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub size: usize,
    /// Longest source in the batch (S).
    pub src_len: usize,
    /// `[size, src_len]` source indices, PAD after each sentence.
    pub src: Vec<u32>,
    /// `[size, src_len]` 1.0 on characters, 0.0 on padding.
    pub src_mask: Vec<f32>,
    /// Real length of each source.
    pub src_lens: Vec<usize>,
    /// Longest target plus one (T): room for SOS on the input side, EOS on the output side.
    pub tgt_len: usize,
    /// `[size, tgt_len]` decoder inputs: SOS + characters, then PAD.
    pub tgt_in: Vec<u32>,
    /// `[size, tgt_len]` decoder outputs: characters + EOS, then PAD.
    pub tgt_out: Vec<u32>,
    /// `[size, tgt_len]` 1.0 where `tgt_out` is not padding.
    pub tgt_mask: Vec<f32>,
    /// Target tokens of each row: its characters and EOS (the 1.0s of its `tgt_mask` row).
    pub tgt_lens: Vec<usize>,
}

impl Batch {
    /// Pads `examples` into one batch.
    pub fn new(examples: &[&Example]) -> Self {
        let size = examples.len();
        let src_len = examples.iter().map(|e| e.src.len()).max().unwrap_or(0);
        let tgt_len = examples.iter().map(|e| e.tgt.len() + 1).max().unwrap_or(1);
        let mut b = Batch {
            size,
            src_len,
            src: vec![PAD; size * src_len],
            src_mask: vec![0.0; size * src_len],
            src_lens: examples.iter().map(|e| e.src.len()).collect(),
            tgt_len,
            tgt_in: vec![PAD; size * tgt_len],
            tgt_out: vec![PAD; size * tgt_len],
            tgt_mask: vec![0.0; size * tgt_len],
            tgt_lens: examples.iter().map(|e| e.tgt.len() + 1).collect(),
        };
        for (i, e) in examples.iter().enumerate() {
            for (t, &id) in e.src.iter().enumerate() {
                b.src[i * src_len + t] = id;
                b.src_mask[i * src_len + t] = 1.0;
            }
            let row = i * tgt_len;
            b.tgt_in[row] = SOS;
            for (t, &id) in e.tgt.iter().enumerate() {
                b.tgt_in[row + t + 1] = id;
                b.tgt_out[row + t] = id;
            }
            b.tgt_out[row + e.tgt.len()] = EOS;
            for t in 0..=e.tgt.len() {
                b.tgt_mask[row + t] = 1.0;
            }
        }
        b
    }

    /// Rows `rows` of the batch, padded to this batch's lengths (not their own), so every
    /// per-row tensor of the slice is the matching rows of the whole batch's tensor.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Batch {
        let (s, t) = (self.src_len, self.tgt_len);
        // Clamped to the batch (an empty batch past the end) rather than panicking.
        let (a, z) = (
            rows.start.min(self.size),
            rows.end.min(self.size).max(rows.start.min(self.size)),
        );
        Batch {
            size: z - a,
            src_len: s,
            src: self.src[a * s..z * s].to_vec(),
            src_mask: self.src_mask[a * s..z * s].to_vec(),
            src_lens: self.src_lens[a..z].to_vec(),
            tgt_len: t,
            tgt_in: self.tgt_in[a * t..z * t].to_vec(),
            tgt_out: self.tgt_out[a * t..z * t].to_vec(),
            tgt_mask: self.tgt_mask[a * t..z * t].to_vec(),
            tgt_lens: self.tgt_lens[a..z].to_vec(),
        }
    }

    /// Target tokens in the batch (EOS included): what its loss is averaged over.
    pub fn tokens(&self) -> f64 {
        self.tgt_lens.iter().sum::<usize>() as f64
    }
}

/// Indices of `n` examples cut into batches of `batch_size` (the last may be smaller),
/// shuffled by `rng` when given. Every example is used once per epoch.
pub fn batch_indices<R: Rng>(n: usize, batch_size: usize, rng: Option<&mut R>) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    if let Some(rng) = rng {
        idx.shuffle(rng);
    }
    idx.chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A slice of rows keeps the whole batch's padding, so it is exactly those rows.
    #[test]
    fn rows_keep_the_whole_batch_lengths() {
        let ex = [
            Example {
                src: vec![4, 5, 6],
                tgt: vec![4],
            },
            Example {
                src: vec![7],
                tgt: vec![5, 6, 7],
            },
            Example {
                src: vec![8, 9],
                tgt: vec![8, 9],
            },
        ];
        let refs: Vec<&Example> = ex.iter().collect();
        let all = Batch::new(&refs);
        let tail = all.rows(1..3);
        assert_eq!((tail.size, tail.src_len, tail.tgt_len), (2, 3, 4));
        assert_eq!(tail.src, all.src[3..9].to_vec());
        assert_eq!(tail.src_lens, vec![1, 2]);
        assert_eq!(tail.tgt_out, all.tgt_out[4..12].to_vec());
        assert_eq!(tail.tgt_mask, all.tgt_mask[4..12].to_vec());
        // Shorter than the whole batch's own padding would give on its own.
        assert_ne!(tail, Batch::new(&refs[1..]));
        assert_eq!(all.rows(0..3), all);
    }

    #[test]
    fn reads_homework_format_swapping_columns_and_stripping() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "t.txt",
            b"is that tom ?\t es ese tom ?\t42\nHello .\tHola .\t42\n\n",
        );
        let pairs = read_pairs(&p, 1, 0).unwrap();
        assert_eq!(
            pairs,
            vec![
                Pair {
                    source: "es ese tom ?".into(),
                    target: "is that tom ?".into()
                },
                Pair {
                    source: "hola .".into(),
                    target: "hello .".into()
                },
            ]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.tsv", b"a\tb\nonly-one-column\n");
        let e = read_pairs(&p, 1, 0).unwrap_err().to_string();
        assert!(e.contains("bad.tsv:2:"), "{e}");
        assert!(e.contains("data.source_column = 1"), "{e}");

        let p = write(dir.path(), "utf.tsv", b"a\tb\nc\t\xff\xfe\n");
        let e = read_pairs(&p, 1, 0).unwrap_err().to_string();
        assert!(e.contains("utf.tsv:2: invalid UTF-8"), "{e}");

        let p = write(dir.path(), "empty.tsv", b"\n\n");
        let e = read_pairs(&p, 1, 0).unwrap_err();
        assert!(matches!(e, PairsError::Empty { .. }), "{e}");

        let e = read_pairs(&dir.path().join("missing.tsv"), 1, 0).unwrap_err();
        assert!(e.to_string().contains("missing.tsv: cannot read"), "{e}");
    }

    #[test]
    fn max_len_keeps_only_strictly_shorter_pairs() {
        let p = |s: &str, t: &str| Pair {
            source: s.into(),
            target: t.into(),
        };
        let kept = filter_len(vec![p("abcd", "ab"), p("abc", "abc"), p("", "x")], 4);
        assert_eq!(kept, vec![p("abc", "abc")]);
    }

    #[test]
    fn batch_pads_and_masks() {
        let a = Example {
            src: vec![5, 6, 7],
            tgt: vec![8],
        };
        let b = Example {
            src: vec![9],
            tgt: vec![10, 11],
        };
        let batch = Batch::new(&[&a, &b]);
        assert_eq!((batch.src_len, batch.tgt_len), (3, 3));
        assert_eq!(batch.src, vec![5, 6, 7, 9, PAD, PAD]);
        assert_eq!(batch.src_mask, vec![1., 1., 1., 1., 0., 0.]);
        assert_eq!(batch.src_lens, vec![3, 1]);
        assert_eq!(batch.tgt_in, vec![SOS, 8, PAD, SOS, 10, 11]);
        assert_eq!(batch.tgt_out, vec![8, EOS, PAD, 10, 11, EOS]);
        assert_eq!(batch.tgt_mask, vec![1., 1., 0., 1., 1., 1.]);
        assert_eq!((batch.tgt_lens.clone(), batch.tokens()), (vec![2, 3], 5.0));
        assert_eq!(batch.rows(1..2).tgt_lens, vec![3]);
    }

    #[test]
    fn vocab_is_built_on_train_only() {
        let p = |s: &str, t: &str| Pair {
            source: s.into(),
            target: t.into(),
        };
        let data = ParallelData::from_pairs(vec![p("ab", "xy")], vec![p("az", "xq")], vec![]);
        assert_eq!(data.src_vocab.chars(), &['a', 'b']);
        assert_eq!(data.dev.examples[0].src, vec![4, crate::data::vocab::UNK]);
        assert_eq!(data.dev.examples[0].tgt, vec![4, crate::data::vocab::UNK]);
    }

    #[test]
    fn batches_cover_every_example_once_and_shuffle_is_seeded() {
        let mut r1 = ChaCha8Rng::seed_from_u64(7);
        let mut r2 = ChaCha8Rng::seed_from_u64(7);
        let a = batch_indices(10, 3, Some(&mut r1));
        let b = batch_indices(10, 3, Some(&mut r2));
        assert_eq!(a, b);
        assert_eq!(a.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
        let mut all: Vec<usize> = a.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
}
