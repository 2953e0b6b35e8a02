//! Whether a run directory's results still hold: the one `stale` rule, beside
//! [`super::check_finished`]'s `damaged`.
//!
//! A run's id includes the fingerprint of its data files and the numerics version of the code
//! that planned it (`grid::identity`). Results of a directory planned under another numerics
//! version, or whose data files have changed since, no longer match what the same config
//! computes now: `status` and `plan` show such a run as `stale`, summaries never rank it, and
//! its directory is left as it is. A directory from before data fingerprints has numerics
//! version 0 in its `plan.json` and is stale for that reason alone.

use std::fmt;

use super::PlanRecord;
use crate::grid::identity::DataFingerprint;

/// Why a run directory's results no longer match the current code or data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// The directory was written before data fingerprints and numerics versions existed.
    BeforeFingerprints,
    /// The run was planned under another numerics version.
    Numerics { was: u32, now: u32 },
    /// These data files (by role) hold other contents than when the run was planned.
    Data { changed: Vec<String> },
}

impl fmt::Display for Stale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stale::BeforeFingerprints => write!(f, "written before data fingerprints"),
            Stale::Numerics { was, now } => {
                write!(f, "numerics version {was}, this build's is {now}")
            }
            Stale::Data { changed } => write!(f, "data changed: {}", changed.join(", ")),
        }
    }
}

/// Whether the run `plan` describes is stale under numerics version `numerics`, `data_now`
/// being the fingerprint of the data files its config names as they are now. Data that
/// cannot be read now (or was not read when planned) cannot be compared: only a file whose
/// contents are known on both sides and differ makes a run stale.
pub fn check_current(
    plan: &PlanRecord,
    data_now: &DataFingerprint,
    numerics: u32,
) -> Result<(), Stale> {
    if plan.numerics == 0 {
        return Err(Stale::BeforeFingerprints);
    }
    if plan.numerics != numerics {
        return Err(Stale::Numerics {
            was: plan.numerics,
            now: numerics,
        });
    }
    if let (DataFingerprint::Files(then), DataFingerprint::Files(now)) = (&plan.data, data_now) {
        let changed: Vec<String> = then
            .keys()
            .chain(now.keys().filter(|k| !then.contains_key(*k)))
            .filter(|k| then.get(*k) != now.get(*k))
            .cloned()
            .collect();
        if !changed.is_empty() {
            return Err(Stale::Data { changed });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    /// Any version: these tests compare versions, not their values.
    const NUMERICS_VERSION: u32 = 1;

    fn plan(numerics: u32, data: DataFingerprint) -> PlanRecord {
        PlanRecord {
            index: 0,
            id: "a".into(),
            training_id: "a".into(),
            name: "run".into(),
            varied: Default::default(),
            data,
            numerics,
            replicate: None,
            tensorboard: String::new(),
        }
    }

    fn files(train: &str) -> DataFingerprint {
        DataFingerprint::Files(
            [("train", train), ("test", "t")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn same_data_and_numerics_is_current() {
        let p = plan(NUMERICS_VERSION, files("x"));
        assert_eq!(check_current(&p, &files("x"), NUMERICS_VERSION), Ok(()));
        // Data not here now: nothing to compare, not stale.
        assert_eq!(
            check_current(&p, &DataFingerprint::Unread, NUMERICS_VERSION),
            Ok(())
        );
    }

    #[test]
    fn a_changed_file_is_named() {
        let p = plan(NUMERICS_VERSION, files("x"));
        let e = check_current(&p, &files("y"), NUMERICS_VERSION).unwrap_err();
        assert_eq!(e.to_string(), "data changed: train");
    }

    #[test]
    fn a_numerics_bump_makes_every_run_stale() {
        let p = plan(NUMERICS_VERSION, files("x"));
        let e = check_current(&p, &files("x"), NUMERICS_VERSION + 1).unwrap_err();
        assert_eq!(
            e,
            Stale::Numerics {
                was: NUMERICS_VERSION,
                now: NUMERICS_VERSION + 1
            }
        );
    }

    #[test]
    fn directories_from_before_fingerprints_are_stale() {
        let p = plan(0, DataFingerprint::Unread);
        let e = check_current(&p, &files("x"), NUMERICS_VERSION).unwrap_err();
        assert_eq!(e.to_string(), "written before data fingerprints");
    }
}
