//! `predict`'s library half: which run a target names, which of its checkpoints is loaded,
//! and the predictions of its model. The models are loaded by the train module's own load
//! paths, so a prediction is what the run's evaluation computes for the same input.

use std::path::{Path, PathBuf};

use crate::data::DataError;
use crate::data::images::read_unlabelled_images;
use crate::spec::TestCheckpoint;
use crate::spec::{ModelKind, Spec};
use crate::store::{self, RunDir, Stale};
use crate::summary::{self, SummaryError};
use crate::train::checkpoint::{self, CheckpointState};
use crate::train::{self, TrainError};

/// Why `predict` cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// The target names no experiment or no run in it.
    #[error("{0}")]
    Unknown(String),
    /// The run has no checkpoint to load.
    #[error("run {run} ({name}) has no checkpoint under {}: it has not finished an epoch", dir.display())]
    NoCheckpoint {
        run: String,
        name: String,
        dir: PathBuf,
    },
    /// `--checkpoint best` for a run that did not keep its best checkpoint.
    #[error(
        "run {run} ({name}) kept no best checkpoint (train.checkpoint.keep_best = false); \
         use --checkpoint final"
    )]
    NoBest { run: String, name: String },
    /// The input does not fit the model kind.
    #[error("run {run} ({name}) is a {kind} model: {message}")]
    WrongInput {
        run: String,
        name: String,
        kind: &'static str,
        message: String,
    },
    /// The run's training data changed since it trained: its vocabularies cannot be rebuilt.
    #[error(
        "run {run} ({name}): {stale}; the vocabularies it trained with cannot be rebuilt from \
         `data.dir` = {dir:?} (running its spec again trains a run on the current data)"
    )]
    DataChanged {
        run: String,
        name: String,
        stale: Stale,
        dir: String,
    },
    #[error(transparent)]
    Summary(#[from] SummaryError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Pairs(#[from] crate::data::pairs::PairsError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
}

/// A run resolved for prediction: its directory, id, name and resolved config.
#[derive(Debug, Clone)]
pub struct Target {
    pub dir: PathBuf,
    pub id: String,
    pub name: String,
    pub training_id: String,
    pub config: Spec,
}

/// Resolves `target`: an experiment (a spec file, a directory or a name under `runs_dir`)
/// means its winner as `best` picks it; `EXPERIMENT/RUN` one of its runs by id, id prefix
/// (4 characters or more) or name, the rule `--rerun` uses.
pub fn resolve(target: &str, runs_dir: &Path) -> Result<Target, PredictError> {
    let as_path = Path::new(target);
    let experiment = if as_path.is_file() {
        let spec = crate::spec::load(as_path, &[]).map_err(|e| {
            PredictError::Unknown(format!("{target}: not a spec this build reads: {e}"))
        })?;
        let name = runs_dir.join(spec.name).to_string_lossy().into_owned();
        Some(summary::resolve_experiment(&name, runs_dir)?)
    } else {
        summary::resolve_experiment(target, runs_dir).ok()
    };
    if let Some(dir) = experiment {
        let (exp, runs) = summary::load_experiment(&dir)?;
        let run = summary::best::winner_run(&exp, &runs)?;
        return Ok(target_of(run));
    }
    let Some((experiment, key)) = target.rsplit_once('/') else {
        return Err(PredictError::Unknown(format!(
            "no experiment `{target}` under {}; give an experiment name, its directory or \
             spec file, or EXPERIMENT/RUN",
            runs_dir.display()
        )));
    };
    Ok(target_of(&summary::find_run(experiment, key, runs_dir)?))
}

fn target_of(run: &summary::run::LoadedRun) -> Target {
    Target {
        dir: run.dir.clone(),
        id: run.summary.run.id.clone(),
        name: run.summary.run.name.clone(),
        training_id: run.summary.run.training_id.clone(),
        config: run.spec.clone(),
    }
}

/// The checkpoint a prediction loads: `pick`, or the one the run's test phase evaluated
/// ([`crate::spec::Spec::test_checkpoint`]), so a prediction uses the weights its test
/// numbers come from. A decode-only run has no checkpoints of its own: it reads those of the run
/// that trained its model, as its evaluation did.
pub fn checkpoint_of(
    target: &Target,
    pick: Option<TestCheckpoint>,
) -> Result<(PathBuf, CheckpointState), PredictError> {
    let keep_best = target.config.train.checkpoint.keep_best;
    let pick = pick.unwrap_or(target.config.test_checkpoint());
    if pick == TestCheckpoint::Best && !keep_best {
        return Err(PredictError::NoBest {
            run: target.id.clone(),
            name: target.name.clone(),
        });
    }
    let rd = RunDir::at(&target.dir);
    let mut dir = rd.checkpoints();
    if checkpoint::list(&dir)?.is_empty()
        && let Some(source) =
            crate::worker::find_reusable_training(&rd, &target.training_id, &target.id)
    {
        dir = source.checkpoints();
    }
    checkpoint::picked(&dir, &target.training_id, pick, target.config.select.mode)?.ok_or_else(
        || PredictError::NoCheckpoint {
            run: target.id.clone(),
            name: target.name.clone(),
            dir,
        },
    )
}

/// One image's prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePrediction {
    pub class: usize,
    pub probabilities: Vec<f32>,
}

/// Refuses an input the run's model kind does not take (`images` or sentences), before any
/// input is read or model loaded.
pub fn check_input(target: &Target, images: bool) -> Result<(), PredictError> {
    match (target.config.model.kind == ModelKind::Seq2seq, images) {
        (true, true) => Err(wrong_input(
            target,
            "it translates sentences; give --input TEXT or sentences on stdin, not --images",
        )),
        (false, false) => Err(wrong_input(
            target,
            "it classifies images; give --images FILE, not sentences",
        )),
        _ => Ok(()),
    }
}

fn wrong_input(target: &Target, message: &str) -> PredictError {
    PredictError::WrongInput {
        run: target.id.clone(),
        name: target.name.clone(),
        kind: kind_word(target.config.model.kind),
        message: message.to_string(),
    }
}

fn kind_word(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Cnn => "cnn",
        ModelKind::Mlp => "mlp",
        ModelKind::Seq2seq => "seq2seq",
    }
}

/// Classifies every image of `images` with the image run `target`'s checkpoint `path`.
pub fn classify(
    target: &Target,
    path: &Path,
    images: &Path,
) -> Result<Vec<ImagePrediction>, PredictError> {
    check_input(target, true)?;
    let set = read_unlabelled_images(images)?;
    // The model's input size is that of the run's training images, when they can be read.
    if let Ok(h) = crate::data::images::read_image_headers(&target.config.data)
        && (h.rows, h.cols) != (set.rows, set.cols)
    {
        return Err(PredictError::Data(DataError::Shape {
            path: images.to_path_buf(),
            message: format!(
                "images are {}x{}, run {} ({}) was trained on {}x{} images",
                set.rows, set.cols, target.id, target.name, h.rows, h.cols
            ),
        }));
    }
    let device = candle_core::Device::Cpu;
    let model = train::classifier::load_trained(&target.config, set.rows, set.cols, path, &device)?;
    let probabilities = train::classifier::class_probabilities(model.as_ref(), &set, &device)?;
    Ok(probabilities
        .into_iter()
        .map(|p| {
            // The first of equal maxima, as Candle's argmax picks it in evaluation.
            let class = p
                .iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > p[best] { i } else { best });
            ImagePrediction {
                class,
                probabilities: p,
            }
        })
        .collect())
}

/// Translates `sentences` with the translation run `target`'s checkpoint `path` and its
/// `[decode]` settings. The vocabularies are rebuilt from the run's training file as training
/// built them; when that file changed since the run was planned, nothing is translated.
pub fn translate(
    target: &Target,
    path: &Path,
    sentences: &[String],
    runs_dir: &Path,
) -> Result<Vec<String>, PredictError> {
    check_input(target, false)?;
    let plan = store::read_plan(&RunDir::at(&target.dir))?
        .ok_or_else(|| PredictError::Unknown(format!("{}: no plan.json", target.dir.display())))?;
    let now = store::Fingerprints::open(runs_dir).data(&target.config.data);
    let numerics = crate::grid::identity::numerics_version(target.config.model.kind);
    if let Err(stale @ Stale::Data { .. }) = store::check_current(&plan, &now, numerics) {
        return Err(PredictError::DataChanged {
            run: target.id.clone(),
            name: target.name.clone(),
            stale,
            dir: target.config.data.dir.clone(),
        });
    }
    let train_pairs = crate::data::pairs::load_train(&target.config.data)?;
    let device = candle_core::Device::Cpu;
    let (model, src, tgt) =
        train::seq2seq::load_trained(&target.config, &train_pairs, path, &device)?;
    Ok(train::seq2seq::translate(
        &model,
        &src,
        &tgt,
        sentences,
        &target.config.decode,
    )?)
}
