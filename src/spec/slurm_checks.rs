//! Checks of `[launch.slurm]`: each value must be something sbatch accepts for its option.
//!
//! These values end up in `#SBATCH` lines of a bash script and in sbatch's argument list, so
//! the rules are strict formats (what sbatch documents for `--mem`, `--time`, `--gres`,
//! `--partition`), not "anything without a newline": a value that passes cannot change what
//! the script says. The script writer runs the same checks again before it writes anything
//! ([`crate::launch::slurm::script::render`]).

use super::types::SlurmSpec;
use super::validate::Violation;

/// Options orchestrate sets itself or relies on: `extra_args` may not override them.
const OWNED_OPTIONS: &[&str] = &[
    "array",
    "chdir",
    "output",
    "open-mode",
    "parsable",
    "requeue",
    "wrap",
    "help",
    "usage",
    "version",
];

/// Every problem with `slurm` (`launch.slurm`), in key order.
pub fn check(slurm: &SlurmSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut text = |key: &str, v: &str, r: Result<(), String>| {
        if let Err(message) = r {
            out.push(Violation {
                key: format!("launch.slurm.{key}"),
                value: format!("{v:?}"),
                message,
            });
        }
    };
    text(
        "partition",
        &slurm.partition,
        check_partition(&slurm.partition),
    );
    text("time", &slurm.time, check_time(&slurm.time));
    text("mem", &slurm.mem, check_mem(&slurm.mem));
    text("gres", &slurm.gres, check_gres(&slurm.gres));
    for (i, a) in slurm.extra_args.iter().enumerate() {
        text(&format!("extra_args.{i}"), a, check_extra_arg(a));
    }
    out
}

fn all_digits(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
}

/// A name of a partition, a GRES or a GRES type: starts with a letter, digit or `_`.
fn is_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `--partition`: one name or a comma-separated list; empty = the cluster's default.
pub fn check_partition(p: &str) -> Result<(), String> {
    if p.is_empty() || p.split(',').all(is_name) {
        Ok(())
    } else {
        Err(
            "must be a partition name or a comma-separated list of them (letters, digits, \
             `_`, `-`, `.`; not starting with `-` or `.`), e.g. \"gpu\" (sbatch --partition)"
                .into(),
        )
    }
}

/// `--time`: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, or no limit.
pub fn check_time(t: &str) -> Result<(), String> {
    if t.is_empty() || t.eq_ignore_ascii_case("infinite") || t.eq_ignore_ascii_case("unlimited") {
        return Ok(());
    }
    let clock_ok = |clock: &str, max_parts: usize| {
        let parts: Vec<&str> = clock.split(':').collect();
        parts.len() <= max_parts && parts.iter().all(|p| all_digits(p, 8))
    };
    let ok = match t.split_once('-') {
        Some((days, clock)) => all_digits(days, 8) && clock_ok(clock, 3),
        None => clock_ok(t, 3),
    };
    if ok {
        Ok(())
    } else {
        Err(
            "must be a time limit sbatch reads: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or \
             D-HH:MM:SS (e.g. \"02:00:00\", \"1-12\"), or \"infinite\" (sbatch --time)"
                .into(),
        )
    }
}

/// `--mem`: a number of megabytes, or with a K, M, G or T suffix (a trailing B allowed).
pub fn check_mem(m: &str) -> Result<(), String> {
    if m.is_empty() {
        return Ok(());
    }
    let digits = m.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &m[digits.len()..].to_ascii_uppercase();
    let unit_ok = matches!(
        unit.as_str(),
        "" | "K" | "M" | "G" | "T" | "KB" | "MB" | "GB" | "TB"
    );
    if all_digits(digits, 15) && unit_ok {
        Ok(())
    } else {
        Err(
            "must be a size: megabytes, or a number with a K, M, G or T suffix, e.g. \"8G\" \
             or \"500M\" (sbatch --mem)"
                .into(),
        )
    }
}

/// `--gres`: a comma-separated list of `name[:type][:count]`.
pub fn check_gres(g: &str) -> Result<(), String> {
    let count = |c: &str| {
        let n = c
            .strip_suffix(|s: char| "kKmMgGtT".contains(s))
            .unwrap_or(c);
        all_digits(n, 12)
    };
    let entry = |e: &str| {
        let parts: Vec<&str> = e.split(':').collect();
        is_name(parts[0])
            && parts[0] != "help"
            && match parts.len() {
                1 => true,
                2 => is_name(parts[1]) || count(parts[1]),
                3 => is_name(parts[1]) && count(parts[2]),
                _ => false,
            }
    };
    if g.is_empty() || g.split(',').all(entry) {
        Ok(())
    } else {
        Err(
            "must be a comma-separated list of name[:type][:count], e.g. \"gpu:1\" or \
             \"gpu:a100:2\" (sbatch --gres)"
                .into(),
        )
    }
}

/// One element of `extra_args`: one long option, `--name` or `--name=value`.
///
/// One option per element keeps a stray word from becoming sbatch's script argument (sbatch
/// would run it instead of ours); a value goes after `=` in the same element.
pub fn check_extra_arg(a: &str) -> Result<(), String> {
    crate::launch::slurm::quote::check_line_safe(a)?;
    let (name, _value) = a
        .strip_prefix("--")
        .map(|rest| rest.split_once('=').unwrap_or((rest, "")))
        .unwrap_or(("", ""));
    let well_formed = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !well_formed {
        return Err(
            "must be one long sbatch option, `--name` or `--name=value`, e.g. \
             \"--account=dl-course\" (a value goes in the same element, after `=`)"
                .into(),
        );
    }
    // sbatch accepts any unambiguous prefix of a long option (`--wr` is `--wrap`).
    if let Some(owned) = OWNED_OPTIONS.iter().find(|o| o.starts_with(name)) {
        return Err(format!(
            "--{owned} is set by orchestrate itself and cannot be overridden; allowed: other \
             sbatch options such as --account, --qos, --constraint"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass() {
        assert_eq!(check(&SlurmSpec::default()), vec![]);
    }

    #[test]
    fn times() {
        for ok in [
            "",
            "30",
            "30:00",
            "01:30:00",
            "2-12",
            "2-12:30",
            "2-12:30:15",
            "infinite",
            "UNLIMITED",
            "0",
        ] {
            assert!(check_time(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "1h",
            "01:30:00\n#SBATCH --x",
            "-1",
            "1:2:3:4",
            "1--2",
            "2-",
            "-12",
            ":30",
            "1 2",
            "$(id)",
            "2-1-1",
        ] {
            assert!(check_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory() {
        for ok in [
            "", "0", "500", "8G", "8g", "16GB", "512M", "1T", "999999G", "100K",
        ] {
            assert!(check_mem(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "G",
            "8 G",
            "8P",
            "8GiB",
            "-1",
            "8G\ntouch x",
            "1.5G",
            "8G;id",
        ] {
            assert!(check_mem(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn gres_lists() {
        for ok in [
            "",
            "gpu",
            "gpu:1",
            "gpu:a100:2",
            "gpu:tesla",
            "gpu:1g.10gb:1",
            "gpu:2,mps:100",
            "gpu:4k",
        ] {
            assert!(check_gres(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "gpu:",
            ":1",
            "gpu:a:b",
            "gpu:1:2:3",
            "gpu,",
            "help",
            "gpu:1 --wrap=x",
            "gpu:$(id)",
            "-gpu",
        ] {
            assert!(check_gres(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partitions() {
        for ok in ["", "gpu", "debug,long", "a100_80gb", "ci-down"] {
            assert!(check_partition(ok).is_ok(), "{ok:?}");
        }
        for bad in ["-x", "gpu,", "a b", "gpu;id", ".hidden", "g\u{0}"] {
            assert!(check_partition(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn extra_args() {
        for ok in [
            "--account=dl-course",
            "--qos=normal",
            "--exclusive",
            "--comment=$(touch x) `id`; 'q' \"dq\"",
            "--no-requeue",
        ] {
            assert!(check_extra_arg(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "evil.sh",
            "-A",
            "-Adl",
            "--",
            "--=x",
            "--qos\n#SBATCH --wrap=x",
            "--comment=a\u{0}b",
            "--wrap=touch x",
            "--wr=touch x",
            "--array=0-99",
            "--output=/tmp/x",
            "--chdir=/",
            "--requeue",
            "--parsable",
        ] {
            assert!(check_extra_arg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn violations_name_the_key_and_the_value() {
        let s = SlurmSpec {
            mem: "8G\ntouch /tmp/canary".into(),
            extra_args: vec!["--qos=x".into(), "x.sh".into()],
            ..SlurmSpec::default()
        };
        let v = check(&s);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].key, "launch.slurm.mem");
        assert_eq!(v[0].value, r#""8G\ntouch /tmp/canary""#);
        assert_eq!(v[1].key, "launch.slurm.extra_args.1");
    }
}
