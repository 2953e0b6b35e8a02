//! `inspect`'s arithmetic: per-layer output shapes and parameter counts of the spec's model,
//! computed from the spec alone (no Candle), so planning stays free of tensor state.
//!
//! The layouts mirror the models the training code builds:
//! - cnn: per `[[model.conv]]` block conv -> activation -> max-pool; flatten; per
//!   `model.hidden` size linear -> activation, dropout after the first hidden layer (the
//!   homework's place for it); a linear layer to the classes; log-softmax. mlp: the same
//!   without the conv blocks.
//! - seq2seq: source embedding, bidirectional LSTM encoder, target embedding, LSTM decoder,
//!   Luong "general" attention (a bilinear score and a tanh layer over [context; state])
//!   when enabled, and the output projection (only its bias is new when tied to the target
//!   embedding). The sizes are checked and the variables listed by the model's own
//!   [`Seq2SeqConfig`] (Candle-free, in [`crate::models::shape`]).
//!
//! The conv arithmetic itself is [`crate::models::shape`], which the model also builds from.
//! Images are as large as the training file's header says (its header only is read), else
//! taken as 1x28x28; 10 classes (MNIST-family data). Seq2seq vocabularies are built from
//! the training file when it is present, by the code training uses (normalised, kept pairs
//! plus [`SPECIAL_TOKENS`]), else [`ASSUMED_CHARS`] characters are assumed.
//!
//! [`check_runs`] is the part of validation that needs more than the spec: for every run of
//! the grid, the data headers, the model's layout on them and the select metric.

use std::path::Path;

use crate::data::pairs;
use crate::models::shape::{ImageInput, Seq2SeqConfig, Seq2SeqError, conv_shapes};
use crate::spec::{ModelKind, ModelSpec, Spec};

/// Input of image models assumed when the data is not there: channels, height, width.
pub const IMAGE_SHAPE: [usize; 3] = [1, 28, 28];
/// Classes of image models.
pub const CLASSES: usize = 10;
/// Tokens every character vocabulary adds: padding, start, end, unknown.
pub const SPECIAL_TOKENS: usize = crate::data::vocab::N_SPECIAL;
/// Characters per language assumed when the training file is absent.
pub const ASSUMED_CHARS: usize = 80;

/// One layer of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerShape {
    pub name: String,
    /// What the layer does, e.g. `conv 8@5x5 stride 1 pad 2`.
    pub op: String,
    /// Output shape of one example; `T` and `U` are source and target lengths.
    pub output: String,
    pub params: usize,
}

/// The layers of a model and their total.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    /// One line describing the input (and, for seq2seq, where the vocabularies came from).
    pub input: String,
    pub layers: Vec<LayerShape>,
    pub total: usize,
}

/// A model that cannot be laid out on its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct InspectError {
    pub key: String,
    pub message: String,
}

/// Why [`check_runs`] refused a run before anything was written.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// An image data file is missing or corrupt.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A parallel-text data file is missing or unreadable.
    #[error(transparent)]
    Pairs(#[from] pairs::PairsError),
    /// A run's config is invalid on its data: named against the spec layer or grid entry.
    #[error(transparent)]
    Spec(#[from] crate::grid::LoadError),
}

/// Source and target vocabulary sizes, special tokens included, and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    pub source: usize,
    pub target: usize,
    pub origin: String,
}

/// The layers of the spec's model; image sizes and seq2seq vocabularies are read from the
/// data when present.
pub fn inspect(spec: &Spec) -> Result<ModelShape, InspectError> {
    match spec.model.kind {
        ModelKind::Cnn | ModelKind::Mlp => {
            let (input, origin) = match crate::data::images::read_image_headers(&spec.data) {
                Ok(h) => (
                    ImageInput::grey(h.rows, h.cols),
                    format!(
                        "from the header of {}",
                        Path::new(&spec.data.dir).join(&spec.data.train).display()
                    ),
                ),
                Err(e) => (assumed_input(), format!("assumed: {e}")),
            };
            image_model(&spec.model, input, &origin)
        }
        ModelKind::Seq2seq => seq2seq(&spec.model, &vocab_of(spec)),
    }
}

/// The input [`IMAGE_SHAPE`] describes.
pub fn assumed_input() -> ImageInput {
    let [channels, rows, cols] = IMAGE_SHAPE;
    ImageInput {
        channels,
        rows,
        cols,
    }
}

struct Builder {
    layers: Vec<LayerShape>,
}

impl Builder {
    fn push(
        &mut self,
        name: impl Into<String>,
        op: impl Into<String>,
        output: String,
        params: usize,
    ) {
        self.layers.push(LayerShape {
            name: name.into(),
            op: op.into(),
            output,
            params,
        });
    }
    fn finish(self, input: String) -> ModelShape {
        let total = self.layers.iter().map(|l| l.params).sum();
        ModelShape {
            input,
            layers: self.layers,
            total,
        }
    }
}

/// cnn and mlp on `input` images with [`CLASSES`] classes; `origin` says where the input
/// size came from.
pub fn image_model(
    m: &ModelSpec,
    input: ImageInput,
    origin: &str,
) -> Result<ModelShape, InspectError> {
    let act = format!("{:?}", m.activation).to_lowercase();
    let mut b = Builder { layers: Vec::new() };
    let mut x = input;
    if m.kind == ModelKind::Cnn {
        let shapes = conv_shapes(&m.conv, input).map_err(|e| InspectError {
            key: e.key,
            message: format!("{} ({})", e.message, e.value),
        })?;
        for (i, (block, shape)) in m.conv.iter().zip(shapes).enumerate() {
            let n = i + 1;
            let out = shape.conv;
            let params = block.channels * x.channels * block.kernel * block.kernel + block.channels;
            let op = format!(
                "conv {}@{k}x{k} stride {} pad {}",
                block.channels,
                block.stride,
                shape.padding,
                k = block.kernel
            );
            b.push(format!("conv{n}"), op, out.to_string(), params);
            b.push(format!("{act}{n}"), act.clone(), out.to_string(), 0);
            if let Some(pooled) = shape.pooled {
                let op = format!("max-pool {p}x{p}", p = block.pool);
                b.push(format!("pool{n}"), op, pooled.to_string(), 0);
            }
            x = shape.output();
        }
    }
    let mut features = x.features();
    b.push("flatten", "flatten", features.to_string(), 0);
    for (i, &size) in m.hidden.iter().enumerate() {
        let n = i + 1;
        b.push(
            format!("fc{n}"),
            format!("linear {features}->{size}"),
            size.to_string(),
            features * size + size,
        );
        b.push(format!("fc{n}.{act}"), act.clone(), size.to_string(), 0);
        if i == 0 && m.dropout > 0.0 {
            b.push(
                format!("fc{n}.dropout"),
                format!("dropout {}", m.dropout),
                size.to_string(),
                0,
            );
        }
        features = size;
    }
    let n = m.hidden.len() + 1;
    b.push(
        format!("fc{n}"),
        format!("linear {features}->{CLASSES}"),
        CLASSES.to_string(),
        features * CLASSES + CLASSES,
    );
    b.push("log_softmax", "log-softmax", CLASSES.to_string(), 0);
    Ok(b.finish(format!("input {input} image ({origin}), {CLASSES} classes")))
}

/// The spec key, value and message of a seq2seq size mismatch.
fn seq2seq_problem(e: &Seq2SeqError, m: &ModelSpec) -> RunProblem {
    match e {
        Seq2SeqError::Mismatch {
            key,
            value,
            other_key,
            other,
            why,
        } => RunProblem {
            key: format!("model.{key}"),
            value: value.to_string(),
            message: format!(
                "must equal {other_key} = {other} (encoder_hidden = {}, decoder_hidden = {}, \
                 embedding_dim = {}): {why}",
                m.encoder_hidden, m.decoder_hidden, m.embedding_dim
            ),
        },
    }
}

/// The seq2seq model for the given vocabularies: the variables of
/// [`Seq2SeqConfig::param_shapes`], the ones training builds, grouped into layers.
pub fn seq2seq(m: &ModelSpec, vocab: &Vocab) -> Result<ModelShape, InspectError> {
    let cfg = Seq2SeqConfig::from_spec(m, vocab.source, vocab.target).map_err(|e| {
        let p = seq2seq_problem(&e, m);
        InspectError {
            key: p.key,
            message: format!("is {}; {}", p.value, p.message),
        }
    })?;
    let (e, he, hd) = (m.embedding_dim, m.encoder_hidden, m.decoder_hidden);
    let (vs, vt) = (vocab.source, vocab.target);
    let enc = 2 * he;
    let n = |prefix: &str| cfg.param_count(prefix);
    let mut b = Builder { layers: Vec::new() };
    b.push(
        "src_embedding",
        format!("embedding {vs}x{e}"),
        format!("Tx{e}"),
        n("encoder.embedding"),
    );
    b.push(
        "encoder.forward",
        format!("lstm {e}->{he}"),
        format!("Tx{he}"),
        n("encoder.lstm."),
    );
    b.push(
        "encoder.backward",
        format!("lstm {e}->{he}"),
        format!("Tx{he}"),
        n("encoder.lstm_reverse."),
    );
    b.push("encoder.concat", "concat directions", format!("Tx{enc}"), 0);
    b.push(
        "tgt_embedding",
        format!("embedding {vt}x{e}"),
        format!("Ux{e}"),
        n("decoder.embedding"),
    );
    b.push(
        "decoder",
        format!("lstm {e}->{hd}"),
        format!("Ux{hd}"),
        n("decoder.lstm."),
    );
    if m.attention == crate::spec::Attention::General {
        b.push(
            "attention.score",
            format!("bilinear {hd}x{enc}"),
            "UxT".to_string(),
            n("decoder.attn.linear_in."),
        );
        b.push("attention.context", "weighted sum", format!("Ux{enc}"), 0);
        b.push(
            "attention.combine",
            format!("linear {}->{hd}, tanh", hd + enc),
            format!("Ux{hd}"),
            n("decoder.attn.linear_out."),
        );
    }
    let tied = if m.tie_embeddings {
        " (weight tied)"
    } else {
        ""
    };
    b.push(
        "output",
        format!("linear {hd}->{vt}{tied}"),
        format!("Ux{vt}"),
        n("generator."),
    );
    b.push("log_softmax", "log-softmax", format!("Ux{vt}"), 0);
    let shape = b.finish(format!(
        "source length T, target length U; vocabularies {vs} source and {vt} target tokens ({})",
        vocab.origin
    ));
    debug_assert_eq!(shape.total, n(""), "a variable of the model is in no layer");
    Ok(shape)
}

/// Vocabulary sizes as training builds them from the training TSV (normalised, filtered
/// and limited by [`pairs::load_train`], counted by [`pairs::vocabularies`]), else the
/// documented assumption.
pub fn vocab_of(spec: &Spec) -> Vocab {
    let path = Path::new(&spec.data.dir).join(&spec.data.train);
    let assumed = |why: String| Vocab {
        source: ASSUMED_CHARS + SPECIAL_TOKENS,
        target: ASSUMED_CHARS + SPECIAL_TOKENS,
        origin: format!(
            "assumed: {why}, {ASSUMED_CHARS} characters + {SPECIAL_TOKENS} special tokens"
        ),
    };
    if !path.exists() {
        return assumed(format!("{} not found", path.display()));
    }
    match pairs::load_train(&spec.data) {
        Ok(train) => {
            let (src, tgt) = pairs::vocabularies(&train);
            Vocab {
                source: src.len(),
                target: tgt.len(),
                origin: format!(
                    "counted in {}, {SPECIAL_TOKENS} special tokens each",
                    path.display()
                ),
            }
        }
        Err(e) => assumed(e.to_string()),
    }
}

/// What validation does when a data file is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingData {
    /// An error (exit 4): `run` cannot train without it.
    Refuse,
    /// A warning, and shapes are checked on the assumed input: `plan` may be made where the
    /// data is not (a laptop planning for a cluster).
    Warn,
}

/// The metrics a model kind records every epoch, which `select.metric` may name; decided
/// where the training loops write them.
pub fn selectable_metrics(kind: ModelKind) -> &'static [&'static str] {
    match kind {
        ModelKind::Cnn | ModelKind::Mlp => &crate::train::classifier::SELECTABLE,
        ModelKind::Seq2seq => &crate::train::seq2seq::SELECTABLE,
    }
}

/// One thing wrong with one run that the spec alone could not show.
struct RunProblem {
    key: String,
    value: String,
    message: String,
}

/// Checks every run of `runs` (from the spec `file` with the `--set` overrides `sets`) before anything is written: its
/// data files' headers (missing or corrupt: a data error, exit 4, or with
/// [`MissingData::Warn`] a warning), its model's layout on the image size they give, and
/// its select metric (a spec error, exit 3, naming the run and what the grid varied).
/// Returns the warnings.
pub fn check_runs(
    file: &std::path::Path,
    sets: &[String],
    runs: &[crate::grid::RunPlan],
    missing: MissingData,
) -> Result<Vec<String>, CheckError> {
    let mut warnings = Vec::new();
    // Grids rarely vary the data: read each distinct data section's headers once.
    let mut inputs: Vec<(&crate::spec::DataSpec, Option<ImageInput>)> = Vec::new();
    for run in runs {
        let c = &run.config;
        let input = match inputs.iter().find(|(d, _)| **d == c.data) {
            Some((_, input)) => *input,
            None => {
                let input = data_input(c, missing, &mut warnings)?;
                inputs.push((&c.data, input));
                input
            }
        };
        let problems = run_problems(c, input.unwrap_or_else(assumed_input));
        if problems.is_empty() {
            continue;
        }
        return Err(run_error(file, sets, run, runs.len(), problems));
    }
    Ok(warnings)
}

/// The image input the data headers give (`None` for seq2seq, or when missing data is only
/// warned about).
fn data_input(
    c: &Spec,
    missing: MissingData,
    warnings: &mut Vec<String>,
) -> Result<Option<ImageInput>, CheckError> {
    use crate::data::DataError;
    let mut warn = |what: String| {
        warnings.push(format!(
            "warning: {what}; `run` would stop here (exit 4){}",
            if c.model.kind == ModelKind::Seq2seq {
                String::new()
            } else {
                format!(
                    ", shapes are checked for the assumed {} input",
                    assumed_input()
                )
            }
        ))
    };
    match c.model.kind {
        ModelKind::Cnn | ModelKind::Mlp => match crate::data::images::read_image_headers(&c.data) {
            Ok(h) => Ok(Some(ImageInput::grey(h.rows, h.cols))),
            Err(e @ DataError::Missing { .. }) if missing == MissingData::Warn => {
                warn(e.to_string());
                Ok(None)
            }
            Err(e) => Err(e.into()),
        },
        ModelKind::Seq2seq => match pairs::check_files(&c.data) {
            Ok(()) => Ok(None),
            Err(pairs::PairsError::Read { path, source })
                if missing == MissingData::Warn
                    && source.kind() == std::io::ErrorKind::NotFound =>
            {
                warn(format!("{}: data file not found", path.display()));
                Ok(None)
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// What is wrong with one run's config on `input` images.
fn run_problems(c: &Spec, input: ImageInput) -> Vec<RunProblem> {
    let mut out = Vec::new();
    let layout = match c.model.kind {
        ModelKind::Cnn => conv_shapes(&c.model.conv, input).err().map(|e| RunProblem {
            key: e.key,
            value: e.value,
            message: e.message,
        }),
        ModelKind::Mlp => None,
        ModelKind::Seq2seq => {
            Seq2SeqConfig::from_spec(&c.model, SPECIAL_TOKENS + 1, SPECIAL_TOKENS + 1)
                .err()
                .map(|e| seq2seq_problem(&e, &c.model))
        }
    };
    out.extend(layout);
    let allowed = selectable_metrics(c.model.kind);
    let metric = &c.select.metric;
    if !allowed.contains(&metric.as_str()) {
        let kind = format!("{:?}", c.model.kind).to_lowercase();
        let list: Vec<String> = allowed.iter().map(|m| format!("{m:?}")).collect();
        out.push(RunProblem {
            key: "select.metric".into(),
            value: format!("{metric:?}"),
            message: format!(
                "model.kind = \"{kind}\" does not record it every epoch; allowed: {}",
                list.join(", ")
            ),
        });
    }
    out
}

/// A spec error for `run`'s problems: against the layer that set the key for a spec without
/// a grid, against the run and its varied values for a grid.
fn run_error(
    file: &std::path::Path,
    sets: &[String],
    run: &crate::grid::RunPlan,
    runs: usize,
    problems: Vec<RunProblem>,
) -> CheckError {
    use crate::grid::LoadError;
    use crate::spec::{Problem, SpecError};
    if runs == 1 && run.varied.is_empty() {
        // Only on this error path: load the layers again to say which one set the key.
        let resolved = crate::spec::resolve(file, sets, std::env::vars()).ok();
        let problems = problems
            .into_iter()
            .map(|p| Problem {
                origin: resolved
                    .as_ref()
                    .map_or_else(|| file.display().to_string(), |r| r.origin(&p.key)),
                value: Some(p.value).filter(|v| !v.is_empty()),
                key: p.key,
                message: p.message,
            })
            .collect();
        return LoadError::Spec(SpecError::Invalid { problems }).into();
    }
    let varied: Vec<String> = run
        .varied
        .iter()
        .map(|(k, v)| format!("{k} = {}", crate::spec::schema::fmt_value(v)))
        .collect();
    let p = problems.into_iter().next().expect("at least one problem");
    // Only on this error path: load the layers again to say which one set the grid entry.
    let origin = crate::spec::resolve(file, sets, std::env::vars())
        .map_or_else(|_| file.display().to_string(), |r| r.run_origin(&p.key));
    LoadError::Grid {
        origin,
        source: Box::new(crate::grid::GridError::Run {
            index: run.index,
            varied: varied.join(", "),
            key: p.key,
            value: p.value,
            message: p.message,
        }),
    }
    .into()
}

/// The table `inspect` prints.
pub fn render(kind: ModelKind, shape: &ModelShape) -> String {
    let kind = format!("{kind:?}").to_lowercase();
    let mut rows: Vec<[String; 4]> = vec![[
        "layer".into(),
        "operation".into(),
        "output".into(),
        "params".into(),
    ]];
    for l in &shape.layers {
        rows.push([
            l.name.clone(),
            l.op.clone(),
            l.output.clone(),
            l.params.to_string(),
        ]);
    }
    rows.push([
        "total".into(),
        String::new(),
        String::new(),
        shape.total.to_string(),
    ]);
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = format!("model: {kind}; {}\n", shape.input);
    for r in rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(shape: &ModelShape, name: &str) -> usize {
        shape
            .layers
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.params)
            .unwrap()
    }

    #[test]
    fn homework_cnn_matches_the_hand_count() {
        let s = image_model(&ModelSpec::default(), assumed_input(), "test").unwrap();
        assert_eq!(params(&s, "conv1"), 8 * 5 * 5 + 8);
        assert_eq!(params(&s, "conv2"), 16 * 8 * 3 * 3 + 16);
        assert_eq!(params(&s, "fc1"), 576 * 600 + 600);
        assert_eq!(params(&s, "fc2"), 600 * 120 + 120);
        assert_eq!(params(&s, "fc3"), 120 * 10 + 10);
        assert_eq!(s.total, 420_906);
        let flatten = s.layers.iter().find(|l| l.name == "flatten").unwrap();
        assert_eq!(flatten.output, "576");
    }

    #[test]
    fn mlp_skips_the_conv_blocks() {
        let m = ModelSpec {
            kind: ModelKind::Mlp,
            hidden: vec![100],
            ..ModelSpec::default()
        };
        let s = image_model(&m, assumed_input(), "test").unwrap();
        assert_eq!(s.total, 784 * 100 + 100 + 100 * 10 + 10);
    }

    #[test]
    fn oversized_kernels_are_reported() {
        let mut m = ModelSpec::default();
        m.conv[1].kernel = 30;
        let e = image_model(&m, assumed_input(), "test").unwrap_err();
        assert_eq!(e.key, "model.conv.1.kernel");
    }

    #[test]
    fn seq2seq_counts() {
        let m = ModelSpec {
            kind: ModelKind::Seq2seq,
            attention: crate::spec::Attention::General,
            ..ModelSpec::default()
        };
        let v = Vocab {
            source: 10,
            target: 12,
            origin: "test".into(),
        };
        let s = seq2seq(&m, &v).unwrap();
        let enc = 4 * 64 * (128 + 64) + 8 * 64;
        let dec = 4 * 128 * (128 + 128) + 8 * 128;
        let att = 128 * 128 + (256 * 128 + 128);
        assert_eq!(s.total, 10 * 128 + 2 * enc + 12 * 128 + dec + att + 12);
    }

    /// On main `inspect` counted the un-normalised characters (`G` and `g` twice) and listed
    /// a bridge layer the model refuses to build; now both come from training's own code.
    #[test]
    fn shipped_q3_specs_count_what_training_builds() {
        use crate::data::pairs::ParallelData;
        use crate::models::seq2seq::Seq2Seq;
        use rand::SeedableRng;
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in ["experiments/q3_smoke.toml", "experiments/q3_attention.toml"] {
            let (_, runs) = crate::grid::load_runs(&root.join(file), &[]).unwrap();
            assert!(!runs.is_empty());
            for run in runs {
                let mut spec = run.config;
                // q3_attention's full data is not shipped: its model on the shipped pairs.
                spec.data.dir = root.join("data/spa-eng-mini").display().to_string();
                spec.data.train = "train-eng-spa.txt".into();
                spec.data.dev = "val-eng-spa.txt".into();
                spec.data.test = "test-eng-spa.txt".into();
                let shape = inspect(&spec).unwrap();
                let data = ParallelData::load(&spec.data).unwrap();
                let vocab = vocab_of(&spec);
                assert_eq!(
                    (vocab.source, vocab.target),
                    (data.src_vocab.len(), data.tgt_vocab.len()),
                    "{file}"
                );
                let cfg = Seq2SeqConfig::from_spec(
                    &spec.model,
                    data.src_vocab.len(),
                    data.tgt_vocab.len(),
                )
                .unwrap();
                let model = Seq2Seq::new(
                    cfg,
                    &mut rand_chacha::ChaCha8Rng::seed_from_u64(0),
                    &candle_core::Device::Cpu,
                )
                .unwrap();
                assert_eq!(shape.total, model.params().count(), "{file}");
            }
        }
    }

    #[test]
    fn vocabulary_is_counted_after_normalisation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.tsv"), "Go.\tVe.\ngo.\t ve.\n\n").unwrap();
        let mut spec = Spec::default();
        spec.model.kind = ModelKind::Seq2seq;
        spec.data.dir = dir.path().display().to_string();
        spec.data.train = "train.tsv".into();
        spec.data.source_column = 1;
        spec.data.target_column = 0;
        spec.data.max_len = 0;
        let v = vocab_of(&spec);
        // {v, e, .} and {g, o, .}: the capitals are lower-cased, the space stripped.
        assert_eq!(
            (v.source, v.target),
            (3 + SPECIAL_TOKENS, 3 + SPECIAL_TOKENS),
            "{v:?}"
        );
    }

    #[test]
    fn a_decoder_the_model_refuses_is_an_error_not_a_bridge() {
        let m = ModelSpec {
            kind: ModelKind::Seq2seq,
            decoder_hidden: 100,
            ..ModelSpec::default()
        };
        let v = Vocab {
            source: 10,
            target: 10,
            origin: "test".into(),
        };
        let e = seq2seq(&m, &v).unwrap_err();
        assert_eq!(e.key, "model.decoder_hidden", "{e}");
        assert!(e.message.contains("is 100"), "{e}");
    }
}
