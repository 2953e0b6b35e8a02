//! Training benchmark against the PyTorch reference (harness = false).
//!
//! `cargo bench --bench train [-- --reps 5 --steps 300 --no-torch --quick]` times the homework
//! CNN on both sides on this machine and prints one table (workload | ours | PyTorch | ratio
//! | spread), then writes it with machine, load, date and versions to
//! `bench/results/<date>-<host>.md`. Every measurement is a fresh child process (ours: this
//! binary re-run with `--child`; theirs: `bench/torch_ref.py`), because Candle fixes its
//! thread count at first use; the two sides alternate (ours, torch, torch, ours, ...) so
//! drifting load from other users of the machine hits both, and the table shows medians
//! with min-max. Ratios are ours/PyTorch for throughput and PyTorch/ours for wall time, so
//! above 1 always means we are faster.

#[path = "train/child.rs"]
mod child;
#[path = "train/report.rs"]
mod report;
#[path = "train/seq2seq.rs"]
mod seq2seq;

use report::{Machine, Row, Unit};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use orchestrate::stats::mean;

/// The seq2seq rows' `data.max_len`, the homework's (experiments/q3_attention.toml).
const S2S_MAX_LEN: usize = 20;

/// Exit status of `torch_ref.py` when torch is not importable.
const NO_TORCH: i32 = 3;

/// The allocator `orchestrate` uses (src/main.rs), so `--child` times what users run: Candle allocates a fresh buffer for every tensor
/// op, and glibc serves the large ones with fresh `mmap`ed (page-faulting, zeroed) pages
/// each time; measured in `bench/notes/allocator.md`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command-line options of the driver.
#[derive(Debug, Clone)]
struct Opts {
    reps: usize,
    /// Timed steps at batch 8.
    steps: usize,
    /// Timed steps at batch 64 (fewer, so both batch sizes take similar time).
    steps_64: usize,
    warmup: usize,
    /// A training measurement stops early after this many seconds (it is a rate).
    max_seconds: f64,
    eval_passes: usize,
    /// Repetitions of the (long) whole-grid rows.
    grid_reps: usize,
    torch: bool,
    grid: bool,
    /// Seq2seq rows (training throughput and the Q3 grid).
    seq2seq: bool,
    /// CNN rows (matmul, CNN training and evaluation, the Q2 grid).
    cnn: bool,
    /// Timed seq2seq training steps.
    s2s_steps: usize,
    /// The seq2seq rows' Spanish-English pairs (`None`: the committed data/spa-eng-mini).
    pairs_dir: Option<PathBuf>,
    /// The seq2seq rows' dropout (the homework's 0.3 by default).
    s2s_dropout: f64,
    /// Epochs of the whole Q3 study row.
    study_epochs: usize,
    python: String,
    out: Option<PathBuf>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            reps: 5,
            steps: 300,
            steps_64: 100,
            warmup: 20,
            max_seconds: 5.0,
            eval_passes: 5,
            grid_reps: 3,
            torch: true,
            grid: true,
            seq2seq: true,
            cnn: true,
            s2s_steps: 40,
            pairs_dir: None,
            s2s_dropout: 0.3,
            study_epochs: 3,
            python: std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()),
            out: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            let number = |name: &str, v: String| {
                v.parse::<usize>()
                    .map_err(|_| format!("{name}: {v:?} is not a whole number"))
            };
            match a.as_str() {
                "--reps" => o.reps = number("--reps", value("--reps")?)?.max(1),
                "--steps" => o.steps = number("--steps", value("--steps")?)?.max(1),
                "--steps-64" => o.steps_64 = number("--steps-64", value("--steps-64")?)?.max(1),
                "--warmup" => o.warmup = number("--warmup", value("--warmup")?)?,
                "--max-seconds" => {
                    let v = value("--max-seconds")?;
                    o.max_seconds = v
                        .parse()
                        .map_err(|_| format!("--max-seconds: {v:?} is not a number"))?;
                }
                "--grid-reps" => o.grid_reps = number("--grid-reps", value("--grid-reps")?)?,
                "--eval-passes" => {
                    o.eval_passes = number("--eval-passes", value("--eval-passes")?)?.max(1)
                }
                "--python" => o.python = value("--python")?,
                "--pairs-dir" => {
                    // Absolute, since our runs and the PyTorch scripts start in other
                    // directories.
                    let v = value("--pairs-dir")?;
                    let dir = std::fs::canonicalize(&v)
                        .map_err(|e| format!("--pairs-dir: {v:?}: {e}"))?;
                    o.pairs_dir = Some(dir);
                }
                "--s2s-dropout" => {
                    let v = value("--s2s-dropout")?;
                    o.s2s_dropout = v
                        .parse()
                        .ok()
                        .filter(|p| (0.0..1.0).contains(p))
                        .ok_or_else(|| format!("--s2s-dropout: {v:?} is not in [0, 1)"))?;
                }
                "--out" => o.out = Some(PathBuf::from(value("--out")?)),
                "--no-torch" => o.torch = false,
                "--no-grid" => o.grid = false,
                "--no-seq2seq" => o.seq2seq = false,
                "--no-cnn" => o.cnn = false,
                "--s2s-steps" => o.s2s_steps = number("--s2s-steps", value("--s2s-steps")?)?.max(1),
                "--study-epochs" => {
                    o.study_epochs = number("--study-epochs", value("--study-epochs")?)?;
                    if o.study_epochs == 0 {
                        return Err("--study-epochs: 0 is not at least 1".into());
                    }
                }
                "--quick" => {
                    (o.reps, o.steps, o.steps_64, o.eval_passes, o.grid_reps) = (1, 60, 20, 1, 1);
                    (o.s2s_steps, o.study_epochs) = (15, 1);
                }
                // cargo bench passes --bench to harness = false targets.
                "--bench" => {}
                "-h" | "--help" => return Err(HELP.into()),
                other => return Err(format!("unknown argument {other:?}\n{HELP}")),
            }
        }
        Ok(o)
    }
}

impl Opts {
    /// Timed steps of a training measurement at `batch`.
    fn steps_at(&self, batch: usize) -> usize {
        if batch >= 64 {
            self.steps_64
        } else {
            self.steps
        }
    }
}

const HELP: &str = "cargo bench --bench train -- [--reps N] [--steps N] [--steps-64 N] [--warmup N] \
[--max-seconds S] [--eval-passes N] [--grid-reps N] [--s2s-steps N] [--study-epochs N] [--no-torch] [--no-grid] [--no-seq2seq] [--no-cnn] \
[--pairs-dir DIR] [--s2s-dropout P] [--quick] [--python PATH] [--out FILE]";

/// One side of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Ours,
    Torch,
}

/// What one row measures.
#[derive(Debug, Clone)]
enum Work {
    /// Training images per second at `batch` on `threads` threads.
    Train { batch: usize, threads: usize },
    /// Evaluation images per second (batches of 1000, no gradients).
    Eval { threads: usize },
    /// fp32 GFLOP/s of a 2048x2048 matrix product.
    Matmul { threads: usize },
    /// Wall seconds of the whole bench grid: ours with `--jobs jobs --threads 1`, PyTorch one
    /// process per run, one after another, with `torch_threads` (0 = all cores).
    Grid { jobs: usize, torch_threads: usize },
    /// Seq2seq (Q3 translator) training sentences per second at `batch` on `threads`, with
    /// `dropout`, on the pairs that `pairs` names (`--pairs-dir`).
    TrainSeq2seq {
        batch: usize,
        threads: usize,
        attention: bool,
        dropout: f64,
        pairs: String,
    },
    /// Wall seconds of the homework Q3 study (`experiments/q3_attention.toml`, all four grid
    /// points) for `epochs` epochs on the pairs that `pairs` names: ours as one `orchestrate
    /// run` with its defaults, PyTorch as the four grid points' scripts one after another.
    Q3Study { epochs: usize, pairs: String },
    /// The training steps' seconds per epoch of one training within the `Q3Study` run just
    /// measured (ours trains each attention setting once for its two decodings, PyTorch
    /// every grid point): the step speed the decode sharing cannot hide.
    Q3StudyTraining,
}

/// PyTorch's thread budget in a grid row's label (0 = all cores).
fn torch_threads_label(threads: usize) -> String {
    match threads {
        0 => "all cores".to_string(),
        t => format!("{t} thr"),
    }
}

impl Work {
    fn label(&self) -> String {
        match self {
            Work::Train { batch, threads } => format!("train CNN, batch {batch}, {threads} thr"),
            Work::Eval { threads } => format!("eval CNN, batch 1000, {threads} thr"),
            Work::Matmul { threads } => format!("matmul 2048² fp32, {threads} thr"),
            Work::Grid {
                jobs,
                torch_threads,
            } => format!(
                "Q2 grid: ours --jobs {jobs} -t 1 vs torch seq. {}",
                torch_threads_label(*torch_threads)
            ),
            Work::TrainSeq2seq {
                batch,
                threads,
                attention,
                dropout,
                pairs,
            } => {
                let att = if *attention {
                    "attention"
                } else {
                    "no attention"
                };
                format!(
                    "train seq2seq ({att}, dropout {dropout}, {pairs}), batch {batch}, \
                     {threads} thr"
                )
            }
            Work::Q3Study { epochs, pairs } => format!(
                "Q3 study, {epochs} epochs ({pairs}): ours `run q3_attention.toml` vs 4 torch \
                 scripts in turn"
            ),
            Work::Q3StudyTraining => {
                "  of which training: seconds per epoch of one training".to_string()
            }
        }
    }

    /// Which grid a grid row times (`None` for the other rows).
    fn grid_kind(&self) -> Option<GridKind> {
        match self {
            Work::Grid { .. } => Some(GridKind::Q2),
            Work::Q3Study { .. } | Work::Q3StudyTraining => Some(GridKind::Q3),
            _ => None,
        }
    }

    fn unit(&self) -> Unit {
        match self {
            Work::Train { .. } | Work::Eval { .. } => Unit::ImagesPerSecond,
            Work::Matmul { .. } => Unit::Gflops,
            Work::Grid { .. } | Work::Q3Study { .. } | Work::Q3StudyTraining => Unit::Seconds,
            Work::TrainSeq2seq { .. } => Unit::SentencesPerSecond,
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        std::process::exit(child::main(&args[1..]));
    }
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let torch_script = repo.join("bench/torch_ref.py");
    let mut machine = Machine::probe(&repo, &opts.python, &torch_script);
    let torch = opts.torch && machine.torch.is_some();
    if opts.torch && !torch {
        eprintln!(
            "PyTorch side skipped: `{} -c 'import torch'` failed. `pip install torch` (about \
             3 GB with its CUDA wheels, a couple of minutes) to compare; printing ours only.",
            opts.python
        );
    }
    let mut work = Vec::new();
    if opts.cnn {
        for threads in [1, 2] {
            work.push(Work::Matmul { threads });
        }
        for batch in [8, 64] {
            for threads in [1, 2] {
                work.push(Work::Train { batch, threads });
            }
        }
        for threads in [1, 2] {
            work.push(Work::Eval { threads });
        }
    }
    // A grid that cannot be planned skips its rows, saying why, rather than the benchmark.
    let plan = |wanted: bool, load: &dyn Fn(&Path) -> Result<GridPlan, String>, what: &str| {
        if !wanted {
            return None;
        }
        load(&repo)
            .inspect_err(|e| eprintln!("{what} rows skipped: {e}"))
            .ok()
    };
    let grid = plan(opts.grid && opts.cnn, &GridPlan::load, "grid");
    if grid.is_some() {
        for (jobs, torch_threads) in [(1, 0), (2, 0), (2, 1)] {
            work.push(Work::Grid {
                jobs,
                torch_threads,
            });
        }
    }
    // Named by the folder, so a results file says which pairs were used.
    let pairs = opts.pairs_dir.as_deref().map_or_else(
        || "data/spa-eng-mini".to_string(),
        |d| d.display().to_string(),
    );
    let q3_study = plan(
        opts.seq2seq && opts.grid,
        &|repo| GridPlan::load_q3_study(repo, opts.pairs_dir.as_deref(), opts.study_epochs),
        "Q3 study",
    );
    if opts.seq2seq {
        for batch in [8, 64] {
            for threads in [1, 2] {
                work.push(Work::TrainSeq2seq {
                    batch,
                    threads,
                    attention: true,
                    dropout: opts.s2s_dropout,
                    pairs: pairs.clone(),
                });
            }
        }
    }
    if q3_study.is_some() {
        work.push(Work::Q3Study {
            epochs: opts.study_epochs,
            pairs,
        });
        work.push(Work::Q3StudyTraining);
    }
    let runner = Runner {
        opts: &opts,
        repo: &repo,
        torch_script: &torch_script,
        grid: grid.as_ref(),
        q3_study: q3_study.as_ref(),
        study_training: Default::default(),
        scratch: tempfile::tempdir().expect("temp dir for grid runs"),
    };
    let started = Instant::now();
    machine.load_before = report::loadavg();
    let mut rows: Vec<Row> = work.iter().map(|w| Row::new(w.label(), w.unit())).collect();
    // PyTorch's grid time does not depend on our --jobs: measure each torch thread count
    // once a repetition and share it between the rows that compare against it.
    for rep in 0..opts.reps {
        let mut torch_grid: Vec<(Option<GridKind>, usize, f64)> = Vec::new();
        for (w, row) in work.iter().zip(rows.iter_mut()) {
            if w.grid_kind().is_some() && rep >= opts.grid_reps {
                continue;
            }
            let sides = if rep % 2 == 0 {
                [Side::Ours, Side::Torch]
            } else {
                [Side::Torch, Side::Ours]
            };
            for side in sides {
                if side == Side::Torch && !torch {
                    continue;
                }
                let value = match (w, side) {
                    (
                        Work::Grid {
                            torch_threads: t, ..
                        },
                        Side::Torch,
                    ) => match torch_grid
                        .iter()
                        .find(|(g, k, _)| *g == w.grid_kind() && k == t)
                    {
                        Some(&(_, _, v)) => Ok(v),
                        None => runner
                            .measure(w, side)
                            .inspect(|&v| torch_grid.push((w.grid_kind(), *t, v))),
                    },
                    _ => runner.measure(w, side),
                };
                match value {
                    Ok(v) => row.push(side == Side::Ours, v),
                    Err(e) => eprintln!("{} ({side:?}): {e}", w.label()),
                }
            }
            eprintln!("rep {}/{}: {}", rep + 1, opts.reps, row.progress());
        }
    }
    machine.load_after = report::loadavg();
    machine.seconds = started.elapsed().as_secs_f64();
    let flops = child::cnn_train_flops();
    let text = report::render(&machine, &rows, &flops, &opts_line(&opts, torch));
    println!("{text}");
    let out = opts.out.clone().unwrap_or_else(|| {
        repo.join("bench/results")
            .join(format!("{}-{}.md", machine.date, machine.host))
    });
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&out, &text) {
        Ok(()) => eprintln!("written to {}", out.display()),
        Err(e) => eprintln!("cannot write {}: {e}", out.display()),
    }
}

fn opts_line(o: &Opts, torch: bool) -> String {
    format!(
        "cargo bench --bench train -- --reps {} --steps {} --steps-64 {} --warmup {} \
         --max-seconds {} --eval-passes {} --grid-reps {} --s2s-steps {} --s2s-dropout {} \
         --study-epochs {}{}{}{}{}{}",
        o.reps,
        o.steps,
        o.steps_64,
        o.warmup,
        o.max_seconds,
        o.eval_passes,
        o.grid_reps,
        o.s2s_steps,
        o.s2s_dropout,
        o.study_epochs,
        o.pairs_dir
            .as_ref()
            .map_or_else(String::new, |d| format!(" --pairs-dir {}", d.display())),
        if torch { "" } else { " --no-torch" },
        if o.grid { "" } else { " --no-grid" },
        if o.seq2seq { "" } else { " --no-seq2seq" },
        if o.cnn { "" } else { " --no-cnn" }
    )
}

/// Which whole-grid workload a grid row times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GridKind {
    Q2,
    Q3,
}

/// A bench grid: its spec for `orchestrate run`, and each run as `torch_ref.py` arguments
/// (one PyTorch process per run, the usual way).
struct GridPlan {
    spec: PathBuf,
    /// `--set` overrides of the spec (the study's data and epochs).
    overrides: Vec<String>,
    torch_runs: Vec<Vec<String>>,
}

impl GridPlan {
    /// The Q2 grid (`bench/q2_grid.toml`), each run as `torch_ref.py run`.
    fn load(repo: &Path) -> Result<GridPlan, String> {
        let spec = repo.join("bench/q2_grid.toml");
        let (_, plans) = orchestrate::grid::load_runs(&spec, &[]).map_err(|e| format!("{e}"))?;
        let torch_runs = plans
            .iter()
            .map(|p| {
                let c = &p.config;
                vec![
                    "run".to_string(),
                    format!("--lr={}", c.optimizer.lr),
                    format!("--epochs={}", c.train.epochs),
                    format!("--batch={}", c.train.batch_size),
                    format!("--train-limit={}", c.data.train_limit),
                    format!("--test-limit={}", c.data.test_limit),
                    format!("--dev-fraction={}", c.data.dev_fraction),
                ]
            })
            .collect();
        Ok(GridPlan {
            spec,
            overrides: Vec::new(),
            torch_runs,
        })
    }

    /// The homework Q3 study (`experiments/q3_attention.toml`) for `epochs` epochs on the
    /// pairs in `pairs_dir` (the shipped data/spa-eng-mini when `None`), each grid point as
    /// `torch_ref.py run-seq2seq` with its settings.
    fn load_q3_study(
        repo: &Path,
        pairs_dir: Option<&Path>,
        epochs: usize,
    ) -> Result<GridPlan, String> {
        let spec = repo.join("experiments/q3_attention.toml");
        let dir = pairs_dir.map_or_else(|| repo.join("data/spa-eng-mini"), Path::to_path_buf);
        let overrides = vec![
            format!("data.dir={}", dir.display()),
            format!("train.epochs={epochs}"),
        ];
        let (_, plans) =
            orchestrate::grid::load_runs(&spec, &overrides).map_err(|e| format!("{e}"))?;
        let runs = plans
            .iter()
            .map(|p| {
                let c = &p.config;
                let strategy = match c.decode.strategy {
                    orchestrate::spec::DecodeStrategy::Greedy => "greedy",
                    orchestrate::spec::DecodeStrategy::Beam => "beam",
                };
                let mut args = vec![
                    "run-seq2seq".to_string(),
                    format!("--epochs={}", c.train.epochs),
                    format!("--batch={}", c.train.batch_size),
                    format!("--lr={}", c.optimizer.lr),
                    format!("--dropout={}", c.model.dropout),
                    format!("--data-dir={}", c.data.dir),
                    format!("--max-len={}", c.data.max_len),
                    format!("--train-limit={}", c.data.train_limit),
                    format!("--test-limit={}", c.data.test_limit),
                    format!("--strategy={strategy}"),
                    format!("--beam-width={}", c.decode.beam_width),
                    format!("--length-penalty={}", c.decode.length_penalty),
                    format!("--decode-max-len={}", c.decode.max_len),
                    format!("--seed={}", c.seed),
                ];
                if c.model.attention != orchestrate::spec::Attention::None {
                    args.push("--attention".into());
                }
                args
            })
            .collect();
        Ok(GridPlan {
            spec,
            overrides,
            torch_runs: runs,
        })
    }
}

/// Starts the child processes of one measurement.
struct Runner<'a> {
    opts: &'a Opts,
    repo: &'a Path,
    torch_script: &'a Path,
    grid: Option<&'a GridPlan>,
    q3_study: Option<&'a GridPlan>,
    /// Each side's training seconds per epoch in the last `Q3Study` it ran, for the
    /// `Q3StudyTraining` row that follows it.
    study_training: std::cell::RefCell<Vec<(Side, f64)>>,
    scratch: tempfile::TempDir,
}

impl Runner<'_> {
    /// One sample of `work` on `side`, in the row's unit.
    fn measure(&self, work: &Work, side: Side) -> Result<f64, String> {
        let o = self.opts;
        match (work, side) {
            (Work::Grid { jobs, .. }, Side::Ours) => {
                let grid = self.grid.ok_or("no grid")?;
                let args = ["--jobs", &jobs.to_string(), "--threads", "1"];
                self.our_grid(grid, &args).map(|(seconds, _)| seconds)
            }
            (Work::Grid { torch_threads, .. }, Side::Torch) => {
                self.torch_grid(self.grid.ok_or("no grid")?, *torch_threads)
            }
            (Work::Q3Study { .. }, _) => {
                let study = self.q3_study.ok_or("no Q3 study")?;
                // A failed study leaves no training figure for the row after it.
                self.study_training.borrow_mut().retain(|(s, _)| *s != side);
                let (seconds, training) = match side {
                    // As the README runs it: the spec's own launch settings.
                    Side::Ours => {
                        let (seconds, runs) = self.our_grid(study, &[])?;
                        (seconds, train_seconds(runs.path())?)
                    }
                    Side::Torch => self.torch_study(study)?,
                };
                self.study_training.borrow_mut().push((side, training));
                Ok(seconds)
            }
            (Work::Q3StudyTraining, _) => self
                .study_training
                .borrow()
                .iter()
                .find(|(s, _)| *s == side)
                .map(|&(_, v)| v)
                .ok_or_else(|| "no Q3 study measured before".to_string()),
            (_, Side::Ours) => {
                let (threads, args) = match work {
                    Work::Train { batch, threads } => (
                        *threads,
                        vec![
                            "train".to_string(),
                            format!("--batch={batch}"),
                            format!("--steps={}", o.steps_at(*batch)),
                            format!("--warmup={}", o.warmup),
                            format!("--max-seconds={}", o.max_seconds),
                        ],
                    ),
                    Work::Eval { threads } => (
                        *threads,
                        vec!["eval".into(), format!("--passes={}", o.eval_passes)],
                    ),
                    Work::Matmul { threads } => (*threads, vec!["matmul".into()]),
                    Work::TrainSeq2seq {
                        batch,
                        threads,
                        attention,
                        dropout,
                        ..
                    } => {
                        let mut v = vec![
                            "seq2seq".to_string(),
                            format!("--batch={batch}"),
                            format!("--steps={}", o.s2s_steps),
                            "--warmup=3".to_string(),
                            format!("--max-seconds={}", o.max_seconds),
                            format!("--attention={attention}"),
                            format!("--dropout={dropout}"),
                            format!("--max-len={S2S_MAX_LEN}"),
                        ];
                        if let Some(d) = &o.pairs_dir {
                            v.push(format!("--pairs-dir={}", d.display()));
                        }
                        (*threads, v)
                    }
                    Work::Grid { .. } | Work::Q3Study { .. } | Work::Q3StudyTraining => {
                        unreachable!("handled above")
                    }
                };
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                let mut cmd = Command::new(exe);
                cmd.arg("--child")
                    .args(&args)
                    .env("RAYON_NUM_THREADS", threads.to_string())
                    .env("CANDLE_NUM_THREADS", threads.to_string());
                // The allocator settings a worker gets, so the child times what users run.
                for (k, v) in orchestrate::worker::ALLOCATOR_VARS {
                    if std::env::var_os(k).is_none() {
                        cmd.env(k, v);
                    }
                }
                field(&json_of(cmd)?, work)
            }
            (_, Side::Torch) => {
                let args = match work {
                    Work::Train { batch, threads } => vec![
                        "train".to_string(),
                        format!("--batch={batch}"),
                        format!("--steps={}", o.steps_at(*batch)),
                        format!("--warmup={}", o.warmup),
                        format!("--max-seconds={}", o.max_seconds),
                        format!("--threads={threads}"),
                    ],
                    Work::Eval { threads } => vec![
                        "eval".into(),
                        format!("--passes={}", o.eval_passes),
                        format!("--threads={threads}"),
                    ],
                    Work::Matmul { threads } => {
                        vec!["peak".into(), format!("--threads={threads}")]
                    }
                    Work::TrainSeq2seq {
                        batch,
                        threads,
                        attention,
                        dropout,
                        ..
                    } => {
                        let mut v = vec![
                            "train-seq2seq".to_string(),
                            format!("--batch={batch}"),
                            format!("--steps={}", o.s2s_steps),
                            "--warmup=3".to_string(),
                            format!("--max-seconds={}", o.max_seconds),
                            format!("--threads={threads}"),
                            format!("--dropout={dropout}"),
                            format!("--max-len={S2S_MAX_LEN}"),
                        ];
                        if let Some(d) = &o.pairs_dir {
                            v.push(format!("--data-dir={}", d.display()));
                        }
                        if *attention {
                            v.push("--attention".into());
                        }
                        v
                    }
                    Work::Grid { .. } | Work::Q3Study { .. } | Work::Q3StudyTraining => {
                        unreachable!("handled above")
                    }
                };
                let mut cmd = Command::new(&o.python);
                cmd.arg(self.torch_script).args(&args);
                field(&json_of(cmd)?, work)
            }
        }
    }

    /// Wall seconds of `orchestrate run` of `plan`'s spec with `args`, in a fresh runs
    /// directory, and that directory.
    fn our_grid(&self, plan: &GridPlan, args: &[&str]) -> Result<(f64, tempfile::TempDir), String> {
        let runs_dir = tempfile::tempdir_in(self.scratch.path()).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrate"));
        cmd.arg("run")
            .arg(&plan.spec)
            .arg("--runs-dir")
            .arg(runs_dir.path())
            .args(args)
            .arg("--quiet")
            .current_dir(self.repo);
        for o in &plan.overrides {
            cmd.args(["--set", o]);
        }
        let t = Instant::now();
        run_ok(cmd)?;
        Ok((t.elapsed().as_secs_f64(), runs_dir))
    }

    /// The Q3 study the usual PyTorch way: each grid point's script, one after another,
    /// with torch's default threads. Wall seconds, and the mean seconds per epoch of the
    /// scripts' training steps.
    fn torch_study(&self, plan: &GridPlan) -> Result<(f64, f64), String> {
        let t = Instant::now();
        let (mut train, mut epochs) = (0.0, 0);
        for args in &plan.torch_runs {
            let mut cmd = Command::new(&self.opts.python);
            cmd.arg(self.torch_script).args(args);
            let out = json_of(cmd)?;
            let seconds = out.get("train_seconds").and_then(Value::as_f64);
            let n = out.get("epochs").and_then(Value::as_array).map(Vec::len);
            match (seconds, n) {
                (Some(s), Some(n)) if n > 0 => (train, epochs) = (train + s, epochs + n),
                _ => return Err(format!("no train_seconds or epochs in {out}")),
            }
        }
        Ok((t.elapsed().as_secs_f64(), train / epochs as f64))
    }

    /// Wall seconds of a grid the usual PyTorch way: one process per run, in turn.
    fn torch_grid(&self, plan: &GridPlan, threads: usize) -> Result<f64, String> {
        let t = Instant::now();
        for args in &plan.torch_runs {
            let mut cmd = Command::new(&self.opts.python);
            cmd.arg(self.torch_script)
                .args(args)
                .arg(format!("--threads={threads}"));
            run_ok(cmd)?;
        }
        Ok(t.elapsed().as_secs_f64())
    }
}

/// The mean seconds per epoch of the training steps (`time/train_seconds`) of the runs of
/// every experiment under `runs_dir`.
fn train_seconds(runs_dir: &Path) -> Result<f64, String> {
    let mut train = Vec::new();
    for exp in std::fs::read_dir(runs_dir).map_err(|e| e.to_string())? {
        let exp = exp.map_err(|e| e.to_string())?.path();
        if !exp.is_dir() {
            continue;
        }
        for run in orchestrate::summary::run_dirs(&exp).map_err(|e| e.to_string())? {
            let metrics = orchestrate::store::RunDir::at(run).metrics();
            let records =
                orchestrate::store::metrics::read_records(&metrics).map_err(|e| e.to_string())?;
            train.extend(
                records
                    .iter()
                    .filter(|r| r.tag == "time/train_seconds")
                    .map(|r| r.value),
            );
        }
    }
    if train.is_empty() {
        return Err(format!(
            "no time/train_seconds under {}",
            runs_dir.display()
        ));
    }
    Ok(mean(&train))
}

/// The number a row records from a child's JSON answer.
fn field(v: &Value, work: &Work) -> Result<f64, String> {
    let key = match work {
        Work::Matmul { .. } => "gflops",
        Work::TrainSeq2seq { .. } => "sentences_per_s",
        _ => "images_per_s",
    };
    v.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("no {key} in {v}"))
}

/// Runs `cmd` and returns its stdout, or an error with its stderr.
fn run_ok(mut cmd: Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        let code = out.status.code();
        let hint = if code == Some(NO_TORCH) {
            " (torch is not installed)"
        } else {
            ""
        };
        return Err(format!(
            "{cmd:?} exited with {:?}{hint}\n{}\n{}",
            code,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The JSON object on the last line of `cmd`'s stdout.
fn json_of(cmd: Command) -> Result<Value, String> {
    let stdout = run_ok(cmd)?;
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).map_err(|e| format!("bad child output {last:?}: {e}"))
}
