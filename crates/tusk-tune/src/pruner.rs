//! Pruners: whether a running trial should stop early, from its intermediate losses (lower is
//! better) and every other trial's.
//!
//! - **none**: never.
//! - **asha** (asynchronous successive halving, Li et al. 2018, without a pause/resume
//!   mechanism): rungs at steps `r·ηᵏ` (`r` = 1, `η` = 3: 1, 3, 9, 27, …). When a trial's
//!   newest report is its first at or past a rung, its value there is compared with every
//!   other trial's value at that rung (a trial's value at a rung is its first report at or
//!   past it, so evaluating every other epoch still meets the rungs). Of the `n` trials with a
//!   value there (this one included), the best `max(1, ⌊n/η⌋)` go on; the rest are pruned.
//!   Ties go on. Trials of every state count: a pruned or failed trial's report at a rung is
//!   as much a measurement as a running one's.
//! - **median**: once at least 5 trials have completed, a trial is pruned at a step when its
//!   best value so far is worse than the median of the completed trials' values at that
//!   same step (no warm-up: every step counts; steps no completed trial reported are skipped).
//!
//! Either pruner stops a trial whose newest value is not a number (NaN or infinite: diverged).
//!
//! `history` may or may not hold the trial being judged. If it does, it is a running
//! observation whose intermediate values are the trial's own (`mine`), or all of them but the
//! newest (recorded before this report); the first such one is left out of the comparison.

use std::fmt;
use std::str::FromStr;

use crate::sampler::{Observation, TrialState};

/// Which pruner to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrunerKind {
    /// Never prune.
    None,
    /// Asynchronous successive halving.
    Asha,
    /// Median stopping rule.
    Median,
}

impl fmt::Display for PrunerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrunerKind::None => "none",
            PrunerKind::Asha => "asha",
            PrunerKind::Median => "median",
        })
    }
}

impl FromStr for PrunerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<PrunerKind, String> {
        match s {
            "none" => Ok(PrunerKind::None),
            "asha" => Ok(PrunerKind::Asha),
            "median" => Ok(PrunerKind::Median),
            other => Err(format!(
                "unknown pruner `{other}` (expected none, asha or median)"
            )),
        }
    }
}

/// Decides whether running trials stop early; holds only its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Pruner {
    kind: PrunerKind,
    /// ASHA's first rung (steps).
    min_resource: u32,
    /// ASHA's η: rungs grow and survivors shrink by this factor.
    reduction_factor: u32,
    /// Median: completed trials needed before anything is pruned.
    n_startup: usize,
    /// Median: steps up to this one are never pruned.
    n_warmup_steps: u32,
}

impl Pruner {
    /// A pruner of this kind with the documented settings.
    pub fn new(kind: PrunerKind) -> Pruner {
        Pruner {
            kind,
            min_resource: 1,
            reduction_factor: 3,
            n_startup: 5,
            n_warmup_steps: 0,
        }
    }

    /// ASHA with its first rung at `min_resource` steps and reduction factor `eta` (≥ 2).
    pub fn asha(min_resource: u32, eta: u32) -> Pruner {
        Pruner {
            min_resource: min_resource.max(1),
            reduction_factor: eta.max(2),
            ..Pruner::new(PrunerKind::Asha)
        }
    }

    /// The median rule after `n_startup` completed trials, never at steps `<= n_warmup_steps`.
    pub fn median(n_startup: usize, n_warmup_steps: u32) -> Pruner {
        Pruner {
            n_startup,
            n_warmup_steps,
            ..Pruner::new(PrunerKind::Median)
        }
    }

    /// Its kind.
    pub fn kind(&self) -> PrunerKind {
        self.kind
    }

    /// The ASHA rung steps up to `max_step`: `r, rη, rη², …`.
    pub fn rungs(&self, max_step: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut r = u64::from(self.min_resource);
        while r <= u64::from(max_step) {
            out.push(r as u32);
            r *= u64::from(self.reduction_factor);
        }
        out
    }

    /// Whether the trial whose intermediate values are `mine` (step, loss; its newest last)
    /// should stop now, given all trials' observations (including itself or not).
    pub fn should_prune(&self, mine: &[(u32, f64)], history: &[Observation]) -> bool {
        if self.kind == PrunerKind::None {
            return false;
        }
        let Some(&(step, value)) = mine.last() else {
            return false;
        };
        if !value.is_finite() {
            return true;
        }
        let others = without_self(mine, history);
        match self.kind {
            PrunerKind::None => false,
            PrunerKind::Asha => self.asha_prunes(mine, step, value, &others),
            PrunerKind::Median => self.median_prunes(mine, step, &others),
        }
    }

    fn asha_prunes(
        &self,
        mine: &[(u32, f64)],
        step: u32,
        value: f64,
        others: &[&Observation],
    ) -> bool {
        // The newest report is the first at or past every rung above the previous report.
        let previous = mine[..mine.len() - 1]
            .iter()
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(0);
        let eta = self.reduction_factor as usize;
        self.rungs(step)
            .into_iter()
            .filter(|&r| r > previous)
            .any(|rung| {
                let theirs: Vec<f64> = others
                    .iter()
                    .filter_map(|o| value_at_rung(&o.intermediate, rung))
                    .collect();
                let keep = ((theirs.len() + 1) / eta).max(1);
                let better = theirs.iter().filter(|&&v| v < value).count();
                better >= keep
            })
    }

    fn median_prunes(&self, mine: &[(u32, f64)], step: u32, others: &[&Observation]) -> bool {
        if step <= self.n_warmup_steps {
            return false;
        }
        let completed: Vec<&&Observation> = others
            .iter()
            .filter(|o| o.state == TrialState::Complete)
            .collect();
        if completed.len() < self.n_startup {
            return false;
        }
        let mut at_step: Vec<f64> = completed
            .iter()
            .filter_map(|o| {
                o.intermediate
                    .iter()
                    .find(|(s, _)| *s == step)
                    .map(|(_, v)| if v.is_nan() { f64::INFINITY } else { *v })
            })
            .collect();
        if at_step.is_empty() {
            return false;
        }
        at_step.sort_by(f64::total_cmp);
        let n = at_step.len();
        let median = if n % 2 == 1 {
            at_step[n / 2]
        } else {
            0.5 * (at_step[n / 2 - 1] + at_step[n / 2])
        };
        let best = mine
            .iter()
            .map(|(_, v)| *v)
            .filter(|v| !v.is_nan())
            .fold(f64::INFINITY, f64::min);
        best > median
    }
}

/// A trial's value at a rung: its report at the smallest step at or past it (NaN as +∞).
fn value_at_rung(intermediate: &[(u32, f64)], rung: u32) -> Option<f64> {
    intermediate
        .iter()
        .filter(|(s, _)| *s >= rung)
        .min_by_key(|(s, _)| *s)
        .map(|(_, v)| if v.is_nan() { f64::INFINITY } else { *v })
}

/// `history` without the judged trial's own running observation, if it is there.
fn without_self<'a>(mine: &[(u32, f64)], history: &'a [Observation]) -> Vec<&'a Observation> {
    let same = |a: &[(u32, f64)], b: &[(u32, f64)]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    };
    let is_self = |o: &Observation| {
        o.state == TrialState::Running
            && (same(&o.intermediate, mine) || same(&o.intermediate, &mine[..mine.len() - 1]))
    };
    let skip = history
        .iter()
        .position(|o| is_self(o) && same(&o.intermediate, mine))
        .or_else(|| history.iter().position(is_self));
    history
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(_, o)| o)
        .collect()
}
