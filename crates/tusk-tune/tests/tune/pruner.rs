//! Pruners on synthetic learning curves.

use tusk_tune::pruner::{Pruner, PrunerKind};
use tusk_tune::sampler::{Observation, TrialState};
use tusk_tune::space::Params;

/// Every trial's loss curve has the same shape, shifted by its quality `q` (lower is better),
/// so the ordering of trials is the same at every step.
fn curve(q: f64, step: u32) -> f64 {
    q + 10.0 / f64::from(step)
}

fn obs(state: TrialState, intermediate: Vec<(u32, f64)>) -> Observation {
    let value = (state == TrialState::Complete).then(|| intermediate.last().unwrap().1);
    Observation {
        params: Params::new(),
        state,
        value,
        intermediate,
    }
}

/// How the judged trial appears in the history passed to the pruner.
#[derive(Clone, Copy, Debug)]
enum SelfInHistory {
    Absent,
    Current,
    Stale,
}

/// Run trials one after another (each `max_step` steps unless pruned); per trial, the step it
/// was pruned at, or None when it completed.
fn simulate(
    pruner: &Pruner,
    qualities: &[f64],
    max_step: u32,
    me: SelfInHistory,
) -> Vec<Option<u32>> {
    let mut history: Vec<Observation> = Vec::new();
    let mut out = Vec::new();
    for &q in qualities {
        let mut mine = Vec::new();
        let mut pruned_at = None;
        for step in 1..=max_step {
            mine.push((step, curve(q, step)));
            let mut h = history.clone();
            match me {
                SelfInHistory::Absent => {}
                SelfInHistory::Current => h.push(obs(TrialState::Running, mine.clone())),
                SelfInHistory::Stale => {
                    h.insert(0, obs(TrialState::Running, mine[..mine.len() - 1].to_vec()))
                }
            }
            if pruner.should_prune(&mine, &h) {
                pruned_at = Some(step);
                break;
            }
        }
        let state = if pruned_at.is_some() {
            TrialState::Pruned
        } else {
            TrialState::Complete
        };
        history.push(obs(state, mine));
        out.push(pruned_at);
    }
    out
}

/// A fixed pseudo-random permutation of 0..n as qualities.
fn shuffled(n: usize, seed: u64) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let mut z = seed;
    for i in (1..n).rev() {
        z = z
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = ((z >> 33) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

#[test]
fn asha_rungs_are_powers_of_three() {
    assert_eq!(Pruner::new(PrunerKind::Asha).rungs(100), [1, 3, 9, 27, 81]);
    assert_eq!(Pruner::asha(2, 2).rungs(20), [2, 4, 8, 16]);
}

#[test]
fn asha_keeps_the_top_third_at_each_rung_and_never_the_best_pruned() {
    let pruner = Pruner::new(PrunerKind::Asha);
    for seed in [1, 2, 3] {
        let q = shuffled(30, seed);
        let got = simulate(&pruner, &q, 27, SelfInHistory::Absent);
        // Rung 1: every earlier trial reported step 1, so trial i is judged among i + 1.
        for i in 0..q.len() {
            let better = q[..i].iter().filter(|&&o| o < q[i]).count();
            let keep = ((i + 1) / 3).max(1);
            assert_eq!(
                got[i] == Some(1),
                better >= keep,
                "seed {seed}: trial {i} (q {}) with {better} better of {}: {:?}",
                q[i],
                i + 1,
                got[i]
            );
        }
        // Nobody is pruned between rungs.
        assert!(
            got.iter().flatten().all(|s| [1, 3, 9, 27].contains(s)),
            "{got:?}"
        );
        // The best trial runs to the end; most trials are stopped early.
        let best = q.iter().position(|&x| x == 0.0).unwrap();
        assert_eq!(got[best], None);
        let pruned = got.iter().filter(|p| p.is_some()).count();
        assert!(pruned >= 20, "{pruned} of 30 pruned: {got:?}");
        // The same decisions when the history holds the trial itself.
        for me in [SelfInHistory::Current, SelfInHistory::Stale] {
            assert_eq!(simulate(&pruner, &q, 27, me), got, "{me:?}");
        }
    }
}

#[test]
fn asha_on_known_orderings() {
    let pruner = Pruner::new(PrunerKind::Asha);
    // Each trial worse than the one before: all but the first stop at the first rung.
    let worse: Vec<f64> = (0..10).map(f64::from).collect();
    let got = simulate(&pruner, &worse, 9, SelfInHistory::Absent);
    assert_eq!(got[0], None);
    assert!(got[1..].iter().all(|p| *p == Some(1)), "{got:?}");
    // Each trial better than the one before: none is ever pruned.
    let better: Vec<f64> = (0..10).rev().map(f64::from).collect();
    let got = simulate(&pruner, &better, 9, SelfInHistory::Absent);
    assert!(got.iter().all(Option::is_none), "{got:?}");
}

#[test]
fn asha_meets_rungs_when_steps_skip_them() {
    let pruner = Pruner::new(PrunerKind::Asha);
    // Three finished trials that reported every step.
    let history: Vec<Observation> = [0.0, 1.0, 2.0]
        .iter()
        .map(|&q| {
            obs(
                TrialState::Complete,
                (1..=9).map(|s| (s, curve(q, s))).collect(),
            )
        })
        .collect();
    // Reporting every other step: step 2 is the first past rung 1, step 4 the first past 3.
    let bad = [(2, curve(20.0, 2))];
    assert!(pruner.should_prune(&bad, &history));
    let good = [(2, curve(-1.0, 2))];
    assert!(!pruner.should_prune(&good, &history));
    // Step 4 after step 2 crosses rung 3: judged there.
    let later = [(2, curve(-1.0, 2)), (4, curve(20.0, 4))];
    assert!(pruner.should_prune(&later, &history));
    // Step 2 after step 1 crosses no rung: never pruned, however bad.
    assert!(!pruner.should_prune(&[(1, -100.0), (2, 1e9)], &history));
}

#[test]
fn median_prunes_worse_than_the_median_after_five_completed() {
    let pruner = Pruner::new(PrunerKind::Median);
    // Before five trials complete nothing is pruned, however bad.
    let got = simulate(
        &pruner,
        &[10.0, 1000.0, 20.0, 900.0, 30.0],
        5,
        SelfInHistory::Absent,
    );
    assert!(got.iter().all(Option::is_none), "{got:?}");
    // Completed at 10..50; their median at every step is 30 + 10/step.
    let mut q = vec![10.0, 20.0, 30.0, 40.0, 50.0];
    q.extend([25.0, 35.0, 0.0, 31.0, 29.0]);
    let got = simulate(&pruner, &q, 5, SelfInHistory::Absent);
    assert!(got[..5].iter().all(Option::is_none), "{got:?}");
    // q = 25 beats the median (30 + 10/s) at every step, even as more complete.
    assert_eq!(got[5], None);
    // q = 35 is worse than the median at step 1.
    assert_eq!(got[6], Some(1));
    // The best is never pruned.
    assert_eq!(got[7], None);
    // With 25 and 0 completed too, the median of 7 is 25: 31 is pruned, 29 too.
    assert_eq!(got[8], Some(1));
    assert_eq!(got[9], Some(1));
    for me in [SelfInHistory::Current, SelfInHistory::Stale] {
        assert_eq!(simulate(&pruner, &q, 5, me), got, "{me:?}");
    }
}

#[test]
fn median_uses_the_trials_best_value_so_far() {
    let pruner = Pruner::new(PrunerKind::Median);
    let history: Vec<Observation> = [1.0, 2.0, 3.0, 4.0, 5.0]
        .iter()
        .map(|&v| obs(TrialState::Complete, vec![(1, v), (2, v)]))
        .collect();
    // Worse than the median (3) at step 2, but its best so far (2) is not.
    assert!(!pruner.should_prune(&[(1, 2.0), (2, 10.0)], &history));
    assert!(pruner.should_prune(&[(1, 4.0), (2, 10.0)], &history));
    // A step no completed trial reached: nothing to compare with.
    assert!(!pruner.should_prune(&[(1, 2.0), (2, 2.0), (3, 99.0)], &history));
    // Warm-up steps are spared.
    assert!(!Pruner::median(5, 1).should_prune(&[(1, 99.0)], &history));
    assert!(Pruner::median(5, 1).should_prune(&[(1, 99.0), (2, 99.0)], &history));
}

#[test]
fn diverged_trials_are_pruned_and_none_never_prunes() {
    for kind in [PrunerKind::Asha, PrunerKind::Median] {
        assert!(Pruner::new(kind).should_prune(&[(1, 0.5), (2, f64::NAN)], &[]));
        assert!(Pruner::new(kind).should_prune(&[(1, f64::INFINITY)], &[]));
        assert!(!Pruner::new(kind).should_prune(&[], &[]));
    }
    let history = vec![obs(TrialState::Complete, vec![(1, 0.0)]); 10];
    assert!(!Pruner::new(PrunerKind::None).should_prune(&[(1, 1e9)], &history));
    assert!(!Pruner::new(PrunerKind::None).should_prune(&[(1, f64::NAN)], &history));
    assert_eq!("asha".parse::<PrunerKind>(), Ok(PrunerKind::Asha));
    assert_eq!("median".parse::<PrunerKind>(), Ok(PrunerKind::Median));
    assert_eq!("none".parse::<PrunerKind>(), Ok(PrunerKind::None));
    assert!("hyperband".parse::<PrunerKind>().is_err());
}
