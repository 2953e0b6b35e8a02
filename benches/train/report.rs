//! The benchmark's table and results file: machine facts, medians, spreads and ratios.

use crate::child::Flops;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// What a row's numbers count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    ImagesPerSecond,
    /// Seq2seq training sentences (pairs) per second.
    SentencesPerSecond,
    Gflops,
    /// Wall time: lower is better, so the ratio is PyTorch / ours.
    Seconds,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::ImagesPerSecond => "img/s",
            Unit::SentencesPerSecond => "sent/s",
            Unit::Gflops => "GFLOP/s",
            Unit::Seconds => "s",
        }
    }
}

/// The samples of one workload on both sides.
pub struct Row {
    pub label: String,
    pub unit: Unit,
    pub ours: Vec<f64>,
    pub torch: Vec<f64>,
}

/// Median of `v` (mean of the middle two for an even count); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

fn min_max(v: &[f64]) -> Option<(f64, f64)> {
    let min = v.iter().copied().reduce(f64::min)?;
    let max = v.iter().copied().reduce(f64::max)?;
    Some((min, max))
}

/// A number with three significant figures or so, without scientific notation.
fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

impl Row {
    pub fn new(label: String, unit: Unit) -> Row {
        Row {
            label,
            unit,
            ours: Vec::new(),
            torch: Vec::new(),
        }
    }

    pub fn push(&mut self, ours: bool, value: f64) {
        if ours {
            self.ours.push(value);
        } else {
            self.torch.push(value);
        }
    }

    /// Ours / PyTorch for rates, PyTorch / ours for times: above 1 means we are faster.
    pub fn ratio(&self) -> Option<f64> {
        let (o, t) = (median(&self.ours)?, median(&self.torch)?);
        Some(match self.unit {
            Unit::Seconds => t / o,
            _ => o / t,
        })
    }

    fn cell(&self, v: &[f64]) -> String {
        median(v).map_or("-".into(), |m| format!("{} {}", num(m), self.unit.suffix()))
    }

    fn spread(&self, v: &[f64]) -> String {
        min_max(v).map_or("-".into(), |(a, b)| format!("{}–{}", num(a), num(b)))
    }

    /// One line for the progress log on stderr.
    pub fn progress(&self) -> String {
        format!(
            "{}: ours {:?} torch {:?}",
            self.label,
            self.ours.iter().map(|&v| num(v)).collect::<Vec<_>>(),
            self.torch.iter().map(|&v| num(v)).collect::<Vec<_>>()
        )
    }
}

/// Facts about the machine and software a result depends on.
#[derive(Debug, Default)]
pub struct Machine {
    pub date: String,
    pub time: String,
    pub host: String,
    pub cpu: String,
    pub cores: usize,
    pub rustc: String,
    pub candle: String,
    pub python: String,
    pub numpy: String,
    /// torch version, `None` when it cannot be imported.
    pub torch: Option<String>,
    pub load_before: String,
    pub load_after: String,
    pub seconds: f64,
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `/proc/loadavg`'s three load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

impl Machine {
    /// Reads the machine's facts; `torch_script info` supplies the Python side.
    pub fn probe(repo: &Path, python: &str, torch_script: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "?".into());
        let lock = std::fs::read_to_string(repo.join("Cargo.lock")).unwrap_or_default();
        let candle = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"candle-core\""))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "?".into());
        let info = output(Command::new(python).arg(torch_script).arg("info"))
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .unwrap_or_default();
        let text = |k: &str| info.get(k).and_then(|v| v.as_str()).map(str::to_string);
        Machine {
            date: output(Command::new("date").arg("-u").arg("+%Y-%m-%d"))
                .unwrap_or_else(|| "undated".into()),
            time: output(Command::new("date").arg("-u").arg("+%H:%M UTC")).unwrap_or_default(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "host".into()),
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            rustc: output(Command::new("rustc").arg("-V")).unwrap_or_else(|| "?".into()),
            candle,
            python: text("python").unwrap_or_else(|| "not found".into()),
            numpy: text("numpy").unwrap_or_else(|| "?".into()),
            torch: text("torch"),
            ..Machine::default()
        }
    }
}

/// The whole report: header, table, GFLOP/s, notes. Markdown, readable as plain text.
pub fn render(m: &Machine, rows: &[Row], flops: &Flops, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Training benchmark, {} {}\n", m.date, m.time);
    let _ = writeln!(
        s,
        "- machine: `{}`, {} ({} cores seen by the process)",
        m.host, m.cpu, m.cores
    );
    let _ = writeln!(
        s,
        "- load average (1/5/15 min) before: {}, after: {}; {:.0} s in all",
        m.load_before, m.load_after, m.seconds
    );
    let _ = writeln!(
        s,
        "- versions: {}, candle-core {}, Python {}, numpy {}, torch {}",
        m.rustc,
        m.candle,
        m.python,
        m.numpy,
        m.torch.as_deref().unwrap_or("not installed")
    );
    let _ = writeln!(s, "- command: `{command}`\n");
    let width = rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(8);
    let _ = writeln!(
        s,
        "| {:<width$} | {:>15} | {:>15} | {:>6} | {:<29} |",
        "workload", "ours", "PyTorch", "ratio", "spread ours; PyTorch"
    );
    let _ = writeln!(
        s,
        "|{}|{}:|{}:|{}:|{}|",
        "-".repeat(width + 2),
        "-".repeat(16),
        "-".repeat(16),
        "-".repeat(7),
        "-".repeat(31)
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {:<width$} | {:>15} | {:>15} | {:>6} | {:<29} |",
            r.label,
            r.cell(&r.ours),
            r.cell(&r.torch),
            r.ratio().map_or("-".into(), |x| format!("{x:.2}x")),
            format!("{}; {}", r.spread(&r.ours), r.spread(&r.torch)),
        );
    }
    let _ = writeln!(
        s,
        "\nMedians of {} interleaved repetitions; spread is min–max. Ratio > 1: we are \
         faster (ours/PyTorch for rates, PyTorch/ours for grid wall time).\n",
        rows.iter().map(|r| r.ours.len()).max().unwrap_or(0)
    );
    let busy = m
        .load_before
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .is_some_and(|l| l > m.cores as f64 - 0.5);
    if busy {
        let _ = writeln!(
            s,
            "Note: the load average was near or above the {} cores, so other processes \
             competed for them. Rows on as many threads as cores (and PyTorch's \"all cores\" \
             grid) then measure how each side's thread pool copes with a busy core \
             (spin-waiting workers) more than its kernels; compare the 1-thread rows for \
             kernels.\n",
            m.cores
        );
    }
    gflops_section(&mut s, rows, flops);
    s
}

/// Achieved GFLOP/s of the training rows against the best matmul seen on as many threads.
fn gflops_section(s: &mut String, rows: &[Row], f: &Flops) {
    if !rows.iter().any(|r| r.unit == Unit::ImagesPerSecond) {
        return;
    }
    let _ = writeln!(
        s,
        "## CNN training GFLOP/s\n\nThe homework CNN costs {:.2} MFLOP per image forward \
         (multiply-adds x2, counted layer by layer), so {:.2} MFLOP per training image at \
         3x forward ({:.2} MFLOP without the first convolution's input gradient, which \
         nothing needs). Peak: the best 2048² fp32 matmul seen on that many threads (torch \
         or Candle, whichever is faster, over all repetitions).\n",
        f.forward / 1e6,
        f.train / 1e6,
        f.train_needed / 1e6
    );
    let _ = writeln!(
        s,
        "| workload | ours GFLOP/s | % of peak | PyTorch GFLOP/s | % of peak | peak |\n|---|---:|---:|---:|---:|---:|"
    );
    for r in rows
        .iter()
        .filter(|r| r.unit == Unit::ImagesPerSecond && r.label.starts_with("train"))
    {
        let threads = r.label.rsplit(", ").next().unwrap_or("");
        let peak = rows
            .iter()
            .filter(|p| p.unit == Unit::Gflops && p.label.ends_with(threads))
            .flat_map(|p| p.ours.iter().chain(p.torch.iter()).copied())
            .reduce(f64::max);
        let g = |v: &[f64]| median(v).map(|ips| ips * f.train / 1e9);
        let cell = |x: Option<f64>| x.map_or("-".into(), num);
        let pct = |x: Option<f64>| match (x, peak) {
            (Some(x), Some(p)) => format!("{:.0}%", 100.0 * x / p),
            _ => "-".into(),
        };
        let (o, t) = (g(&r.ours), g(&r.torch));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.label,
            cell(o),
            pct(o),
            cell(t),
            pct(t),
            cell(peak)
        );
    }
}
