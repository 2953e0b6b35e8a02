//! Data files through the real binary: missing, corrupt, non-regular or lying files are
//! refused with exit code 4 before anything is written under `runs/`; valid but unusual
//! files (multi-member gzip, big-endian NumPy labels) are read. The files are written here
//! byte by byte: no NumPy needed.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

pub use crate::util::datafiles::{gzip, idx, npy, npz};
use crate::util::{Output, Sandbox};

/// Writes binary `bytes` to `rel` in the sandbox.
pub fn put(sb: &Sandbox, rel: &str, bytes: &[u8]) {
    let p = sb.path().join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// `n` grey `side x side` images with labels 0..10 as IDX bytes: (images, labels).
pub fn images(n: u32, side: u32) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n * side * side).map(|i| (i * 37 % 251) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    (idx(&[n, side, side], &pixels), idx(&[n], &labels))
}

/// Plain IDX train and test files of `side x side` images in `d/`.
pub fn write_images(sb: &Sandbox, side: u32) {
    let (img, lab) = images(40, side);
    put(sb, "d/train-images", &img);
    put(sb, "d/train-labels", &lab);
    let (img, lab) = images(10, side);
    put(sb, "d/test-images", &img);
    put(sb, "d/test-labels", &lab);
}

/// A seconds-long image spec on `d/` with the given model section (TOML).
pub fn image_spec(sb: &Sandbox, model: &str) {
    sb.write(
        "tiny.toml",
        &format!(
            "name = \"tiny\"\n\
             [data]\nformat = \"idx\"\ndir = \"d\"\ntrain = \"train-images\"\n\
             train_labels = \"train-labels\"\ntest = \"test-images\"\n\
             test_labels = \"test-labels\"\ndev_fraction = 0.25\n\
             [train]\nepochs = 1\nbatch_size = 8\n\
             [model]\n{model}\n"
        ),
    );
}

/// The model of the tiny spec when any image size will do.
pub const MLP: &str = "kind = \"mlp\"\nhidden = [8]\ndropout = 0.0";

/// Asserts nothing was written under `runs/`.
pub fn nothing_written(sb: &Sandbox, out: &Output) {
    assert!(
        !sb.path().join("runs").exists(),
        "runs/ was written\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

/// Runs `orchestrate ARGS` in the sandbox, killing it after `limit`: a command that blocks
/// on a FIFO or reads `/dev/zero` forever fails the test instead of hanging it.
fn run_within(sb: &Sandbox, args: &[&str], limit: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    let mut child = sb
        .cmd(args)
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            // The whole process group: the workers it started too.
            // SAFETY: signals a process group this test started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let out = child.wait_with_output().unwrap();
            panic!(
                "orchestrate {} still running after {limit:?}\nstderr:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    Output::from_process(format!("orchestrate {}", args.join(" ")), sb.path(), out)
}

#[test]
fn a_missing_image_file_exits_4_before_anything_is_written() {
    let sb = Sandbox::new();
    write_images(&sb, 8);
    image_spec(&sb, MLP);
    std::fs::remove_file(sb.path().join("d/test-labels")).unwrap();
    let out = sb.run(&["run", "tiny.toml"]);
    out.expect_code(4)
        .stderr_has("d/test-labels: data file not found");
    nothing_written(&sb, &out);
    // `plan` may be made where the data is not: it says so and still plans.
    sb.run(&["plan", "tiny.toml"])
        .ok()
        .stderr_has("warning: d/test-labels: data file not found")
        .stdout_has("tiny: 1 run");
}

#[test]
fn a_corrupt_image_file_exits_4_in_run_and_plan() {
    let sb = Sandbox::new();
    write_images(&sb, 8);
    image_spec(&sb, MLP);
    put(&sb, "d/train-images", b"PK\x03\x04 not an IDX file");
    for cmd in ["run", "plan"] {
        let out = sb.run(&[cmd, "tiny.toml"]);
        out.expect_code(4)
            .stderr_has("d/train-images: bad magic number");
        nothing_written(&sb, &out);
    }
}

#[test]
fn an_idx_header_promising_more_than_the_file_holds_exits_4() {
    let sb = Sandbox::new();
    write_images(&sb, 8);
    image_spec(&sb, MLP);
    // Four billion 8x8 images promised, 40 given.
    let (img, _) = images(40, 8);
    let mut lie = img.clone();
    lie[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    put(&sb, "d/train-images", &lie);
    let out = sb.run(&["run", "tiny.toml"]);
    out.expect_code(4)
        .stderr_has("d/train-images: header count disagrees with file size");
    nothing_written(&sb, &out);
    // Compressed: more than DEFLATE can expand its bytes to.
    let mut bomb = idx(&[1_000_000, 1000, 1000], &[]);
    bomb.extend_from_slice(&[0; 64]);
    put(&sb, "d/train-images", &gzip(&bomb));
    sb.run(&["run", "tiny.toml"])
        .expect_code(4)
        .stderr_has("more than a gzip file of");
}

#[test]
fn an_npz_header_promising_more_than_the_archive_holds_exits_4() {
    let sb = Sandbox::new();
    image_spec(&sb, MLP);
    sb.write(
        "tiny.toml",
        &std::fs::read_to_string(sb.path().join("tiny.toml"))
            .unwrap()
            .replace("format = \"idx\"", "format = \"npz\""),
    );
    let pixels = npz(&npy("|u1", "(1000000000000, 28, 28)", &[0; 64]));
    let labels = npz(&npy("|u1", "(40,)", &[1; 40]));
    for f in ["train-images", "test-images"] {
        put(&sb, &format!("d/{f}"), &pixels);
    }
    for f in ["train-labels", "test-labels"] {
        put(&sb, &format!("d/{f}"), &labels);
    }
    let out = sb.run(&["run", "tiny.toml"]);
    out.expect_code(4)
        .stderr_has("d/train-images: header count disagrees with file size");
    nothing_written(&sb, &out);
}

#[test]
fn non_regular_data_files_are_refused_at_once() {
    let sb = Sandbox::new();
    write_images(&sb, 8);
    image_spec(&sb, MLP);
    let target = sb.path().join("d/train-images");
    let fifo = sb.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (source, what) in [
        (fifo.as_path(), "(FIFO)"),
        (Path::new("/dev/zero"), "a character device"),
        (sb.path().join("d").as_path(), "a directory"),
    ] {
        std::fs::remove_file(&target).unwrap();
        std::os::unix::fs::symlink(source, &target).unwrap();
        for cmd in ["run", "plan"] {
            let out = run_within(&sb, &[cmd, "tiny.toml"], Duration::from_secs(30));
            out.expect_code(4).stderr_has(what);
            out.stderr_has("d/train-images");
            nothing_written(&sb, &out);
        }
    }
}

/// A seq2seq spec on TSV files in `t/`.
fn tsv_spec(sb: &Sandbox) {
    sb.write(
        "q3.toml",
        "name = \"q3\"\n[data]\nformat = \"tsv-pairs\"\ndir = \"t\"\ntrain = \"train.tsv\"\n\
         dev = \"dev.tsv\"\ntest = \"test.tsv\"\n[model]\nkind = \"seq2seq\"\n\
         [select]\nmetric = \"dev/error_rate\"\nmode = \"min\"\n",
    );
    for f in ["train.tsv", "dev.tsv", "test.tsv"] {
        sb.write(&format!("t/{f}"), "hello\thola\t1\n");
    }
}

#[test]
fn missing_or_non_regular_translation_files_exit_4() {
    let sb = Sandbox::new();
    tsv_spec(&sb);
    std::fs::remove_file(sb.path().join("t/dev.tsv")).unwrap();
    let out = sb.run(&["run", "q3.toml"]);
    out.expect_code(4).stderr_has("t/dev.tsv");
    nothing_written(&sb, &out);
    sb.run(&["plan", "q3.toml"])
        .ok()
        .stderr_has("warning: t/dev.tsv: data file not found");

    let c = std::ffi::CString::new(sb.path().join("t/dev.tsv").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out = run_within(&sb, &["run", "q3.toml"], Duration::from_secs(30));
    out.expect_code(4)
        .stderr_has("t/dev.tsv")
        .stderr_has("(FIFO)");
    nothing_written(&sb, &out);
}

#[test]
fn multi_member_gzip_idx_trains() {
    let sb = Sandbox::new();
    write_images(&sb, 8);
    image_spec(&sb, MLP);
    // `cat a.gz b.gz`: the header in one member, the pixels in the next.
    let (img, _) = images(40, 8);
    let mut cat = gzip(&img[..16]);
    cat.extend(gzip(&img[16..]));
    put(&sb, "d/train-images", &cat);
    sb.run(&["run", "tiny.toml", "--quiet"])
        .ok()
        .stdout_has("best: ");
}

#[test]
fn big_endian_npz_labels_train() {
    let sb = Sandbox::new();
    image_spec(&sb, MLP);
    sb.write(
        "tiny.toml",
        &std::fs::read_to_string(sb.path().join("tiny.toml"))
            .unwrap()
            .replace("format = \"idx\"", "format = \"npz\""),
    );
    for (f, n, descr) in [("train", 40u32, ">i4"), ("test", 10, ">u2")] {
        let pixels: Vec<u8> = (0..n * 64).map(|i| (i * 37 % 251) as u8).collect();
        put(
            &sb,
            &format!("d/{f}-images"),
            &npz(&npy("|u1", &format!("({n}, 8, 8)"), &pixels)),
        );
        let size = descr[2..].parse::<usize>().unwrap();
        let labels: Vec<u8> = (0..n)
            .flat_map(|i| {
                let be = u64::from(i % 10).to_be_bytes();
                be[8 - size..].to_vec()
            })
            .collect();
        put(
            &sb,
            &format!("d/{f}-labels"),
            &npz(&npy(descr, &format!("({n},)"), &labels)),
        );
    }
    sb.run(&["run", "tiny.toml", "--quiet"])
        .ok()
        .stdout_has("best: ");
}

#[test]
fn a_dev_split_the_header_counts_cannot_make_exits_4_before_writing() {
    let sb = Sandbox::new();
    write_images(&sb, 8);
    image_spec(&sb, MLP);
    // One training image: a quarter of it rounds to no dev image.
    let out = sb.run(&["run", "tiny.toml", "--set", "data.train_limit=1"]);
    out.expect_code(4)
        .stderr_has("data.dev_fraction = 0.25 of 1 training images leaves 0 for dev");
    nothing_written(&sb, &out);
}
