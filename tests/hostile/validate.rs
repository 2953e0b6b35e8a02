//! Specs that plan but cannot run: every run of the grid is laid out on the image size the
//! data headers give, and its select metric checked against what its model kind records,
//! so `plan` and `run` refuse them with exit code 3 before anything is written.

use crate::data::{MLP, image_spec, nothing_written, write_images};
use crate::util::Sandbox;

/// Two conv blocks; the second one's kernel is `k2`.
fn cnn(k2: usize) -> String {
    format!(
        "kind = \"cnn\"\nhidden = [8]\ndropout = 0.0\n\
         [[model.conv]]\nchannels = 2\nkernel = 5\npadding = 2\npool = 2\n\
         [[model.conv]]\nchannels = 2\nkernel = {k2}\npool = 0\n"
    )
}

/// `plan` and `run` both exit 3 with `expected` on stderr and write nothing.
fn refused(sb: &Sandbox, args: &[&str], expected: &[&str]) {
    for cmd in ["plan", "run"] {
        let mut all = vec![cmd];
        all.extend_from_slice(args);
        let out = sb.run(&all);
        out.expect_code(3);
        for e in expected {
            out.stderr_has(e);
        }
        nothing_written(sb, &out);
    }
}

#[test]
fn a_kernel_larger_than_the_image_from_the_data_header_is_refused() {
    let sb = Sandbox::new();
    // 12x12 images: 12 -conv 5 pad 2-> 12 -pool 2-> 6, and a 7x7 kernel does not fit 6x6
    // (it would fit the 14x14 a 28x28 image leaves).
    write_images(&sb, 12);
    image_spec(&sb, &cnn(7));
    refused(
        &sb,
        &["tiny.toml"],
        &["tiny.toml: `model.conv.1.kernel` = 7: ", "6x6", "at most 6"],
    );
    // `inspect` says the same from the same computation.
    sb.run(&["inspect", "tiny.toml"])
        .expect_code(3)
        .stderr_has("`model.conv.1.kernel`")
        .stderr_has("6x6");
    // The flag that set it is named.
    image_spec(&sb, &cnn(3));
    let conv = "model.conv=[{channels=2, kernel=5, padding=2}, {channels=2, kernel=7, pool=0}]";
    refused(
        &sb,
        &["tiny.toml", "--set", conv],
        &[&format!("--set {conv}: `model.conv.1.kernel` = 7")],
    );
    sb.run(&["inspect", "tiny.toml"])
        .ok()
        .stdout_has("input 1x12x12 image");
    sb.run(&["plan", "tiny.toml"]).ok();
}

#[test]
fn a_pool_larger_than_its_input_is_refused() {
    let sb = Sandbox::new();
    write_images(&sb, 12);
    image_spec(
        &sb,
        "kind = \"cnn\"\nhidden = [8]\n[[model.conv]]\nchannels = 2\nkernel = 3\npool = 11\n",
    );
    refused(&sb, &["tiny.toml"], &["`model.conv.0.pool` = 11", "10x10"]);
}

#[test]
fn same_padding_needs_an_odd_kernel_and_stride_one() {
    let sb = Sandbox::new();
    write_images(&sb, 28);
    for block in ["kernel = 4", "kernel = 3\nstride = 2"] {
        image_spec(
            &sb,
            &format!(
                "kind = \"cnn\"\nhidden = [8]\n\
                 [[model.conv]]\nchannels = 2\n{block}\npadding = \"same\"\npool = 2\n"
            ),
        );
        refused(
            &sb,
            &["tiny.toml"],
            &[
                "`model.conv.0.padding` = \"same\"",
                "needs stride 1 and an odd kernel",
            ],
        );
    }
}

#[test]
fn a_grid_axis_that_breaks_one_run_names_that_run() {
    let sb = Sandbox::new();
    write_images(&sb, 12);
    image_spec(&sb, &cnn(3));
    let grid = "grid.\"model.conv.1.kernel\"=[3, 9]";
    refused(
        &sb,
        &["tiny.toml", "--set", grid],
        &["run 1 (model.conv.1.kernel = 9): `model.conv.1.kernel` = 9"],
    );
}

#[test]
fn select_metric_must_be_one_the_model_kind_records() {
    let sb = Sandbox::new();
    write_images(&sb, 8);
    image_spec(&sb, MLP);
    refused(
        &sb,
        &["tiny.toml", "--set", "select.metric=\"dev/nosuch\""],
        &[
            "--set select.metric=\"dev/nosuch\": `select.metric` = \"dev/nosuch\"",
            "\"dev/accuracy\", \"dev/loss\", \"train/loss\"",
        ],
    );
    // Translation runs record an error rate; image classifiers do not.
    refused(
        &sb,
        &["tiny.toml", "--set", "select.metric=\"dev/error_rate\""],
        &["`select.metric` = \"dev/error_rate\": model.kind = \"mlp\""],
    );
    // A grid varying the metric names the run it breaks.
    refused(
        &sb,
        &[
            "tiny.toml",
            "--set",
            "grid.\"select.metric\"=[\"dev/loss\", \"test/accuracy\"]",
        ],
        &["run 1 (select.metric = \"test/accuracy\")"],
    );
}

#[test]
fn the_data_format_must_hold_what_the_model_kind_reads() {
    let sb = Sandbox::new();
    write_images(&sb, 8);
    image_spec(&sb, MLP);
    refused(
        &sb,
        &["tiny.toml", "--set", "data.format=\"tsv-pairs\""],
        &["`data.format` = \"tsv-pairs\": cnn and mlp models read images"],
    );
    refused(
        &sb,
        &["tiny.toml", "--set", "model.kind=\"seq2seq\""],
        &["`data.format` = \"idx\": model.kind = \"seq2seq\" reads sentence pairs"],
    );
    // A translation spec without a dev file.
    sb.write(
        "q3.toml",
        "name = \"q3\"\n[data]\nformat = \"tsv-pairs\"\ndir = \"t\"\ntrain = \"train.tsv\"\n\
         test = \"test.tsv\"\n[model]\nkind = \"seq2seq\"\n",
    );
    refused(
        &sb,
        &["q3.toml"],
        &["`data.dev` = \"\": must name a TSV file"],
    );
}
