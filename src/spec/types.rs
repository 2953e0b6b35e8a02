//! Typed experiment spec: the validated shape every other module reads.
//!
//! Every section has a `Default` equal to the homework set-up, so a spec only names what it
//! changes. Serialising a `Spec` gives the fully resolved TOML that `orchestrate config`
//! prints and that each run directory keeps as `config.toml`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A whole experiment: metadata, the eight sections and the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Spec {
    /// Experiment name; names the directory `runs/<name>/`.
    pub name: String,
    /// Free text shown by `plan` and in summaries.
    pub description: String,
    /// Seed of every generator in a run (weights, dropout, shuffling, random grid search);
    /// replicates derive their training seed from it ([`Spec::training_seed`]).
    pub seed: u64,
    /// Replicates per configuration: each grid point trains this many runs that differ only
    /// in their training seed. 1 in a single run's resolved config.
    #[serde(skip_serializing_if = "is_one")]
    pub repeats: u32,
    /// Which replicate of its configuration this run is (0-based), set by the grid.
    #[serde(skip_serializing_if = "is_zero")]
    pub replicate: u32,
    pub data: DataSpec,
    pub model: ModelSpec,
    pub optimizer: OptimizerSpec,
    pub train: TrainSpec,
    pub decode: DecodeSpec,
    pub select: SelectSpec,
    pub launch: LaunchSpec,
    /// Pruning of the grid's runs at rung epochs; never part of a run's identity. Left out
    /// of a resolved config at its default, so configs written before it stay byte for byte.
    #[serde(skip_serializing_if = "ScheduleSpec::is_default")]
    pub schedule: ScheduleSpec,
    /// Hyper-parameter search space; empty in a single run's resolved config.
    pub grid: GridSpec,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            name: String::new(),
            description: String::new(),
            seed: 42,
            repeats: 1,
            replicate: 0,
            data: DataSpec::default(),
            model: ModelSpec::default(),
            optimizer: OptimizerSpec::default(),
            train: TrainSpec::default(),
            decode: DecodeSpec::default(),
            select: SelectSpec::default(),
            launch: LaunchSpec::default(),
            schedule: ScheduleSpec::default(),
            grid: GridSpec::default(),
        }
    }
}

impl Spec {
    /// The seed of the run's weights, dropout masks and shuffling: `seed` itself for replicate
    /// 0 (so adding replicates keeps the runs already trained), and for replicate k a value
    /// hashed from `seed` and k. The dev split is drawn from `seed` alone, so it stays the same
    /// across replicates.
    pub fn training_seed(&self) -> u64 {
        replicate_seed(self.seed, self.replicate)
    }

    /// The checkpoint a run's test phase evaluates: `select.test_checkpoint` when set, else
    /// the best one when `train.checkpoint.keep_best` keeps it and the final one otherwise.
    pub fn test_checkpoint(&self) -> TestCheckpoint {
        self.select
            .test_checkpoint
            .unwrap_or(if self.train.checkpoint.keep_best {
                TestCheckpoint::Best
            } else {
                TestCheckpoint::Final
            })
    }
}

/// The training seed of replicate `replicate` of a spec seeded with `seed`.
pub fn replicate_seed(seed: u64, replicate: u32) -> u64 {
    use sha2::{Digest, Sha256};
    if replicate == 0 {
        return seed;
    }
    let mut h = Sha256::new();
    h.update(b"orchestrate replicate seed\0");
    h.update(seed.to_le_bytes());
    h.update(replicate.to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    // Kept within what a TOML integer holds, like every seed a spec may name.
    u64::from_le_bytes(b) & (i64::MAX as u64)
}

/// Serde's test for a count left out when it is 1 (`repeats`).
pub(crate) fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// On-disk data format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// MNIST-family IDX files, gzip-compressed or not.
    Idx,
    /// NPZ archives as KMNIST distributes them (`kmnist-train-imgs.npz` ...).
    Npz,
    /// Tab-separated parallel text, one pair a line.
    TsvPairs,
}

/// `[data]`: where the examples come from and how they are split.
///
/// Relative paths resolve against the working directory `orchestrate` runs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSpec {
    pub format: DataFormat,
    /// Directory holding the files named below.
    pub dir: String,
    /// Training file(s): images (idx/npz) or the train TSV.
    pub train: String,
    /// Training labels (idx/npz); unused for tsv-pairs.
    pub train_labels: String,
    /// Dev TSV (tsv-pairs); images take dev out of train by `dev_fraction`.
    pub dev: String,
    pub test: String,
    pub test_labels: String,
    /// Fraction of train held out as dev when the data brings no dev split.
    pub dev_fraction: f64,
    /// Use only the first N training examples (0 = all); for smoke tests.
    pub train_limit: usize,
    /// Use only the first N test (and TSV dev) examples (0 = all).
    pub test_limit: usize,
    /// tsv-pairs: 0-based column of the source sentence.
    pub source_column: usize,
    /// tsv-pairs: 0-based column of the target sentence.
    pub target_column: usize,
    /// tsv-pairs: drop pairs whose source or target has this many characters or more.
    pub max_len: usize,
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec {
            format: DataFormat::Idx,
            dir: "data/fashion-mnist-mini".into(),
            train: "train-images-idx3-ubyte.gz".into(),
            train_labels: "train-labels-idx1-ubyte.gz".into(),
            dev: String::new(),
            test: "t10k-images-idx3-ubyte.gz".into(),
            test_labels: "t10k-labels-idx1-ubyte.gz".into(),
            dev_fraction: 0.1,
            train_limit: 0,
            test_limit: 0,
            source_column: 1,
            target_column: 0,
            max_len: 20,
        }
    }
}

/// Model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    Cnn,
    Mlp,
    Seq2seq,
}

/// Padding of a convolution: a number of pixels or `"same"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Padding {
    Pixels(usize),
    Named(PaddingName),
}

/// The named padding modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PaddingName {
    /// Output has the input's spatial size (stride 1, odd kernel).
    Same,
}

/// One convolution block: conv -> activation -> optional max-pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvBlock {
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: Padding,
    /// Max-pool window and stride after the activation; 0 or 1 = no pooling.
    pub pool: usize,
}

impl Default for ConvBlock {
    fn default() -> Self {
        ConvBlock {
            channels: 8,
            kernel: 3,
            stride: 1,
            padding: Padding::Pixels(0),
            pool: 2,
        }
    }
}

/// Activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    Relu,
    Tanh,
}

/// Attention of the seq2seq decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attention {
    None,
    /// Luong "general" (bilinear) attention.
    General,
}

/// `[model]`: one flat table; each kind reads its own keys (see the README's spec reference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSpec {
    pub kind: ModelKind,
    /// cnn: the convolution blocks, in order.
    pub conv: Vec<ConvBlock>,
    /// cnn and mlp: hidden linear layer sizes.
    pub hidden: Vec<usize>,
    /// cnn, mlp and seq2seq: dropout probability.
    pub dropout: f64,
    /// cnn and mlp: activation function.
    pub activation: Activation,
    /// seq2seq: character embedding size.
    pub embedding_dim: usize,
    /// seq2seq: LSTM units per direction of the bidirectional encoder.
    pub encoder_hidden: usize,
    /// seq2seq: LSTM units of the decoder.
    pub decoder_hidden: usize,
    /// seq2seq: attention mechanism.
    pub attention: Attention,
    /// seq2seq: tie the output projection to the decoder embedding.
    pub tie_embeddings: bool,
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            kind: ModelKind::Cnn,
            conv: vec![
                ConvBlock {
                    channels: 8,
                    kernel: 5,
                    stride: 1,
                    padding: Padding::Pixels(2),
                    pool: 2,
                },
                ConvBlock {
                    channels: 16,
                    kernel: 3,
                    stride: 1,
                    padding: Padding::Pixels(0),
                    pool: 2,
                },
            ],
            hidden: vec![600, 120],
            dropout: 0.3,
            activation: Activation::Relu,
            embedding_dim: 128,
            encoder_hidden: 64,
            decoder_hidden: 128,
            attention: Attention::None,
            tie_embeddings: true,
        }
    }
}

/// Optimizer family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
}

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `step_size` epochs.
    Step,
    /// Cosine decay from `lr` to 0 over all epochs.
    Cosine,
}

/// `[optimizer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerSpec {
    pub kind: OptimizerKind,
    pub lr: f64,
    /// L2 penalty: added to the gradient for sgd and adam, decoupled for adamw.
    pub l2_decay: f64,
    /// sgd only.
    pub momentum: f64,
    /// adam and adamw.
    pub betas: [f64; 2],
    pub eps: f64,
    pub schedule: Schedule,
    /// step schedule: epochs between decays.
    pub step_size: usize,
    /// step schedule: decay factor.
    pub gamma: f64,
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec {
            kind: OptimizerKind::Adam,
            lr: 0.001,
            l2_decay: 0.0,
            momentum: 0.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
            schedule: Schedule::Constant,
            step_size: 10,
            gamma: 0.1,
        }
    }
}

/// `[train.early_stopping]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarlyStoppingSpec {
    /// Epochs without improvement of `select.metric` before stopping; 0 = never stop early.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
}

impl Default for EarlyStoppingSpec {
    fn default() -> Self {
        EarlyStoppingSpec {
            patience: 0,
            min_delta: 0.0,
        }
    }
}

/// `[train.checkpoint]`: which epoch checkpoints stay on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Most recent checkpoints kept (at least 1: resume needs the last one).
    pub keep_last: usize,
    /// Also keep the best checkpoint by `select.metric`.
    pub keep_best: bool,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            keep_last: 1,
            keep_best: true,
        }
    }
}

/// `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    pub epochs: usize,
    pub batch_size: usize,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    /// CPU threads per run; 0 = cores / jobs.
    pub threads: usize,
    /// Log the running train loss every this many steps (0 = per epoch only).
    pub log_every: usize,
    pub early_stopping: EarlyStoppingSpec,
    pub checkpoint: CheckpointSpec,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            epochs: 20,
            batch_size: 8,
            device: "cpu".into(),
            threads: 0,
            log_every: 100,
            early_stopping: EarlyStoppingSpec::default(),
            checkpoint: CheckpointSpec::default(),
        }
    }
}

/// Decoding strategy for seq2seq evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecodeStrategy {
    Greedy,
    Beam,
}

/// `[decode]`: evaluation-only settings, not part of a run's training identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeSpec {
    pub strategy: DecodeStrategy,
    pub beam_width: usize,
    /// Exponent of the length normalisation of beam scores (0 = raw log probability).
    pub length_penalty: f64,
    /// Longest output, in characters.
    pub max_len: usize,
}

impl Default for DecodeSpec {
    fn default() -> Self {
        DecodeSpec {
            strategy: DecodeStrategy::Greedy,
            beam_width: 5,
            length_penalty: 1.0,
            max_len: 50,
        }
    }
}

/// Whether a larger or a smaller metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectMode {
    Max,
    Min,
}

impl SelectMode {
    /// Whether `a` is better than `b` in this mode: the one rule every policy, summary and
    /// `diff` uses.
    ///
    /// - A NaN is never better than anything.
    /// - Only a finite value can be better: an infinity is divergence, never a record, in
    ///   either direction (`-inf` loss under `min` and `+inf` accuracy under `max` included).
    /// - A finite `a` is better than a non-finite `b` (NaN or an infinity): a real value
    ///   beats no value.
    /// - Two finite values compare as numbers: `max` wants the larger, `min` the smaller;
    ///   equal values are not better (ties go to whoever was first).
    pub fn is_better(self, a: f64, b: f64) -> bool {
        self.is_better_by(a, b, 0.0)
    }

    /// Whether `a` beats `b` by more than `margin` (a finite, non-negative tolerance such as
    /// early stopping's `min_delta`), under the rules of [`SelectMode::is_better`].
    pub fn is_better_by(self, a: f64, b: f64, margin: f64) -> bool {
        if !a.is_finite() {
            return false;
        }
        if !b.is_finite() {
            return true;
        }
        match self {
            SelectMode::Max => a > b + margin,
            SelectMode::Min => a < b - margin,
        }
    }

    /// Whether `value` is a new record over `record` (`None`: no record yet) by more than
    /// `margin`; the first finite value is always a record.
    pub fn improves(self, value: f64, record: Option<f64>, margin: f64) -> bool {
        self.is_better_by(value, record.unwrap_or(f64::NAN), margin)
    }
}

#[cfg(test)]
mod select_mode_tests {
    use super::SelectMode::{self, Max, Min};

    const NAN: f64 = f64::NAN;
    const INF: f64 = f64::INFINITY;

    #[test]
    fn schedule_kind_words_are_their_spec_spelling() {
        use super::ScheduleKind as K;
        for k in [K::None, K::SuccessiveHalving, K::Asha, K::Median] {
            let spelled = serde_json::to_string(&k).unwrap();
            assert_eq!(spelled.trim_matches('"'), k.word());
        }
    }

    #[test]
    fn is_better_rules_table() {
        // (mode, a, b, is a better than b?)
        let table: &[(SelectMode, f64, f64, bool)] = &[
            (Max, 0.9, 0.5, true),
            (Max, 0.5, 0.9, false),
            (Min, 0.5, 0.9, true),
            (Min, 0.9, 0.5, false),
            // Ties are not better: the earlier value keeps its place.
            (Max, 0.5, 0.5, false),
            (Min, 0.5, 0.5, false),
            (Max, -0.0, 0.0, false),
            // A NaN is never better, and any real value beats it.
            (Max, NAN, 0.5, false),
            (Min, NAN, 0.5, false),
            (Max, NAN, NAN, false),
            (Max, 0.5, NAN, true),
            (Min, 0.5, NAN, true),
            // An infinity in the improving direction is divergence, not a record.
            (Max, INF, 0.5, false),
            (Min, -INF, 0.5, false),
            // ... and in the other direction it is no value at all.
            (Max, -INF, 0.5, false),
            (Min, INF, 0.5, false),
            (Max, 0.5, INF, true),
            (Min, 0.5, -INF, true),
            (Min, 0.5, INF, true),
            (Max, INF, NAN, false),
            (Min, -INF, INF, false),
            (Max, INF, -INF, false),
        ];
        for &(mode, a, b, want) in table {
            assert_eq!(
                mode.is_better(a, b),
                want,
                "{mode:?}: is {a} better than {b}?"
            );
        }
    }

    proptest::proptest! {
        /// "Better" is a strict order on the finite values, agrees with `<`/`>` there, and
        /// never puts a NaN or an infinity first, so sorting and best-so-far folds are sound.
        #[test]
        fn is_better_is_a_strict_order_that_only_finite_values_win(
            a in proptest::num::f64::ANY,
            b in proptest::num::f64::ANY,
            c in proptest::num::f64::ANY,
        ) {
            for mode in [Max, Min] {
                proptest::prop_assert!(!mode.is_better(a, a));
                proptest::prop_assert!(!(mode.is_better(a, b) && mode.is_better(b, a)));
                if mode.is_better(a, b) {
                    proptest::prop_assert!(a.is_finite());
                    if mode.is_better(b, c) {
                        proptest::prop_assert!(mode.is_better(a, c));
                    }
                }
                if a.is_finite() && b.is_finite() {
                    let want = if mode == Max { a > b } else { a < b };
                    proptest::prop_assert_eq!(mode.is_better(a, b), want);
                }
            }
        }
    }

    #[test]
    fn margins_and_records() {
        assert!(!Max.is_better_by(0.55, 0.5, 0.1));
        assert!(Max.is_better_by(0.65, 0.5, 0.1));
        assert!(!Min.is_better_by(0.45, 0.5, 0.1));
        assert!(Min.is_better_by(0.35, 0.5, 0.1));
        // A margin never lets a non-finite value in, nor turns a finite record into one.
        assert!(!Max.is_better_by(INF, 0.5, 0.1));
        assert!(!Max.is_better_by(1.0, f64::MAX, 1.0));
        assert!(Max.improves(0.1, None, 0.5));
        assert!(!Max.improves(NAN, None, 0.0));
        assert!(!Min.improves(-INF, None, 0.0));
        assert!(!Max.improves(0.5, Some(0.5), 0.0));
    }
}

/// `[select]`: how the winner is picked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelectSpec {
    /// Metric tag, e.g. `dev/accuracy` or `dev/error_rate`.
    pub metric: String,
    pub mode: SelectMode,
    /// Evaluate the winner on the test split.
    pub evaluate_test: bool,
    /// How configurations of replicates are ranked (`repeats > 1`).
    #[serde(skip_serializing_if = "SelectRank::is_mean")]
    pub rank: SelectRank,
    /// Which checkpoint test metrics, figures and decode-only variants evaluate; unset
    /// follows `keep_best` ([`Spec::test_checkpoint`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_checkpoint: Option<TestCheckpoint>,
}

impl Default for SelectSpec {
    fn default() -> Self {
        SelectSpec {
            metric: "dev/accuracy".into(),
            mode: SelectMode::Max,
            evaluate_test: true,
            rank: SelectRank::Mean,
            test_checkpoint: None,
        }
    }
}

/// `select.test_checkpoint`: the weights a run's test phase evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestCheckpoint {
    /// The checkpoint of the best epoch by `select.metric` (the epoch the run is ranked by).
    Best,
    /// The weights after the last epoch.
    Final,
}

impl TestCheckpoint {
    /// The word a spec uses for it.
    pub fn word(self) -> &'static str {
        match self {
            TestCheckpoint::Best => "best",
            TestCheckpoint::Final => "final",
        }
    }
}

/// `select.rank`: which figure of a configuration's replicates ranks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectRank {
    /// The mean of the replicates' select metric.
    #[default]
    Mean,
    /// The pessimistic end of the mean's 95% interval: a conservative pick that prefers a
    /// configuration whose replicates agree.
    LowerBound,
}

impl SelectRank {
    /// True for the default, which summaries and configs leave out.
    pub fn is_mean(&self) -> bool {
        *self == SelectRank::Mean
    }
}

/// Where runs execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    Local,
    Slurm,
}

/// `[launch.slurm]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmSpec {
    pub partition: String,
    /// `--time`, e.g. `"01:00:00"`; empty = the partition's default.
    pub time: String,
    pub cpus_per_task: usize,
    /// `--mem`, e.g. `"4G"`.
    pub mem: String,
    /// `--gres`, e.g. `"gpu:1"`.
    pub gres: String,
    /// Array throttle (`%N`); 0 = no limit.
    pub max_parallel: usize,
    /// Extra `sbatch` arguments, passed as given.
    pub extra_args: Vec<String>,
    /// Seconds between two looks at the queue while tracking; 0 = 2 s.
    pub poll_seconds: f64,
}

/// `[launch]`: how runs are executed. Never part of a run's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LaunchSpec {
    pub backend: Backend,
    /// Runs in parallel.
    pub jobs: usize,
    /// Devices to spread runs over, e.g. `["cuda:0", "cuda:1"]`; empty = `train.device`.
    pub devices: Vec<String>,
    pub jobs_per_device: usize,
    /// Extra attempts for a crashed run.
    pub retries: usize,
    /// Refuse grids that expand to more runs than this.
    pub max_runs: usize,
    pub slurm: SlurmSpec,
}

impl Default for LaunchSpec {
    fn default() -> Self {
        LaunchSpec {
            backend: Backend::Local,
            jobs: 1,
            devices: Vec::new(),
            jobs_per_device: 1,
            retries: 0,
            max_runs: 1000,
            slurm: SlurmSpec::default(),
        }
    }
}

/// `schedule.kind`: which pruning policy stops runs early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Every run trains to `train.epochs`.
    #[default]
    None,
    /// Synchronous rungs: every live run reports the rung epoch, the best `1/eta` go on.
    SuccessiveHalving,
    /// Asynchronous successive halving: promote as soon as a run is in its rung's top `1/eta`.
    Asha,
    /// Stop a run worse than the median of the other runs at the same epoch.
    Median,
}

impl ScheduleKind {
    /// The word specs, records and messages spell the kind with (its serde name).
    pub fn word(self) -> &'static str {
        match self {
            ScheduleKind::None => "none",
            ScheduleKind::SuccessiveHalving => "successive_halving",
            ScheduleKind::Asha => "asha",
            ScheduleKind::Median => "median",
        }
    }
}

/// `[schedule]`: when runs of the grid are stopped early. Never part of a run's identity: a
/// pruned run's first epochs are the same computation as an unpruned one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSpec {
    pub kind: ScheduleKind,
    /// The first rung's epoch (for `median`, the first epoch at which a run may be stopped).
    pub min_epochs: usize,
    /// `eta`: rungs at `min_epochs * eta^k`, keeping the best `ceil(n / eta)` at each.
    pub reduction_factor: usize,
    /// Rungs lie below this epoch; 0 = `train.epochs`. Survivors train to `train.epochs`.
    pub max_epochs: usize,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        ScheduleSpec {
            kind: ScheduleKind::None,
            min_epochs: 1,
            reduction_factor: 3,
            max_epochs: 0,
        }
    }
}

impl ScheduleSpec {
    /// True at the built-in defaults, which resolved configs leave out.
    pub fn is_default(&self) -> bool {
        *self == ScheduleSpec::default()
    }

    /// `max_epochs` with 0 resolved to the run's `train.epochs`.
    pub fn max_epochs_for(&self, train_epochs: usize) -> usize {
        if self.max_epochs == 0 {
            train_epochs
        } else {
            self.max_epochs
        }
    }
}

/// A value a grid axis takes: any TOML scalar or array.
pub type GridValue = toml::Value;

/// A random-search distribution for one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Distribution {
    Uniform { low: f64, high: f64 },
    LogUniform { low: f64, high: f64 },
    Choice { values: Vec<GridValue> },
}

/// `[grid.random]`: seeded random sampling.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomSpec {
    /// Number of samples drawn (0 = no random search).
    pub samples: usize,
    /// Seed of the sampler; defaults to the experiment seed when absent.
    pub seed: Option<u64>,
    /// Dotted key -> distribution.
    pub params: BTreeMap<String, Distribution>,
}

/// `[grid]`: the search space. Axes are dotted keys of the spec (`"optimizer.lr"`).
///
/// Runs = cartesian product of `axes` and of each `zip` group (whose axes vary together)
/// x each `variant` (when any) x each random sample (when `random.samples > 0`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GridSpec {
    /// Cartesian axes: dotted key -> values.
    pub axes: BTreeMap<String, Vec<GridValue>>,
    /// Groups of axes of equal length that vary together.
    pub zip: Vec<BTreeMap<String, Vec<GridValue>>>,
    /// Explicit tables of dotted key -> value, one run each.
    pub variant: Vec<BTreeMap<String, GridValue>>,
    pub random: RandomSpec,
}
