//! The spatial arithmetic of the conv blocks, in one place and free of Candle: the model
//! builds its layers from it, `inspect` prints it, and validation runs it for every run of
//! a grid on the image size the data headers give, before anything is written.
//!
//! A block is conv (square kernel `k`, stride `s`, symmetric zero padding `p`) -> activation
//! -> optional max-pool `q` (window and stride `q`, floor): `H' = (H + 2p - k) / s + 1`, then
//! `H'' = H' / q`.
//!
//! The seq2seq model's sizes ([`Seq2SeqConfig`]) live here too: the checks that tie them
//! together and the variables the model creates, so `inspect` and validation see exactly
//! the model that training builds.

use crate::spec::{Attention, ConvBlock, ModelSpec, Padding, PaddingName};

/// What an image model gets: channels, rows and columns of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInput {
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
}

impl ImageInput {
    /// Grey images of `rows x cols`, as the MNIST family has.
    pub fn grey(rows: usize, cols: usize) -> Self {
        ImageInput {
            channels: 1,
            rows,
            cols,
        }
    }

    /// Values of one image: the input size of the first linear layer of an mlp.
    pub fn features(&self) -> usize {
        self.channels * self.rows * self.cols
    }
}

impl std::fmt::Display for ImageInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.rows, self.cols)
    }
}

/// The shapes of one conv block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    /// Pixels of zero padding on each side (`"same"` resolved).
    pub padding: usize,
    /// After the convolution (and activation).
    pub conv: ImageInput,
    /// After the max-pool, when the block has one (`pool >= 2`).
    pub pooled: Option<ImageInput>,
}

impl BlockShape {
    /// What the next block gets.
    pub fn output(&self) -> ImageInput {
        self.pooled.unwrap_or(self.conv)
    }
}

/// A block that cannot be laid out on the input it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` = {value}: {message}")]
pub struct ShapeError {
    /// Dotted spec key, e.g. `model.conv.1.kernel`.
    pub key: String,
    /// The offending value as TOML.
    pub value: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// Pixels of padding `block` (the `index`-th) asks for: `"same"` keeps the size, which
/// symmetric padding can do only with stride 1 and an odd kernel.
pub fn padding_of(block: &ConvBlock, index: usize) -> Result<usize, ShapeError> {
    match block.padding {
        Padding::Pixels(p) => Ok(p),
        Padding::Named(PaddingName::Same) => {
            if block.stride != 1 || block.kernel.is_multiple_of(2) {
                return Err(ShapeError {
                    key: format!("model.conv.{index}.padding"),
                    value: "\"same\"".into(),
                    message: format!(
                        "\"same\" needs stride 1 and an odd kernel, this block has stride {} \
                         and kernel {}; give the padding in pixels instead",
                        block.stride, block.kernel
                    ),
                });
            }
            Ok((block.kernel - 1) / 2)
        }
    }
}

/// The shapes of every block of `blocks` applied in turn to `input`.
pub fn conv_shapes(blocks: &[ConvBlock], input: ImageInput) -> Result<Vec<BlockShape>, ShapeError> {
    let mut x = input;
    let mut out = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        for (name, v) in [
            ("channels", block.channels),
            ("kernel", block.kernel),
            ("stride", block.stride),
        ] {
            if v == 0 {
                return Err(ShapeError {
                    key: format!("model.conv.{i}.{name}"),
                    value: "0".into(),
                    message: "must be at least 1".into(),
                });
            }
        }
        let p = padding_of(block, i)?;
        let k = block.kernel;
        let side = |size: usize| {
            size.checked_add(p.checked_mul(2)?)?
                .checked_sub(k)
                .map(|d| d / block.stride + 1)
        };
        let (Some(rows), Some(cols)) = (side(x.rows), side(x.cols)) else {
            return Err(ShapeError {
                key: format!("model.conv.{i}.kernel"),
                value: k.to_string(),
                message: format!(
                    "a {k}x{k} kernel does not fit the {}x{} input block {i} gets, padded by \
                     {p}; allowed: at most {}",
                    x.rows,
                    x.cols,
                    (x.rows.min(x.cols)).saturating_add(p.saturating_mul(2))
                ),
            });
        };
        let conv = ImageInput {
            channels: block.channels,
            rows,
            cols,
        };
        let pooled = if block.pool >= 2 {
            if rows < block.pool || cols < block.pool {
                return Err(ShapeError {
                    key: format!("model.conv.{i}.pool"),
                    value: block.pool.to_string(),
                    message: format!(
                        "a {q}x{q} pool does not fit the {rows}x{cols} output of block {i}'s \
                         convolution; allowed: 0 or 1 (no pool) up to {}",
                        rows.min(cols),
                        q = block.pool
                    ),
                });
            }
            Some(ImageInput {
                channels: block.channels,
                rows: rows / block.pool,
                cols: cols / block.pool,
            })
        } else {
            None
        };
        let shape = BlockShape {
            padding: p,
            conv,
            pooled,
        };
        x = shape.output();
        out.push(shape);
    }
    Ok(out)
}

/// Why a model spec cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum Seq2SeqError {
    /// Two sizes that the architecture ties together differ.
    #[error("model.{key} = {value} must equal {other_key} = {other}: {why}")]
    Mismatch {
        key: &'static str,
        value: usize,
        other_key: &'static str,
        other: usize,
        why: &'static str,
    },
}

/// Sizes and options of a [`Seq2Seq`].
#[derive(Debug, Clone, PartialEq)]
pub struct Seq2SeqConfig {
    pub src_vocab: usize,
    pub tgt_vocab: usize,
    pub embedding_dim: usize,
    pub encoder_hidden: usize,
    pub decoder_hidden: usize,
    pub attention: Attention,
    pub dropout: f64,
    pub tie_embeddings: bool,
}

impl Seq2SeqConfig {
    /// Reads the seq2seq keys of `[model]` and checks the sizes the architecture ties.
    pub fn from_spec(
        m: &ModelSpec,
        src_vocab: usize,
        tgt_vocab: usize,
    ) -> std::result::Result<Self, Seq2SeqError> {
        if 2 * m.encoder_hidden != m.decoder_hidden {
            return Err(Seq2SeqError::Mismatch {
                key: "decoder_hidden",
                value: m.decoder_hidden,
                other_key: "2 x encoder_hidden",
                other: 2 * m.encoder_hidden,
                why: "the decoder starts from both encoder directions' states concatenated",
            });
        }
        if m.tie_embeddings && m.embedding_dim != m.decoder_hidden {
            return Err(Seq2SeqError::Mismatch {
                key: "embedding_dim",
                value: m.embedding_dim,
                other_key: "decoder_hidden",
                other: m.decoder_hidden,
                why: "tie_embeddings reuses the decoder embedding as output projection",
            });
        }
        Ok(Seq2SeqConfig {
            src_vocab,
            tgt_vocab,
            embedding_dim: m.embedding_dim,
            encoder_hidden: m.encoder_hidden,
            decoder_hidden: m.decoder_hidden,
            attention: m.attention,
            dropout: m.dropout,
            tie_embeddings: m.tie_embeddings,
        })
    }
}

impl Seq2SeqConfig {
    /// Name and shape of every variable the model creates, in creation order: what
    /// [`super::seq2seq::Seq2Seq::new`] builds (a test holds them equal) and what `inspect`
    /// counts.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (e, he, hd) = (self.embedding_dim, self.encoder_hidden, self.decoder_hidden);
        let lstm = |name: &str, input: usize, hidden: usize| {
            [
                ("weight_ih", vec![4 * hidden, input]),
                ("weight_hh", vec![4 * hidden, hidden]),
                ("bias_ih", vec![4 * hidden]),
                ("bias_hh", vec![4 * hidden]),
            ]
            .map(|(k, shape)| (format!("{name}.{k}"), shape))
        };
        let mut out = vec![("encoder.embedding".to_string(), vec![self.src_vocab, e])];
        out.extend(lstm("encoder.lstm", e, he));
        out.extend(lstm("encoder.lstm_reverse", e, he));
        out.push(("decoder.embedding".into(), vec![self.tgt_vocab, e]));
        out.extend(lstm("decoder.lstm", e, hd));
        if self.attention == Attention::General {
            out.push(("decoder.attn.linear_in.weight".into(), vec![2 * he, hd]));
            out.push((
                "decoder.attn.linear_out.weight".into(),
                vec![hd, hd + 2 * he],
            ));
            out.push(("decoder.attn.linear_out.bias".into(), vec![hd]));
        }
        if !self.tie_embeddings {
            out.push(("generator.weight".into(), vec![self.tgt_vocab, hd]));
        }
        out.push(("generator.bias".into(), vec![self.tgt_vocab]));
        out
    }

    /// Elements of the variables whose names start with `prefix`.
    pub fn param_count(&self, prefix: &str) -> usize {
        self.param_shapes()
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ModelSpec;

    fn block(kernel: usize, stride: usize, padding: Padding, pool: usize) -> ConvBlock {
        ConvBlock {
            channels: 4,
            kernel,
            stride,
            padding,
            pool,
        }
    }

    #[test]
    fn homework_cnn_flattens_to_576() {
        let s = conv_shapes(&ModelSpec::default().conv, ImageInput::grey(28, 28)).unwrap();
        assert_eq!(s[0].conv, ImageInput::grey(28, 28).with_channels(8));
        assert_eq!(s[1].output().features(), 576);
    }

    #[test]
    fn same_needs_stride_one_and_an_odd_kernel() {
        let same = Padding::Named(PaddingName::Same);
        let ok = conv_shapes(&[block(3, 1, same, 0)], ImageInput::grey(28, 28)).unwrap();
        assert_eq!((ok[0].conv.rows, ok[0].padding), (28, 1));
        for (k, s) in [(4, 1), (3, 2)] {
            let e = conv_shapes(&[block(k, s, same, 0)], ImageInput::grey(28, 28)).unwrap_err();
            assert_eq!(e.key, "model.conv.0.padding", "{e}");
        }
    }

    #[test]
    fn kernels_and_pools_larger_than_their_input_are_refused() {
        let e = conv_shapes(
            &[
                block(5, 1, Padding::Pixels(0), 2),
                block(7, 1, Padding::Pixels(0), 0),
            ],
            ImageInput::grey(12, 12),
        )
        .unwrap_err();
        // 12 -> 8 -> pool 4; a 7x7 kernel does not fit 4x4.
        assert_eq!(
            (e.key.as_str(), e.value.as_str()),
            ("model.conv.1.kernel", "7")
        );
        assert!(e.message.contains("4x4"), "{e}");
        let e = conv_shapes(
            &[block(3, 1, Padding::Pixels(0), 9)],
            ImageInput::grey(10, 10),
        )
        .unwrap_err();
        assert_eq!(e.key, "model.conv.0.pool", "{e}");
        // Huge values do not overflow.
        let e = conv_shapes(
            &[block(3, 1, Padding::Pixels(usize::MAX), 0)],
            ImageInput::grey(10, 10),
        )
        .unwrap_err();
        assert_eq!(e.key, "model.conv.0.kernel");
    }

    impl ImageInput {
        fn with_channels(mut self, c: usize) -> Self {
            self.channels = c;
            self
        }
    }
}
