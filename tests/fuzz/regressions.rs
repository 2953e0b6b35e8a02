//! Inputs the fuzz targets found that broke a reader, kept as plain tests with their bytes.

use std::collections::BTreeMap;

use orchestrate::events::{EventSink, RunEvent};
use orchestrate::sinks::tensorboard::TensorBoardSink;
use orchestrate::sinks::tensorboard::record::read_file;
use orchestrate::sinks::tensorboard::resume::SIDECAR;
use orchestrate::sinks::tensorboard::writer::list_event_files;
use protobuf::Message;
use tensorboard_proto::event::Event;

fn started(resumed_from: usize, steps_per_epoch: u64) -> RunEvent {
    RunEvent::Started {
        attempt: 2,
        resumed_from,
        epochs: 3,
        steps_per_epoch,
    }
}

/// Steps of the `train/loss` records left in `dir`.
fn loss_steps(dir: &std::path::Path) -> Vec<i64> {
    let mut out = Vec::new();
    for name in list_event_files(dir).unwrap() {
        for r in read_file(&dir.join(name)).unwrap().0 {
            let ev = Event::parse_from_bytes(&r.data).unwrap();
            if ev.get_summary().get_value().first().map(|v| v.get_tag()) == Some("train/loss") {
                out.push(ev.get_step());
            }
        }
    }
    out
}

/// fuzz tb-resume, seed 15: a damaged `.epochs.json` whose epoch mark claims step 2^64 - 1
/// made resuming panic with "attempt to add with overflow" (src/sinks/tensorboard/resume.rs,
/// the cutoff step; then mod.rs, the session-start step), which kills the worker; in a
/// release build the sum wrapped instead and the records were judged against step 0 or 1.
/// Resuming must work and lose none of the records the damaged mark cannot place.
#[test]
fn resume_with_a_sidecar_step_past_the_largest_step() {
    for (sidecar, resumed_from) in [
        // The mark is before the resumed epoch: the cutoff adds the missing epochs' steps.
        (&br#"{"files":[],"epochs":[{"epoch":0,"step":18446744073709551615,"file":"","offset":0}]}"#[..], 1),
        // The mark is the resumed epoch: the new attempt's session starts one step later.
        (br#"{"files":[],"epochs":[{"epoch":1,"step":18446744073709551615,"file":"","offset":0}]}"#, 1),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tb");
        let mut a = TensorBoardSink::in_dir(dir.clone(), BTreeMap::new());
        a.emit(&started(0, 2)).unwrap();
        for step in 1..=3 {
            let scalar = RunEvent::Scalar { epoch: 1, step, tag: "train/loss".into(), value: 0.5 };
            a.emit(&scalar).unwrap();
        }
        drop(a);
        std::fs::write(dir.join(SIDECAR), sidecar).unwrap();

        let mut b = TensorBoardSink::in_dir(dir.clone(), BTreeMap::new());
        b.emit(&started(resumed_from, 2)).unwrap();
        b.emit(&RunEvent::Scalar { epoch: 2, step: 3, tag: "train/loss".into(), value: 0.4 }).unwrap();
        // Nothing is dropped on the strength of a mark that cannot be right.
        assert_eq!(loss_steps(&dir), vec![1, 2, 3, 3], "sidecar {}", String::from_utf8_lossy(sidecar));
    }
}

/// fuzz spec, seed 15: a TOML syntax error whose parser message has two lines
/// (`invalid table header` / ``duplicate key `grid` in document root``) is printed as two
/// lines, and the second names no file. `parse_file` (src/spec/load.rs) now joins the
/// message's lines with "; ".
#[test]
fn syntax_error_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dup.toml");
    std::fs::write(&file, "grid.\"data.dev\" = 0\n[grid]\n").unwrap();
    let err = orchestrate::spec::resolve(&file, &[], Vec::new())
        .err()
        .expect("a syntax error");
    let msg = err.to_string();
    assert!(msg.contains("dup.toml:2:1: TOML syntax error"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

/// fuzz npy and npz, seed 1 (`FUZZ_CASES=50000`): a `.npy` header whose dtype text starts
/// with a character of more than one byte (here the opening quote became `¬`) panics with
/// "end byte index 1 is not a char boundary" in `NpyDtype::parse` (src/data/npz.rs, the
/// `split_at(1)` of `descr`), which kills the worker reading a corrupt KMNIST archive
/// instead of exiting 4 with a message naming the file. A non-ASCII `descr` is now refused
/// as an unsupported dtype before it is split.
#[test]
fn npy_dtype_that_is_not_ascii_is_an_error() {
    let found: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr':\xc2\xac|u1', 'fortran_order': False, \
        'shape': (0, 28, 28), }                                                     \n";
    assert_eq!(found.len(), 128);
    let err = orchestrate::data::npz::parse_npy(found).unwrap_err();
    assert!(err.to_string().contains("dtype"), "{err}");

    // Through the reader a run uses: one line naming the archive.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kmnist-train-labels.npz");
    let npy = crate::npz::npy("\u{e9}", "(1,)", &[0]);
    std::fs::write(&path, crate::npz::zip_of(&[("arr_0.npy", &npy)], true)).unwrap();
    let err = orchestrate::data::npz::read_npz(&path).unwrap_err();
    assert!(err.to_string().contains("kmnist-train-labels.npz"), "{err}");
}

/// fuzz spec, seeds 2 and 3 (`FUZZ_CASES=50000`): a value echoed in an error as typed
/// breaks the error over several lines, the later ones naming no source, and lets a spec
/// write what it likes to the terminal: `extends = "8G\ntouch /tmp/canary"` prints
/// "...cannot read `extends` file .../8G" and then a line "touch /tmp/canary: No such file
/// or directory"; a `--set` argument holding a newline, and a grid value the grid refuses
/// (in the deserializer's message), are echoed the same way. Paths, flags and messages in
/// spec errors now have their control characters escaped (src/spec/error.rs).
#[test]
fn echoed_newlines_keep_an_error_on_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("nl.toml");
    std::fs::write(&file, "extends = \"8G\\ntouch /tmp/canary\"\n").unwrap();
    let err = orchestrate::spec::resolve(&file, &[], Vec::new())
        .err()
        .expect("an error");
    let msg = err.to_string();
    assert!(msg.contains("nl.toml") && msg.contains("extends"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");

    // A grid value the grid refuses is echoed by the deserializer's message (seed 3).
    let grid = tmp.path().join("grid.toml");
    std::fs::write(
        &grid,
        "[grid]\n\"model.attention\" = [\"\"\"multi\nline\"\"\"]\n",
    )
    .unwrap();
    let resolved = orchestrate::spec::resolve(&grid, &[], Vec::new()).unwrap();
    let msg = orchestrate::grid::expand_resolved(&resolved)
        .expect_err("a grid error")
        .to_string();
    assert!(
        msg.contains("grid.toml") && msg.contains("model.attention"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");

    let ok = tmp.path().join("ok.toml");
    std::fs::write(&ok, "").unwrap();
    let sets = ["train.epochs=\"\"\"2\n\"\"\"".to_string()];
    let err = orchestrate::spec::resolve(&ok, &sets, Vec::new())
        .err()
        .expect("an error");
    let msg = err.to_string();
    assert!(msg.contains("--set"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

/// One event record whose histogram claims `len` bytes of packed `bucket_limit` doubles and
/// holds none: Event { summary { value { histo { bucket_limit: [len bytes] } } } }.
fn event_claiming(len: u64) -> Vec<u8> {
    let mut histo = vec![0x32];
    let mut v = len;
    while v >= 0x80 {
        histo.push((v as u8) | 0x80);
        v >>= 7;
    }
    histo.push(v as u8);
    let wrap =
        |field: u8, inner: Vec<u8>| [vec![field << 3 | 2, inner.len() as u8], inner].concat();
    wrap(5, wrap(1, wrap(5, histo)))
}

/// fuzz tfrecord, seed 3 (`FUZZ_CASES=50000`): "memory allocation of 26747093972 bytes
/// failed" (abort) decoding one record framed with valid CRCs. protobuf 2.28 (the version
/// tensorboard-proto pins) reserves room for a packed repeated field from its length before
/// checking that length against the input (`read_repeated_packed_*_into`,
/// coded_input_stream.rs:377 and its siblings), so an event file whose record claims 2^64 - 1
/// bytes of histogram buckets panicked a resume ("capacity overflow"), and one claiming 2^40
/// aborted it. `record::event` now refuses such a record before protobuf sees it.
#[test]
fn resume_over_an_event_claiming_huge_packed_field() {
    use orchestrate::sinks::tensorboard::record::frame;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tb");
    let mut a = TensorBoardSink::in_dir(dir.clone(), BTreeMap::new());
    a.emit(&started(0, 2)).unwrap();
    drop(a);
    let file = dir.join(list_event_files(&dir).unwrap().pop().unwrap());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend(frame(&event_claiming(u64::MAX)));
    std::fs::write(&file, bytes).unwrap();
    let mut b = TensorBoardSink::in_dir(dir.clone(), BTreeMap::new());
    // Refused as a damaged log, naming the file, like any other corrupt record.
    let err = b.emit(&started(1, 2)).unwrap_err().to_string();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains(&name) && err.contains("claims more bytes"),
        "{err}"
    );
}
