//! The TensorBoard event files a resumed run reads back: the TFRecord framing
//! (`record::parse`), the resume cleanup that reads every event file and the `.epochs.json`
//! sidecar (`TensorBoardSink` on `Started`), and the round trips: what the writer writes
//! reads back, and a run killed at any point and resumed from any checkpoint shows one
//! continuous curve.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orchestrate::events::{EventSink, RunEvent};
use orchestrate::sinks::tensorboard::record::{event, frame, parse, read_file};
use orchestrate::sinks::tensorboard::resume::SIDECAR;
use orchestrate::sinks::tensorboard::writer::{EventFileWriter, list_event_files};
use orchestrate::sinks::tensorboard::{HParamValue, TensorBoardSink, summaries};
use orchestrate::store::RunState;
use proptest::prelude::*;
use protobuf::Message;
use serde_json::Value;
use tensorboard_proto::event::Event;

use crate::harness::{check_bounded, fuzz, peak_alloc, scratch, variant};
use crate::mutate::{EDGES, Edit, Input, apply, edits, mutated};

fn sink(dir: &Path) -> TensorBoardSink {
    let mut hp = BTreeMap::new();
    hp.insert("optimizer.lr".to_string(), HParamValue::Number(1e-3));
    TensorBoardSink::in_dir(dir.to_path_buf(), hp)
}

fn started(resumed_from: usize, steps_per_epoch: u64) -> RunEvent {
    RunEvent::Started {
        attempt: 1,
        resumed_from,
        epochs: 4,
        steps_per_epoch,
    }
}

fn scalar(epoch: usize, step: u64, tag: &str) -> RunEvent {
    RunEvent::Scalar {
        epoch,
        step,
        tag: tag.into(),
        value: 1.0 / step as f64,
    }
}

/// How far an epoch got before its attempt ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reached {
    /// Killed after this many training steps.
    Steps(u64),
    /// Evaluated (dev records written) but killed before its `EpochEnd` reached the sink.
    Evaluated,
    /// Finished.
    End,
}

/// Epoch `epoch` of `spe` steps, as far as `reached`.
fn epoch(s: &mut TensorBoardSink, epoch: usize, spe: u64, reached: Reached) {
    let first = (epoch as u64 - 1) * spe + 1;
    let steps = match reached {
        Reached::Steps(n) => n,
        _ => spe,
    };
    for step in first..first + steps {
        s.emit(&scalar(epoch, step, "train/loss")).unwrap();
    }
    if !matches!(reached, Reached::Steps(_)) {
        let step = epoch as u64 * spe;
        s.emit(&scalar(epoch, step, "dev/loss")).unwrap();
        s.emit(&RunEvent::Text {
            step,
            tag: "samples".into(),
            text: format!("epoch {epoch}"),
        })
        .unwrap();
    }
    if reached == Reached::End {
        s.emit(&RunEvent::EpochEnd {
            epoch,
            step: epoch as u64 * spe,
        })
        .unwrap();
    }
}

/// A log as a killed run leaves it: two attempts (the second resumed after epoch 1), the
/// second killed in epoch 3 with a half-written record; its files by name.
fn killed_log(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut a = sink(dir);
    a.emit(&started(0, 4)).unwrap();
    epoch(&mut a, 1, 4, Reached::End);
    epoch(&mut a, 2, 4, Reached::Steps(2));
    a.emit(&RunEvent::Image {
        step: 5,
        tag: "conv1/input".into(),
        width: 2,
        height: 2,
        channels: 1,
        pixels: vec![0, 80, 160, 240],
    })
    .unwrap();
    drop(a);
    let mut b = sink(dir);
    b.emit(&started(1, 4)).unwrap();
    epoch(&mut b, 2, 4, Reached::End);
    epoch(&mut b, 3, 4, Reached::Steps(3));
    drop(b);
    let mut files = BTreeMap::new();
    for name in list_event_files(dir)
        .unwrap()
        .into_iter()
        .chain([SIDECAR.to_string()])
    {
        files.insert(name.clone(), std::fs::read(dir.join(&name)).unwrap());
    }
    let last = list_event_files(dir).unwrap().pop().unwrap();
    files
        .get_mut(&last)
        .unwrap()
        .extend_from_slice(&frame(b"torn")[..9]);
    files
}

/// How an event file is broken: its bytes (the CRCs then mostly catch it), or one record's
/// payload framed again with valid CRCs, so the event decoder and the resume rules see it.
#[derive(Debug, Clone)]
enum FileEdit {
    Bytes(Vec<Edit>),
    Record(prop::sample::Index, Vec<Edit>),
}

fn file_edit() -> impl Strategy<Value = FileEdit> {
    prop_oneof![
        1 => edits(4).prop_map(FileEdit::Bytes),
        2 => (any::<prop::sample::Index>(), edits(4)).prop_map(|(i, e)| FileEdit::Record(i, e)),
    ]
}

/// `bytes` (an event file, perhaps with a torn tail) broken by `edit`.
fn break_file(bytes: &[u8], edit: &FileEdit) -> Vec<u8> {
    match edit {
        FileEdit::Bytes(e) => apply(bytes.to_vec(), e, bytes),
        FileEdit::Record(i, e) => {
            let Ok((records, complete)) = parse(Path::new("seed"), bytes) else {
                return bytes.to_vec();
            };
            if records.is_empty() {
                return bytes.to_vec();
            }
            let k = i.index(records.len());
            let mut out = Vec::new();
            for (j, r) in records.iter().enumerate() {
                if j == k {
                    out.extend(frame(&apply(r.data.clone(), e, &r.data)));
                } else {
                    out.extend(frame(&r.data));
                }
            }
            out.extend_from_slice(&bytes[complete as usize..]);
            out
        }
    }
}

#[test]
fn fuzz_event_records() {
    let tmp = scratch();
    let mut seeds: Vec<Vec<u8>> = killed_log(tmp.path())
        .into_iter()
        .filter(|(n, _)| n != SIDECAR)
        .map(|(_, b)| b)
        .collect();
    seeds.push([frame(b""), frame(&[0xff; 40])].concat());
    let path = Path::new("events.out.tfevents.1.host");
    let n = seeds.len();
    let case = prop_oneof![
        1 => mutated(seeds.clone(), 256),
        1 => (0..n, file_edit()).prop_map(move |(k, e)| Input {
            bytes: break_file(&seeds[k], &e),
            seed: k,
            edits: 1,
        }),
    ];
    fuzz("tfrecord", 10000, case, |input, tally| {
        let (result, peak) = peak_alloc(|| parse(path, &input.bytes));
        check_bounded("record::parse", peak, input.bytes.len(), 4)?;
        match result {
            Ok((records, complete)) => {
                tally.add("ok");
                let mut at = 0;
                for r in &records {
                    prop_assert_eq!(r.offset, at);
                    prop_assert_eq!(r.end, r.offset + 16 + r.data.len() as u64);
                    at = r.end;
                    // Whatever a record holds, decoding it is an error at worst, and a
                    // bounded one: protobuf reserves at most 10 MB for a bytes field
                    // before reading it (its READ_RAW_BYTES_MAX_ALLOC), nothing else
                    // more than the record.
                    let (_, peak) = peak_alloc(|| event(path, r));
                    check_bounded(
                        "record::event",
                        peak.saturating_sub(10_000_000),
                        r.data.len(),
                        8,
                    )?;
                }
                prop_assert_eq!(complete, at);
                prop_assert!(complete <= input.bytes.len() as u64);
                // The complete part alone reads the same.
                let again = parse(path, &input.bytes[..complete as usize]).unwrap();
                prop_assert_eq!(again, (records, complete));
            }
            Err(e) => {
                tally.add(variant(&e));
                prop_assert!(
                    e.to_string().contains("events.out.tfevents.1.host"),
                    "{}",
                    e
                );
            }
        }
        Ok(())
    });
}

/// One change to the sidecar's JSON.
#[derive(Debug, Clone)]
enum SidecarEdit {
    /// The `n`th number becomes this one.
    Number(prop::sample::Index, Value),
    /// The `n`th string becomes this one.
    Text(prop::sample::Index, &'static str),
    /// The `n`th array element is removed or duplicated.
    Element(prop::sample::Index, bool),
    /// Bytes of the text are edited.
    Bytes(Vec<Edit>),
}

fn sidecar_edit() -> impl Strategy<Value = SidecarEdit> {
    let number = prop_oneof![
        3 => prop::sample::select(EDGES).prop_map(Value::from),
        1 => prop::sample::select(&[-1i64, -4, i64::MIN][..]).prop_map(Value::from),
        1 => Just(serde_json::json!(2.5)),
        1 => Just(Value::Null),
    ];
    let text = prop::sample::select(
        &[
            "",
            ".epochs.json",
            "../outside",
            "/etc/passwd",
            "events.out.tfevents.0.x",
            "tb",
        ][..],
    );
    prop_oneof![
        3 => (any::<prop::sample::Index>(), number).prop_map(|(i, v)| SidecarEdit::Number(i, v)),
        2 => (any::<prop::sample::Index>(), text).prop_map(|(i, t)| SidecarEdit::Text(i, t)),
        1 => (any::<prop::sample::Index>(), any::<bool>()).prop_map(|(i, d)| SidecarEdit::Element(i, d)),
        1 => edits(3).prop_map(SidecarEdit::Bytes),
    ]
}

/// Every number (or string, or array) slot of a JSON value, depth first.
fn slots<'a>(v: &'a mut Value, want: &dyn Fn(&Value) -> bool, out: &mut Vec<&'a mut Value>) {
    if want(v) {
        out.push(v);
        return;
    }
    match v {
        Value::Array(a) => a.iter_mut().for_each(|c| slots(c, want, out)),
        Value::Object(o) => o.values_mut().for_each(|c| slots(c, want, out)),
        _ => {}
    }
}

fn edit_sidecar(text: &[u8], edits: &[SidecarEdit]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(text) else {
        return text.to_vec();
    };
    let mut raw = None;
    for e in edits {
        match e {
            SidecarEdit::Number(i, n) => {
                let mut s = Vec::new();
                slots(&mut v, &|x| x.is_number(), &mut s);
                if !s.is_empty() {
                    *s.swap_remove(i.index(s.len())) = n.clone();
                }
            }
            SidecarEdit::Text(i, t) => {
                let mut s = Vec::new();
                slots(&mut v, &|x| x.is_string(), &mut s);
                if !s.is_empty() {
                    *s.swap_remove(i.index(s.len())) = Value::from(*t);
                }
            }
            SidecarEdit::Element(i, dup) => {
                let mut s = Vec::new();
                slots(
                    &mut v,
                    &|x| x.as_array().is_some_and(|a| !a.is_empty()),
                    &mut s,
                );
                if !s.is_empty() {
                    let a = s.swap_remove(i.index(s.len())).as_array_mut().unwrap();
                    let k = i.index(a.len());
                    if *dup {
                        let x = a[k].clone();
                        a.insert(k, x);
                    } else {
                        a.remove(k);
                    }
                }
            }
            SidecarEdit::Bytes(b) => raw = Some(b.clone()),
        }
    }
    let text = serde_json::to_vec(&v).unwrap();
    match raw {
        Some(b) => apply(text, &b, &[]),
        None => text,
    }
}

/// A resume input: which event file is broken and how, how the sidecar is changed, and the
/// checkpoint the new attempt resumes from.
#[derive(Debug, Clone)]
struct ResumeCase {
    file: prop::sample::Index,
    file_edit: Option<FileEdit>,
    sidecar: Vec<SidecarEdit>,
    drop_sidecar: bool,
    resumed_from: usize,
    steps_per_epoch: u64,
}

#[test]
fn fuzz_tensorboard_resume() {
    let tmp = scratch();
    let log = killed_log(&tmp.path().join("seed"));
    let events: Vec<&String> = log.keys().filter(|n| *n != SIDECAR).collect();
    let case = (
        any::<prop::sample::Index>(),
        proptest::option::of(file_edit()),
        proptest::collection::vec(sidecar_edit(), 0..4),
        prop::bool::weighted(0.1),
        0usize..5,
        prop_oneof![4 => 1u64..8, 1 => 0u64..100_000],
    )
        .prop_map(
            |(file, file_edit, sidecar, drop_sidecar, resumed_from, steps_per_epoch)| ResumeCase {
                file,
                file_edit,
                sidecar,
                drop_sidecar,
                resumed_from,
                steps_per_epoch,
            },
        );
    let n = std::sync::atomic::AtomicU64::new(0);
    fuzz("tb-resume", 2000, case, |c, tally| {
        let dir = tmp.path().join(format!(
            "case{}",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let broken = events[c.file.index(events.len())];
        for (name, bytes) in &log {
            let bytes = if let (true, Some(edit)) = (name == broken, &c.file_edit) {
                break_file(bytes, edit)
            } else if name == SIDECAR {
                if c.drop_sidecar {
                    continue;
                }
                edit_sidecar(bytes, &c.sidecar)
            } else {
                bytes.clone()
            };
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let mut s = sink(&dir);
        let result = s.emit(&started(c.resumed_from, c.steps_per_epoch));
        match &result {
            Ok(()) => {
                tally.add("ok");
                // What is left reads cleanly: no torn tail, every record an event.
                for name in list_event_files(&dir).unwrap() {
                    let path = dir.join(&name);
                    let (records, complete) =
                        read_file(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(
                        complete,
                        std::fs::metadata(&path).unwrap().len(),
                        "{} keeps a torn tail",
                        name
                    );
                    for r in records {
                        prop_assert!(Event::parse_from_bytes(&r.data).is_ok());
                    }
                }
                let step = c.resumed_from as u64 * c.steps_per_epoch + 1;
                s.emit(&scalar(c.resumed_from + 1, step, "train/loss"))
                    .unwrap();
                s.emit(&RunEvent::EpochEnd {
                    epoch: c.resumed_from + 1,
                    step,
                })
                .unwrap();
                s.emit(&RunEvent::Finished {
                    state: RunState::Done,
                    epoch: c.resumed_from + 1,
                    message: None,
                })
                .unwrap();
            }
            Err(e) => {
                let msg = e.to_string();
                let kind = ["corrupt record", "sidecar", "encoding"]
                    .into_iter()
                    .find(|k| msg.contains(k));
                tally.add(kind.unwrap_or("other error"));
                prop_assert!(e.to_string().contains("TensorBoard"), "{}", e);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
        Ok(())
    });
}

/// The steps of `tag` across every event file of `dir`, in TensorBoard's reading order.
fn steps_of(dir: &Path, tag: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for name in list_event_files(dir).unwrap() {
        let (recs, _) = read_file(&dir.join(name)).unwrap();
        for r in recs {
            let ev = Event::parse_from_bytes(&r.data).unwrap();
            if ev.has_summary()
                && ev.get_summary().get_value().first().map(|v| v.get_tag()) == Some(tag)
            {
                out.push(ev.get_step());
            }
        }
    }
    out
}

#[test]
fn fuzz_event_round_trip() {
    // What the writer writes, the reader reads back: every event, in order, whole.
    let tmp = scratch();
    let value = prop_oneof![
        any::<f32>().prop_map(f64::from),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0),
    ];
    let item = prop_oneof![
        (0u64..=i64::MAX as u64, "[a-z/_.]{0,12}", value).prop_map(|(s, t, v)| (s, t, Ok(v))),
        (0u64..1000, "[a-z/]{1,8}", ".{0,40}").prop_map(|(s, t, x)| (s, t, Err(x))),
    ];
    let case = (
        proptest::collection::vec(item, 0..20),
        any::<prop::sample::Index>(),
    );
    let n = std::sync::atomic::AtomicU64::new(0);
    fuzz("tb-round-trip", 1000, case, |(items, cut), tally| {
        let dir: PathBuf = tmp.path().join(format!(
            "rt{}",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut w =
            EventFileWriter::create(&dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (step, tag, v) in &items {
            let ev = match v {
                Ok(v) => summaries::scalar(*step, tag, *v),
                Err(text) => summaries::text(*step, tag, text).unwrap(),
            };
            w.write_event(&ev).unwrap();
        }
        w.sync().unwrap();
        let (records, complete) = read_file(w.path()).unwrap();
        prop_assert_eq!(complete, w.len());
        prop_assert_eq!(records.len(), items.len() + 1);
        prop_assert!(
            Event::parse_from_bytes(&records[0].data)
                .unwrap()
                .has_file_version()
        );
        for (r, (step, tag, v)) in records[1..].iter().zip(&items) {
            let ev = Event::parse_from_bytes(&r.data).unwrap();
            prop_assert_eq!(ev.get_step(), *step as i64);
            let value = &ev.get_summary().get_value()[0];
            prop_assert_eq!(value.get_tag(), tag.as_str());
            match v {
                Ok(v) => {
                    let got = value.get_simple_value();
                    prop_assert!(
                        got.to_bits() == (*v as f32).to_bits() || (got.is_nan() && v.is_nan())
                    );
                }
                Err(text) => {
                    prop_assert_eq!(&value.get_tensor().get_string_val()[0][..], text.as_bytes())
                }
            }
        }
        // A file cut anywhere (a killed writer) reads as the records before the cut.
        let bytes = std::fs::read(w.path()).unwrap();
        let at = cut.index(bytes.len() + 1);
        let (prefix, end) = parse(w.path(), &bytes[..at]).unwrap();
        let whole = records.iter().take_while(|r| r.end <= at as u64).count();
        prop_assert_eq!(prefix.len(), whole);
        prop_assert_eq!(end, prefix.last().map_or(0, |r| r.end));
        tally.add("ok");
        std::fs::remove_dir_all(&dir).unwrap();
        Ok(())
    });
}

#[test]
fn fuzz_kill_and_resume_gives_one_curve() {
    // A run killed at any step (with or without a torn record) and resumed from any
    // checkpoint it had made shows each step once, in order, and one session start.
    let tmp = scratch();
    let case = (
        1u64..5,
        0usize..4,
        0u64..5,
        any::<bool>(),
        any::<prop::sample::Index>(),
        any::<bool>(),
    );
    let n = std::sync::atomic::AtomicU64::new(0);
    fuzz(
        "tb-kill-resume",
        1000,
        case,
        |(spe, done, partial, torn, resume, drop_epoch_end), tally| {
            let partial = partial.min(spe - 1);
            let dir = tmp.path().join(format!(
                "k{}",
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let mut a = sink(&dir);
            a.emit(&started(0, spe)).unwrap();
            for e in 1..=done {
                // The last finished epoch's end may not have reached the sink (killed between the
                // checkpoint and the event): the step rule must still keep that epoch.
                let reached = if drop_epoch_end && e == done {
                    Reached::Evaluated
                } else {
                    Reached::End
                };
                epoch(&mut a, e, spe, reached);
            }
            epoch(&mut a, done + 1, spe, Reached::Steps(partial));
            drop(a);
            if torn && let Some(last) = list_event_files(&dir).unwrap().pop() {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(dir.join(last))
                    .unwrap();
                f.write_all(&frame(b"torn record")[..9]).unwrap();
            }
            let from = resume.index(done + 1);
            let mut b = sink(&dir);
            b.emit(&started(from, spe)).unwrap();
            for e in from + 1..=done + 1 {
                epoch(&mut b, e, spe, Reached::End);
            }
            b.emit(&RunEvent::Finished {
                state: RunState::Done,
                epoch: done + 1,
                message: None,
            })
            .unwrap();
            let total = (done as u64 + 1) * spe;
            prop_assert_eq!(
                steps_of(&dir, "train/loss"),
                (1..=total as i64).collect::<Vec<_>>()
            );
            let dev: Vec<i64> = (1..=done as i64 + 1).map(|e| e * spe as i64).collect();
            prop_assert_eq!(steps_of(&dir, "dev/loss"), dev);
            tally.add("ok");
            std::fs::remove_dir_all(&dir).unwrap();
            Ok(())
        },
    );
}
