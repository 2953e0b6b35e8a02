//! Replicates: a spec with `repeats = N` expands each configuration into N runs.

use super::*;

fn two_lrs(repeats: u32) -> Spec {
    let mut spec = Spec {
        name: "t".into(),
        repeats,
        ..Spec::default()
    };
    spec.grid.axes.insert(
        "optimizer.lr".into(),
        vec![Value::Float(0.001), Value::Float(0.01)],
    );
    spec
}

#[test]
fn each_configuration_expands_into_its_replicates_in_order() {
    let runs = expand(&two_lrs(3)).unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "lr0.001-rep0",
            "lr0.001-rep1",
            "lr0.001-rep2",
            "lr0.01-rep0",
            "lr0.01-rep1",
            "lr0.01-rep2"
        ]
    );
    // In TensorBoard a configuration's replicates sit under its name.
    let log_names: Vec<&str> = runs.iter().map(|r| r.log_name.as_str()).collect();
    assert_eq!(
        log_names,
        [
            "lr0.001/r0",
            "lr0.001/r1",
            "lr0.001/r2",
            "lr0.01/r0",
            "lr0.01/r1",
            "lr0.01/r2"
        ]
    );
    assert_eq!(
        runs.iter().map(|r| r.index).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    let reps: Vec<(String, u32)> = runs
        .iter()
        .map(|r| {
            let rep = r.replicate.as_ref().unwrap();
            (rep.configuration.clone(), rep.index)
        })
        .collect();
    assert_eq!(reps[0].0, reps[2].0);
    assert_ne!(reps[0].0, reps[3].0);
    assert_eq!(
        reps.iter().map(|r| r.1).collect::<Vec<_>>(),
        [0, 1, 2, 0, 1, 2]
    );
    // Every replicate is a run of its own, training on its own.
    let ids: std::collections::HashSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let tids: std::collections::HashSet<&str> =
        runs.iter().map(|r| r.training_id.as_str()).collect();
    assert_eq!((ids.len(), tids.len()), (6, 6));
    assert!(runs.iter().all(|r| r.config.repeats == 1));
    assert!(!ids.contains(reps[0].0.as_str()));
}

#[test]
fn replicate_zero_is_the_run_a_spec_without_repeats_plans() {
    let single = expand(&two_lrs(1)).unwrap();
    let three = expand(&two_lrs(3)).unwrap();
    assert!(single.iter().all(|r| r.replicate.is_none()));
    assert_eq!(single[0].log_name, single[0].name);
    assert_eq!(three[0].id, single[0].id);
    assert_eq!(three[3].id, single[1].id);
    assert_eq!(three[0].config.training_seed(), 42);
    assert_eq!(
        three[0].replicate.as_ref().unwrap().configuration,
        identity::configuration_id(&single[0].id)
    );
}

#[test]
fn replicate_seeds_are_stable() {
    use crate::spec::replicate_seed;
    // Golden: changing the derivation changes every replicate's numbers.
    assert_eq!(replicate_seed(42, 0), 42);
    assert_eq!(replicate_seed(42, 1), GOLDEN_42_1);
    assert_eq!(replicate_seed(42, 2), GOLDEN_42_2);
    assert_eq!(replicate_seed(7, 1), GOLDEN_7_1);
    let runs = expand(&two_lrs(3)).unwrap();
    assert_eq!(runs[1].config.training_seed(), GOLDEN_42_1);
    assert_eq!(runs[4].config.training_seed(), GOLDEN_42_1);
    // The dev split and the random search stay on the spec's own seed.
    assert!(runs.iter().all(|r| r.config.seed == 42));
}

#[test]
fn repeats_count_against_the_run_limit() {
    let mut spec = two_lrs(3);
    spec.launch.max_runs = 5;
    assert!(matches!(
        expand(&spec),
        Err(GridError::TooManyRuns { runs: 6, max: 5 })
    ));
}

#[test]
fn the_grid_cannot_vary_repeats_or_the_replicate() {
    for key in ["repeats", "replicate"] {
        let mut spec = two_lrs(1);
        spec.grid.axes.insert(key.into(), vec![Value::Integer(2)]);
        let err = expand(&spec).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
}

// The same SHA-256 derivation computed with Python's hashlib.
const GOLDEN_42_1: u64 = 8509841638455595354;
const GOLDEN_42_2: u64 = 110196614511200720;
const GOLDEN_7_1: u64 = 4987016334186711572;
