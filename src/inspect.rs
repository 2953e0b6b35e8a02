//! `inspect`'s arithmetic: per-layer output shapes and parameter counts of the spec's model,
//! computed from the spec alone (no Candle), so planning stays free of tensor state.
//!
//! The layouts mirror the models the training code builds:
//! - cnn: per `[[model.conv]]` block conv -> activation -> max-pool; flatten; per
//!   `model.hidden` size linear -> activation, dropout after the first hidden layer (the
//!   homework's place for it); a linear layer to the classes; log-softmax. mlp: the same
//!   without the conv blocks.
//! - seq2seq: source embedding, bidirectional LSTM encoder, a linear bridge only when
//!   `decoder_hidden != 2 * encoder_hidden`, target embedding, LSTM decoder, Luong "general"
//!   attention (a bilinear score and a tanh layer over [context; state]) when enabled, and
//!   the output projection (only its bias is new when tied to the target embedding).
//!   LSTMs count both bias vectors, as Candle and PyTorch do: 4H(in + H) + 8H.
//!
//! Images are taken as 1x28x28 with 10 classes (MNIST-family data). Seq2seq vocabularies
//! are counted from the training file when it is present (distinct characters of the
//! kept pairs plus [`SPECIAL_TOKENS`]), else [`ASSUMED_CHARS`] characters are assumed.

use std::collections::HashSet;
use std::path::Path;

use crate::spec::{ModelKind, ModelSpec, Padding, Spec};

/// Input of image models: channels, height, width.
pub const IMAGE_SHAPE: [usize; 3] = [1, 28, 28];
/// Classes of image models.
pub const CLASSES: usize = 10;
/// Tokens every character vocabulary adds: padding, start, end, unknown.
pub const SPECIAL_TOKENS: usize = 4;
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

/// Source and target vocabulary sizes, special tokens included, and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    pub source: usize,
    pub target: usize,
    pub origin: String,
}

/// The layers of the spec's model; seq2seq vocabularies are read from the data when present.
pub fn inspect(spec: &Spec) -> Result<ModelShape, InspectError> {
    match spec.model.kind {
        ModelKind::Cnn | ModelKind::Mlp => image_model(&spec.model),
        ModelKind::Seq2seq => seq2seq(&spec.model, &vocab_of(spec)),
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

fn chw(c: usize, h: usize, w: usize) -> String {
    format!("{c}x{h}x{w}")
}

/// cnn and mlp on [`IMAGE_SHAPE`] inputs with [`CLASSES`] classes.
pub fn image_model(m: &ModelSpec) -> Result<ModelShape, InspectError> {
    let act = format!("{:?}", m.activation).to_lowercase();
    let mut b = Builder { layers: Vec::new() };
    let [mut c, mut h, mut w] = IMAGE_SHAPE;
    if m.kind == ModelKind::Cnn {
        for (i, block) in m.conv.iter().enumerate() {
            let n = i + 1;
            let pad = match block.padding {
                Padding::Pixels(p) => p,
                Padding::Named(_) => block.kernel.saturating_sub(1) / 2,
            };
            let out = |x: usize| -> Result<usize, InspectError> {
                let padded = x + 2 * pad;
                if padded < block.kernel || block.stride == 0 {
                    return Err(InspectError {
                        key: format!("model.conv.{i}.kernel"),
                        message: format!(
                            "a {k}x{k} kernel does not fit a {x}x{x} input padded by {pad}",
                            k = block.kernel
                        ),
                    });
                }
                Ok((padded - block.kernel) / block.stride + 1)
            };
            let (oh, ow) = (out(h)?, out(w)?);
            let params = block.channels * c * block.kernel * block.kernel + block.channels;
            c = block.channels;
            (h, w) = (oh, ow);
            let op = format!(
                "conv {}@{k}x{k} stride {} pad {pad}",
                block.channels,
                block.stride,
                k = block.kernel
            );
            b.push(format!("conv{n}"), op, chw(c, h, w), params);
            b.push(format!("{act}{n}"), act.clone(), chw(c, h, w), 0);
            if block.pool >= 2 {
                if h < block.pool || w < block.pool {
                    return Err(InspectError {
                        key: format!("model.conv.{i}.pool"),
                        message: format!(
                            "a {p}x{p} pool does not fit a {h}x{w} input",
                            p = block.pool
                        ),
                    });
                }
                (h, w) = (h / block.pool, w / block.pool);
                let op = format!("max-pool {p}x{p}", p = block.pool);
                b.push(format!("pool{n}"), op, chw(c, h, w), 0);
            }
        }
    }
    let mut features = c * h * w;
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
    let [ic, ih, iw] = IMAGE_SHAPE;
    Ok(b.finish(format!(
        "input {} image, {CLASSES} classes",
        chw(ic, ih, iw)
    )))
}

fn lstm(input: usize, hidden: usize) -> usize {
    4 * hidden * (input + hidden) + 8 * hidden
}

/// The seq2seq model for the given vocabularies.
pub fn seq2seq(m: &ModelSpec, vocab: &Vocab) -> Result<ModelShape, InspectError> {
    let (e, he, hd) = (m.embedding_dim, m.encoder_hidden, m.decoder_hidden);
    let (vs, vt) = (vocab.source, vocab.target);
    let enc = 2 * he;
    let mut b = Builder { layers: Vec::new() };
    b.push(
        "src_embedding",
        format!("embedding {vs}x{e}"),
        format!("Tx{e}"),
        vs * e,
    );
    b.push(
        "encoder.forward",
        format!("lstm {e}->{he}"),
        format!("Tx{he}"),
        lstm(e, he),
    );
    b.push(
        "encoder.backward",
        format!("lstm {e}->{he}"),
        format!("Tx{he}"),
        lstm(e, he),
    );
    b.push("encoder.concat", "concat directions", format!("Tx{enc}"), 0);
    if enc != hd {
        let p = 2 * (enc * hd + hd);
        b.push(
            "bridge",
            format!("linear {enc}->{hd} for h and c"),
            hd.to_string(),
            p,
        );
    }
    b.push(
        "tgt_embedding",
        format!("embedding {vt}x{e}"),
        format!("Ux{e}"),
        vt * e,
    );
    b.push(
        "decoder",
        format!("lstm {e}->{hd}"),
        format!("Ux{hd}"),
        lstm(e, hd),
    );
    if m.attention == crate::spec::Attention::General {
        b.push(
            "attention.score",
            format!("bilinear {hd}x{enc}"),
            "UxT".to_string(),
            hd * enc,
        );
        b.push("attention.context", "weighted sum", format!("Ux{enc}"), 0);
        b.push(
            "attention.combine",
            format!("linear {}->{hd}, tanh", hd + enc),
            format!("Ux{hd}"),
            (hd + enc) * hd + hd,
        );
    }
    if m.tie_embeddings {
        if hd != e {
            return Err(InspectError {
                key: "model.tie_embeddings".into(),
                message: format!(
                    "tying the output projection to the target embedding needs \
                     decoder_hidden ({hd}) == embedding_dim ({e})"
                ),
            });
        }
        b.push(
            "output",
            format!("linear {hd}->{vt} (weight tied)"),
            format!("Ux{vt}"),
            vt,
        );
    } else {
        b.push(
            "output",
            format!("linear {hd}->{vt}"),
            format!("Ux{vt}"),
            hd * vt + vt,
        );
    }
    b.push("log_softmax", "log-softmax", format!("Ux{vt}"), 0);
    Ok(b.finish(format!(
        "source length T, target length U; vocabularies {vs} source and {vt} target tokens ({})",
        vocab.origin
    )))
}

/// Vocabulary sizes from the training TSV, else the documented assumption.
pub fn vocab_of(spec: &Spec) -> Vocab {
    let path = Path::new(&spec.data.dir).join(&spec.data.train);
    match count_chars(spec, &path) {
        Some((s, t)) => Vocab {
            source: s + SPECIAL_TOKENS,
            target: t + SPECIAL_TOKENS,
            origin: format!(
                "counted in {}, {SPECIAL_TOKENS} special tokens each",
                path.display()
            ),
        },
        None => Vocab {
            source: ASSUMED_CHARS + SPECIAL_TOKENS,
            target: ASSUMED_CHARS + SPECIAL_TOKENS,
            origin: format!(
                "assumed: {} not found, {ASSUMED_CHARS} characters + {SPECIAL_TOKENS} special tokens",
                path.display()
            ),
        },
    }
}

fn count_chars(spec: &Spec, path: &Path) -> Option<(usize, usize)> {
    let text = std::fs::read_to_string(path).ok()?;
    let d = &spec.data;
    let (mut src, mut tgt) = (HashSet::new(), HashSet::new());
    let mut kept = 0usize;
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let (Some(s), Some(t)) = (cols.get(d.source_column), cols.get(d.target_column)) else {
            continue;
        };
        if s.chars().count() >= d.max_len || t.chars().count() >= d.max_len {
            continue;
        }
        src.extend(s.chars());
        tgt.extend(t.chars());
        kept += 1;
        if d.train_limit > 0 && kept >= d.train_limit {
            break;
        }
    }
    (kept > 0).then_some((src.len(), tgt.len()))
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
        let s = image_model(&ModelSpec::default()).unwrap();
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
        let s = image_model(&m).unwrap();
        assert_eq!(s.total, 784 * 100 + 100 + 100 * 10 + 10);
    }

    #[test]
    fn oversized_kernels_are_reported() {
        let mut m = ModelSpec::default();
        m.conv[1].kernel = 30;
        let e = image_model(&m).unwrap_err();
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
}
