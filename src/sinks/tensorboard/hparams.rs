//! The HParams plugin's records: per-run session start/end info and the per-experiment
//! record listing hyper-parameter domains and metrics.
//!
//! Wire layout (see `../shared/notes/tensorboard.md`): a summary value tagged
//! `_hparams_/...` whose metadata names plugin `hparams` and carries `HParamsPluginData`.
//! TensorBoard keeps only the first metadata it sees per run and tag, which is why resume
//! removes older hparams records instead of adding to them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use protobuf::well_known_types::{ListValue, Value};
use protobuf::{Message, RepeatedField};
use tensorboard_proto::api::{
    DataType, DatasetType, Experiment, HParamInfo, Interval, MetricInfo, MetricName, Status,
};
use tensorboard_proto::event::Event;
use tensorboard_proto::plugin_hparams::{HParamsPluginData, SessionEndInfo, SessionStartInfo};
use tensorboard_proto::summary::Summary_Value;

use super::TbError;
use super::record;
use super::summaries::{one_value, plugin_metadata, summary_event};
use super::writer::{EventFileWriter, list_event_files, now_secs};

/// Tag prefix of every hparams record.
pub const TAG_PREFIX: &str = "_hparams_/";
/// Tag of the per-run start record.
pub const SESSION_START_TAG: &str = "_hparams_/session_start_info";
/// Tag of the per-run end record.
pub const SESSION_END_TAG: &str = "_hparams_/session_end_info";
/// Tag of the per-experiment record.
pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";

/// Fixed keys shown beside the varied ones: those that shape every result of a run.
pub const FIXED_HPARAMS: &[&str] = &[
    "model.kind",
    "optimizer.kind",
    "optimizer.lr",
    "train.batch_size",
    "train.epochs",
    "model.dropout",
    "seed",
];

/// Seq2seq keys shown as well when the model is a seq2seq.
const SEQ2SEQ_HPARAMS: &[&str] = &["model.attention", "decode.strategy", "decode.beam_width"];

/// The hyper-parameters of one run: every varied key plus [`FIXED_HPARAMS`].
pub fn run_hparams(
    config: &crate::spec::Spec,
    varied: &BTreeMap<String, toml::Value>,
) -> BTreeMap<String, HParamValue> {
    let mut out: BTreeMap<String, HParamValue> = varied
        .iter()
        .map(|(k, v)| (k.clone(), HParamValue::from_toml(v)))
        .collect();
    let Ok(table) = toml::Value::try_from(config) else {
        return out;
    };
    let seq2seq = config.model.kind == crate::spec::ModelKind::Seq2seq;
    let extra = if seq2seq { SEQ2SEQ_HPARAMS } else { &[] };
    for key in FIXED_HPARAMS.iter().chain(extra) {
        if let Some(v) = crate::spec::schema::get_path(&table, key) {
            out.entry(key.to_string())
                .or_insert_with(|| HParamValue::from_toml(v));
        }
    }
    out
}

/// One hyper-parameter value as the HParams dashboard shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum HParamValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

impl HParamValue {
    /// Converts a spec value: numbers, strings and booleans as themselves; dates, arrays
    /// and tables as their TOML text, so a list-valued parameter is still shown.
    pub fn from_toml(v: &toml::Value) -> Self {
        match v {
            toml::Value::Integer(i) => HParamValue::Number(*i as f64),
            toml::Value::Float(f) => HParamValue::Number(*f),
            toml::Value::Boolean(b) => HParamValue::Bool(*b),
            toml::Value::String(s) => HParamValue::Text(s.clone()),
            other => HParamValue::Text(other.to_string()),
        }
    }

    fn to_proto(&self) -> Value {
        let mut v = Value::new();
        match self {
            HParamValue::Number(x) => v.set_number_value(*x),
            HParamValue::Text(s) => v.set_string_value(s.clone()),
            HParamValue::Bool(b) => v.set_bool_value(*b),
        }
        v
    }

    fn kind(&self) -> DataType {
        match self {
            HParamValue::Number(_) => DataType::DATA_TYPE_FLOAT64,
            HParamValue::Text(_) => DataType::DATA_TYPE_STRING,
            HParamValue::Bool(_) => DataType::DATA_TYPE_BOOL,
        }
    }

    /// A total order within one kind, for sorted, de-duplicated domains.
    fn sort_key(&self, other: &Self) -> std::cmp::Ordering {
        use HParamValue::*;
        match (self, other) {
            (Number(a), Number(b)) => a.total_cmp(b),
            (Text(a), Text(b)) => a.cmp(b),
            (Bool(a), Bool(b)) => a.cmp(b),
            _ => (self.kind() as i32).cmp(&(other.kind() as i32)),
        }
    }
}

impl From<f64> for HParamValue {
    fn from(v: f64) -> Self {
        HParamValue::Number(v)
    }
}
impl From<i64> for HParamValue {
    fn from(v: i64) -> Self {
        HParamValue::Number(v as f64)
    }
}
impl From<bool> for HParamValue {
    fn from(v: bool) -> Self {
        HParamValue::Bool(v)
    }
}
impl From<&str> for HParamValue {
    fn from(v: &str) -> Self {
        HParamValue::Text(v.into())
    }
}
impl From<String> for HParamValue {
    fn from(v: String) -> Self {
        HParamValue::Text(v)
    }
}

/// The values a hyper-parameter takes across an experiment.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// The listed values (a grid axis, or the single value of a fixed parameter).
    Discrete(Vec<HParamValue>),
    /// Any number in `[min, max]` (random search).
    Interval { min: f64, max: f64 },
}

/// A hyper-parameter column of the HParams dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct HParamDomain {
    pub name: String,
    pub domain: Domain,
}

/// Discrete domains from the hparams maps of every run of an experiment (the maps given
/// to each run's `TensorBoardSink`): each name's distinct values, sorted.
pub fn domains_from_runs<'a>(
    runs: impl IntoIterator<Item = &'a BTreeMap<String, HParamValue>>,
) -> Vec<HParamDomain> {
    let mut all: BTreeMap<&str, Vec<HParamValue>> = BTreeMap::new();
    for run in runs {
        for (k, v) in run {
            all.entry(k.as_str()).or_default().push(v.clone());
        }
    }
    all.into_iter()
        .map(|(name, mut values)| {
            values.sort_by(|a, b| a.sort_key(b));
            values.dedup();
            HParamDomain {
                name: name.into(),
                domain: Domain::Discrete(values),
            }
        })
        .collect()
}

/// An event carrying `data` under `tag` for the hparams plugin (step 0, no tensor).
fn hparams_event(tag: &str, data: HParamsPluginData) -> Result<Event, TbError> {
    let mut v = Summary_Value::new();
    v.set_tag(tag.into());
    v.set_metadata(plugin_metadata("hparams", data.write_to_bytes()?));
    Ok(summary_event(0, one_value(v)))
}

/// The run's hyper-parameters: `_hparams_/session_start_info`.
pub fn session_start(hparams: &BTreeMap<String, HParamValue>) -> Result<Event, TbError> {
    let mut info = SessionStartInfo::new();
    for (k, v) in hparams {
        info.hparams.insert(k.clone(), v.to_proto());
    }
    info.set_start_time_secs(now_secs());
    let mut data = HParamsPluginData::new();
    data.set_session_start_info(info);
    hparams_event(SESSION_START_TAG, data)
}

/// How a run ended: `_hparams_/session_end_info` with status success or failure.
pub fn session_end(success: bool) -> Result<Event, TbError> {
    let mut info = SessionEndInfo::new();
    info.set_status(if success {
        Status::STATUS_SUCCESS
    } else {
        Status::STATUS_FAILURE
    });
    info.set_end_time_secs(now_secs());
    let mut data = HParamsPluginData::new();
    data.set_session_end_info(info);
    hparams_event(SESSION_END_TAG, data)
}

/// The experiment record: hparam columns with their domains, and the metric columns.
/// TensorBoard reads it from whichever run holds it; it lists every run's sessions.
///
/// Metric tags under `train/` are marked as training data, `dev/` as validation; each
/// metric's value is read from the run's own scalars (empty group).
pub fn experiment(hparams: &[HParamDomain], metric_tags: &[String]) -> Result<Event, TbError> {
    let mut exp = Experiment::new();
    exp.set_time_created_secs(now_secs());
    let infos = hparams.iter().map(|h| {
        let mut info = HParamInfo::new();
        info.set_name(h.name.clone());
        match &h.domain {
            Domain::Interval { min, max } => {
                info.set_field_type(DataType::DATA_TYPE_FLOAT64);
                let mut i = Interval::new();
                i.set_min_value(*min);
                i.set_max_value(*max);
                info.set_domain_interval(i);
            }
            Domain::Discrete(values) => {
                let kind = values.first().map(HParamValue::kind);
                // Mixed kinds have no common type; TensorBoard then infers from sessions.
                if let Some(kind) = kind.filter(|k| values.iter().all(|v| v.kind() == *k)) {
                    info.set_field_type(kind);
                    let mut list = ListValue::new();
                    list.set_values(values.iter().map(HParamValue::to_proto).collect());
                    info.set_domain_discrete(list);
                }
            }
        }
        info
    });
    exp.set_hparam_infos(infos.collect());
    let metrics = metric_tags.iter().map(|tag| {
        let mut name = MetricName::new();
        name.set_tag(tag.clone());
        let mut m = MetricInfo::new();
        m.set_name(name);
        m.set_dataset_type(if tag.starts_with("train/") {
            DatasetType::DATASET_TRAINING
        } else if tag.starts_with("dev/") {
            DatasetType::DATASET_VALIDATION
        } else {
            DatasetType::DATASET_UNKNOWN
        });
        m
    });
    exp.set_metric_infos(RepeatedField::from_iter(metrics));
    let mut data = HParamsPluginData::new();
    data.set_experiment(exp);
    hparams_event(EXPERIMENT_TAG, data)
}

/// The tag of an event's first summary value, if it has one.
pub fn first_tag(ev: &Event) -> Option<&str> {
    ev.has_summary()
        .then(|| ev.get_summary().get_value().first().map(|v| v.get_tag()))
        .flatten()
}

/// True when every record of the file at `path` after its header is an experiment record:
/// such files are ours to replace.
fn only_experiment_records(path: &Path) -> Result<bool, TbError> {
    let (records, _) = record::read_file(path)?;
    for r in &records {
        let ev = record::event(path, r)?;
        if ev.has_file_version() {
            continue;
        }
        if first_tag(&ev) != Some(EXPERIMENT_TAG) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// How the name of the file holding the experiment record ends
/// (`events.out.tfevents.<secs>.<host>.<pid>.<n>.experiment`): it is found by its name,
/// whichever run's log directory holds it.
pub const EXPERIMENT_FILE_SUFFIX: &str = ".experiment";

/// Writes the experiment record into a new event file in `log_dir`, a run's log directory
/// (a file at the log tree's root would make a TensorBoard run of its own, `.`), then
/// removes every other experiment file under `tree`, the experiment's log tree, and the
/// event files directly in `legacy_dir` that hold nothing but an experiment record (where
/// earlier versions wrote it): TensorBoard would keep the first one it reads. Returns the
/// new file's path.
pub fn write_experiment(
    log_dir: &Path,
    tree: &Path,
    legacy_dir: &Path,
    hparams: &[HParamDomain],
    metric_tags: &[String],
) -> Result<PathBuf, TbError> {
    let mut w = EventFileWriter::create_with_suffix(log_dir, EXPERIMENT_FILE_SUFFIX)?;
    w.write_event(&experiment(hparams, metric_tags)?)?;
    w.sync()?;
    let new = w.path().to_path_buf();
    for path in experiment_files(tree)? {
        if path != new {
            std::fs::remove_file(&path).map_err(|e| TbError::io(&path, e))?;
        }
    }
    for name in list_event_files(legacy_dir)? {
        let path = legacy_dir.join(&name);
        if path != new && only_experiment_records(&path)? {
            std::fs::remove_file(&path).map_err(|e| TbError::io(&path, e))?;
        }
    }
    Ok(new)
}

/// Every experiment file under `dir`, at any depth (symbolic links are not followed).
fn experiment_files(dir: &Path) -> Result<Vec<PathBuf>, TbError> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(TbError::io(&d, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| TbError::io(&d, e))?;
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && super::writer::is_event_file(&name)
                && name.ends_with(EXPERIMENT_FILE_SUFFIX)
            {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin_data(ev: &Event) -> HParamsPluginData {
        let v = &ev.get_summary().get_value()[0];
        assert_eq!(
            v.get_metadata().get_plugin_data().get_plugin_name(),
            "hparams"
        );
        protobuf::Message::parse_from_bytes(v.get_metadata().get_plugin_data().get_content())
            .unwrap()
    }

    #[test]
    fn session_start_decodes_back_to_the_same_values() {
        let mut hp = BTreeMap::new();
        hp.insert("optimizer.lr".to_string(), HParamValue::Number(5e-4));
        hp.insert("model.attention".to_string(), HParamValue::Bool(true));
        hp.insert(
            "decode.strategy".to_string(),
            HParamValue::Text("beam".into()),
        );
        let ev = session_start(&hp).unwrap();
        // Through the wire format and back, as a reader would see it.
        let bytes = ev.write_to_bytes().unwrap();
        let ev: Event = protobuf::Message::parse_from_bytes(&bytes).unwrap();
        assert_eq!(first_tag(&ev), Some(SESSION_START_TAG));
        let data = plugin_data(&ev);
        assert_eq!(data.get_version(), 0);
        let info = data.get_session_start_info();
        assert_eq!(info.hparams.len(), 3);
        assert_eq!(info.hparams["optimizer.lr"].get_number_value(), 5e-4);
        assert!(info.hparams["model.attention"].get_bool_value());
        assert_eq!(info.hparams["decode.strategy"].get_string_value(), "beam");
        assert!(info.get_start_time_secs() > 1.6e9);
    }

    #[test]
    fn session_end_status() {
        let ok = plugin_data(&session_end(true).unwrap());
        assert_eq!(
            ok.get_session_end_info().get_status(),
            Status::STATUS_SUCCESS
        );
        let bad = plugin_data(&session_end(false).unwrap());
        assert_eq!(
            bad.get_session_end_info().get_status(),
            Status::STATUS_FAILURE
        );
    }

    #[test]
    fn experiment_lists_domains_and_metrics() {
        let runs: Vec<BTreeMap<String, HParamValue>> = [1e-2, 5e-4, 1e-5, 5e-4]
            .iter()
            .map(|lr| {
                let mut m = BTreeMap::new();
                m.insert("optimizer.lr".to_string(), HParamValue::Number(*lr));
                m.insert("model.kind".to_string(), HParamValue::Text("cnn".into()));
                m
            })
            .collect();
        let domains = domains_from_runs(&runs);
        assert_eq!(domains.len(), 2);
        assert_eq!(
            domains[1].domain,
            Domain::Discrete(vec![1e-5.into(), 5e-4.into(), 1e-2.into()])
        );
        let tags = vec!["dev/accuracy".to_string(), "train/loss".to_string()];
        let data = plugin_data(&experiment(&domains, &tags).unwrap());
        let exp = data.get_experiment();
        let lr = &exp.get_hparam_infos()[1];
        assert_eq!(lr.get_name(), "optimizer.lr");
        assert_eq!(lr.get_field_type(), DataType::DATA_TYPE_FLOAT64);
        let values: Vec<f64> = lr
            .get_domain_discrete()
            .get_values()
            .iter()
            .map(|v| v.get_number_value())
            .collect();
        assert_eq!(values, vec![1e-5, 5e-4, 1e-2]);
        let kind = &exp.get_hparam_infos()[0];
        assert_eq!(kind.get_field_type(), DataType::DATA_TYPE_STRING);
        let m = exp.get_metric_infos();
        assert_eq!(m[0].get_name().get_tag(), "dev/accuracy");
        assert_eq!(m[0].get_dataset_type(), DatasetType::DATASET_VALIDATION);
        assert_eq!(m[1].get_dataset_type(), DatasetType::DATASET_TRAINING);
    }

    #[test]
    fn mixed_kinds_get_no_declared_type() {
        let d = HParamDomain {
            name: "x".into(),
            domain: Domain::Discrete(vec![1.0.into(), "a".into()]),
        };
        let data = plugin_data(&experiment(&[d], &[]).unwrap());
        let info = &data.get_experiment().get_hparam_infos()[0];
        assert_eq!(info.get_field_type(), DataType::DATA_TYPE_UNSET);
        assert!(!info.has_domain_discrete());
    }

    #[test]
    fn toml_values_convert() {
        assert_eq!(HParamValue::from_toml(&toml::Value::Integer(3)), 3.0.into());
        assert_eq!(
            HParamValue::from_toml(&toml::Value::Boolean(false)),
            false.into()
        );
        let arr = toml::Value::Array(vec![toml::Value::Integer(1), toml::Value::Integer(2)]);
        assert_eq!(HParamValue::from_toml(&arr), "[1, 2]".into());
    }

    #[test]
    fn write_experiment_replaces_only_its_own_earlier_files() {
        let tmp = tempfile::tempdir().unwrap();
        let exp = tmp.path();
        let tree = exp.join("tb");
        let d = vec![HParamDomain {
            name: "lr".into(),
            domain: Domain::Interval { min: 0.0, max: 1.0 },
        }];
        let m = ["dev/loss".to_string()];
        // Where an earlier version wrote it: directly in the experiment directory.
        let mut legacy = EventFileWriter::create(exp).unwrap();
        legacy.write_event(&experiment(&d, &m).unwrap()).unwrap();
        let first = write_experiment(&tree.join("a"), &tree, exp, &d, &m).unwrap();
        assert!(!legacy.path().exists());
        assert!(first.to_string_lossy().ends_with(EXPERIMENT_FILE_SUFFIX));
        // A run's own event file beside it holds other data and must survive.
        let mut other = EventFileWriter::create(&tree.join("a")).unwrap();
        other
            .write_event(&super::super::summaries::scalar(1, "x", 1.0))
            .unwrap();
        // The first run changed: the record moves to the new first run's directory.
        let second = write_experiment(&tree.join("b/r0"), &tree, exp, &d, &m).unwrap();
        assert!(!first.exists());
        assert!(second.exists());
        assert!(other.path().exists());
        assert_eq!(experiment_files(&tree).unwrap(), vec![second]);
    }
}
