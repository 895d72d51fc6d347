//! Samplers: the next trial's parameters from the history so far.
//!
//! Everything here is in *loss* orientation: lower values are better (the caller negates a
//! metric it maximises). Two kinds:
//!
//! - **random**: every parameter drawn independently from its distribution.
//! - **tpe**: the Tree-structured Parzen Estimator (Bergstra et al., 2011), one parameter at a
//!   time. The first [`TpeSettings::n_startup`] trials are random. After that the usable
//!   history is ranked best first and split into the `n_good = min(⌈γ·n⌉, 25)` best ("good",
//!   γ = 0.1) and the rest ("bad"). Per parameter, a density `l` is fitted to the good values
//!   and `g` to the bad ones; 24 candidates are drawn from `l` and the one with the largest
//!   `log l(x) − log g(x)` is chosen.
//!
//! **Ranking.** Completed trials with a finite value come first, by value. Pruned trials come
//!   after every completed one (they were stopped for being worse than their peers): those
//!   that got further (a larger last step) first, then by the value at that last step; pruned
//!   trials that reported nothing come last. So pruned trials mostly land among the bad ones
//!   and still teach the sampler where not to look. Failed trials, completed ones without a
//!   finite value, and running ones are ignored. Ties are broken by the parameters' canonical
//!   JSON, so the ranking does not depend on the order of `history` (only the multivariate
//!   estimator's age weights do).
//!
//! **Estimators.** Numeric parameters live on an internal scale: the value itself for
//! `uniform`, its natural log for `loguniform`, and for `int` the integers as reals on
//! `[lo − ½, hi + ½]` (each integer owns a cell of width 1; drawn values are rounded and a
//! value's density is its cell's mass). An estimator is a mixture of Gaussians truncated to
//! the bounds: one per observed value, with bandwidth the larger gap to its neighbours (the
//! bounds count as neighbours), clipped to `[range / min(100, n + 1), range]`, plus a prior
//! component at the middle with the whole range as bandwidth; every component has weight 1.
//! A `choice` parameter gets a categorical distribution: each choice's weight is 1 (the prior)
//! plus the number of observations that picked it.
//!
//! **Multivariate** ([`TpeSettings::multivariate`], the default: on 17 benchmark problems it
//! roughly halved the regret of the independent estimator, see docs/BENCHMARKS.md): instead of
//! one estimator per parameter, each observation becomes one product kernel over all
//! parameters, the prior one more kernel. A numeric parameter's bandwidth in a kernel is the
//! larger gap to its neighbours on the sorted axis (bounds included, the prior's mean not; the
//! lowest and highest points take their inner gap), clipped to `[range / min(100, n + 2),
//! range]`; a choice keeps the observation's own choice plus a pseudo-count of `1/(n + 1)` on
//! every choice, `n` the group's size. Kernels weigh 1 each, except that in a group of more
//! than 25 the older observations (by their order in the history) ramp from `1/n` up to 1, so
//! the bad group follows where the search is now. A candidate draws one kernel, then every
//! parameter from it, so values that worked together are tried together. Only observations
//! holding every parameter take part; if the good or the bad group has none, parameters are
//! sampled one at a time as above. These are the rules of Optuna 5.1's default TPE, read from
//! its source after the first benchmark run (the code is ours).
//!
//! **Randomness.** A SplitMix64 stream per (seed, trial, parameter key): the same inputs give
//! the same parameters (bit for bit where `ln`/`exp`/`cos` round alike, i.e. with the same
//! math library), and, one parameter at a time, adding a parameter to a space does not change
//! how the others are drawn.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::space::{Dist, Params, Space, Value, choice_index};

/// A trial's state, as the sampler and the pruner see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    /// Finished; `value` is its result.
    Complete,
    /// Stopped early by the pruner; `intermediate` holds what it reported.
    Pruned,
    /// Crashed or returned no usable value.
    Failed,
    /// In flight.
    Running,
}

impl TrialState {
    /// The state's name: `complete`, `pruned`, `failed` or `running`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TrialState::Complete => "complete",
            TrialState::Pruned => "pruned",
            TrialState::Failed => "failed",
            TrialState::Running => "running",
        }
    }
}

impl fmt::Display for TrialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TrialState {
    type Err = String;
    fn from_str(s: &str) -> Result<TrialState, String> {
        match s {
            "complete" => Ok(TrialState::Complete),
            "pruned" => Ok(TrialState::Pruned),
            "failed" => Ok(TrialState::Failed),
            "running" => Ok(TrialState::Running),
            other => Err(format!(
                "unknown trial state `{other}` (expected complete, pruned, failed or running)"
            )),
        }
    }
}

/// One trial as the sampler and the pruner see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Its parameters.
    pub params: Params,
    /// Where it stands.
    pub state: TrialState,
    /// Its final loss (lower is better), for a complete trial.
    #[serde(default)]
    pub value: Option<f64>,
    /// (step, loss) reports in the order they were made; steps are 1-based epochs.
    #[serde(default)]
    pub intermediate: Vec<(u32, f64)>,
}

/// Which sampler to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// Independent draws from each distribution.
    Random,
    /// Tree-structured Parzen Estimator.
    Tpe,
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SamplerKind::Random => "random",
            SamplerKind::Tpe => "tpe",
        })
    }
}

impl FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<SamplerKind, String> {
        match s {
            "random" => Ok(SamplerKind::Random),
            "tpe" => Ok(SamplerKind::Tpe),
            other => Err(format!(
                "unknown sampler `{other}` (expected random or tpe)"
            )),
        }
    }
}

/// TPE's settings; [`Default`] gives the documented ones.
#[derive(Debug, Clone, PartialEq)]
pub struct TpeSettings {
    /// Trials drawn at random before TPE starts (also while fewer usable observations exist).
    pub n_startup: u64,
    /// Candidates drawn from the good density per parameter.
    pub n_candidates: usize,
    /// Share of the ranked observations that are "good" (rounded up).
    pub gamma: f64,
    /// Upper bound on the number of good observations.
    pub max_good: usize,
    /// Weight of the prior component (numeric) or pseudo-count per choice (categorical).
    pub prior_weight: f64,
    /// Model the parameters jointly (each observation one product kernel over all of them)
    /// instead of one estimator per parameter.
    pub multivariate: bool,
}

impl Default for TpeSettings {
    fn default() -> TpeSettings {
        TpeSettings {
            n_startup: 10,
            n_candidates: 24,
            gamma: 0.1,
            max_good: 25,
            prior_weight: 1.0,
            multivariate: true,
        }
    }
}

/// Draws parameters for trials; holds no state beyond its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampler {
    kind: SamplerKind,
    seed: u64,
    tpe: TpeSettings,
}

impl Sampler {
    /// A sampler of this kind with default settings.
    pub fn new(kind: SamplerKind, seed: u64) -> Sampler {
        Sampler {
            kind,
            seed,
            tpe: TpeSettings::default(),
        }
    }

    /// The same sampler with other TPE settings.
    pub fn with_tpe_settings(mut self, tpe: TpeSettings) -> Sampler {
        self.tpe = tpe;
        self
    }

    /// Its kind.
    pub fn kind(&self) -> SamplerKind {
        self.kind
    }

    /// Its seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Params for trial number `trial` (0-based) given every observation so far, in the
    /// order the trials were made (the multivariate estimator weighs old ones less; running
    /// trials are ignored). Deterministic in (seed, trial, history).
    pub fn sample(&self, space: &Space, history: &[Observation], trial: u64) -> Params {
        let ranked = match self.kind {
            SamplerKind::Random => Vec::new(),
            SamplerKind::Tpe => rank(history),
        };
        let random = self.kind == SamplerKind::Random
            || trial < self.tpe.n_startup
            || (ranked.len() as u64) < self.tpe.n_startup.max(2);
        let (good, bad) = if random {
            (&[][..], &[][..])
        } else {
            let n = ranked.len();
            let n_good = ((self.tpe.gamma * n as f64).ceil() as usize)
                .min(self.tpe.max_good)
                .clamp(1, n - 1);
            ranked.split_at(n_good)
        };
        if !random
            && self.tpe.multivariate
            && let Some(params) = self.sample_joint(space, history, good, bad, trial)
        {
            return params;
        }
        let mut params = Params::new();
        for p in &space.params {
            let mut rng = Rng::stream(self.seed, trial, &p.key);
            let v = if random {
                sample_random(&p.dist, &mut rng)
            } else {
                self.sample_tpe(&p.key, &p.dist, good, bad, &mut rng)
            };
            params.insert(p.key.clone(), Value(v));
        }
        params
    }

    fn sample_tpe(
        &self,
        key: &str,
        dist: &Dist,
        good: &[&Observation],
        bad: &[&Observation],
        rng: &mut Rng,
    ) -> toml::Value {
        let values = |obs: &[&Observation]| -> Vec<Value> {
            obs.iter()
                .filter_map(|o| o.params.get(key))
                .filter(|v| dist.contains(v))
                .cloned()
                .collect()
        };
        let (good, bad) = (values(good), values(bad));
        let n_cand = self.tpe.n_candidates.max(1);
        let w = self.tpe.prior_weight.max(1e-9);
        match dist {
            Dist::Choice(choices) => {
                let counts = |vals: &[Value]| {
                    let mut c = vec![w; choices.len()];
                    for v in vals {
                        if let Some(i) = choice_index(choices, v) {
                            c[i] += 1.0;
                        }
                    }
                    let total: f64 = c.iter().sum();
                    c.into_iter().map(|x| x / total).collect::<Vec<f64>>()
                };
                let (l, g) = (counts(&good), counts(&bad));
                let mut best: Option<(usize, f64)> = None;
                for _ in 0..n_cand {
                    let i = rng.categorical(&l);
                    let score = l[i].ln() - g[i].ln();
                    if best.is_none_or(|(_, s)| score > s) {
                        best = Some((i, score));
                    }
                }
                choices[best.expect("at least one candidate").0].clone()
            }
            Dist::Int { lo, hi } if lo == hi => toml::Value::Integer(*lo),
            _ => {
                let scale = Scale::of(dist);
                let to_x = |vals: &[Value]| -> Vec<f64> {
                    vals.iter().filter_map(|v| scale.to_internal(v)).collect()
                };
                let l = Parzen::fit(&to_x(&good), scale.a, scale.b, w);
                let g = Parzen::fit(&to_x(&bad), scale.a, scale.b, w);
                let mut best: Option<(f64, f64)> = None;
                for _ in 0..n_cand {
                    let x = scale.snap(l.draw(rng));
                    let score = match scale.cell {
                        Some(h) => l.log_mass(x - h, x + h) - g.log_mass(x - h, x + h),
                        None => l.log_pdf(x) - g.log_pdf(x),
                    };
                    if best.is_none_or(|(_, s)| score > s) {
                        best = Some((x, score));
                    }
                }
                scale.to_value(best.expect("at least one candidate").0)
            }
        }
    }
    /// Multivariate TPE: `None` when the good or bad group has no observation holding every
    /// parameter (the caller then samples each parameter on its own).
    fn sample_joint(
        &self,
        space: &Space,
        history: &[Observation],
        good: &[&Observation],
        bad: &[&Observation],
        trial: u64,
    ) -> Option<Params> {
        // (position in the history, params) of the observations holding every parameter
        let full = |obs: &[&Observation]| -> (Vec<usize>, Vec<Params>) {
            obs.iter()
                .filter(|o| {
                    space
                        .params
                        .iter()
                        .all(|p| o.params.get(&p.key).is_some_and(|v| p.dist.contains(v)))
                })
                .map(|o| {
                    let at = history.iter().position(|h| std::ptr::eq(h, *o));
                    (at.unwrap_or(0), o.params.clone())
                })
                .unzip()
        };
        let ((good_at, good), (bad_at, bad)) = (full(good), full(bad));
        if good.is_empty() || bad.is_empty() {
            return None;
        }
        let w = self.tpe.prior_weight.max(1e-9);
        let l: Vec<Marginal> = space
            .params
            .iter()
            .map(|p| Marginal::fit(&p.dist, &p.key, &good, w))
            .collect();
        let g: Vec<Marginal> = space
            .params
            .iter()
            .map(|p| Marginal::fit(&p.dist, &p.key, &bad, w))
            .collect();
        let (l_w, l_logw) = component_weights(&age_weights(&good_at), w);
        let (_, g_logw) = component_weights(&age_weights(&bad_at), w);
        let log_density = |dims: &[Marginal], logw: &[f64], x: &[f64]| {
            log_sum_exp((0..logw.len()).map(|k| {
                logw[k]
                    + dims
                        .iter()
                        .zip(x)
                        .map(|(d, &xd)| d.log_p(k, xd))
                        .sum::<f64>()
            }))
        };
        let mut pick = Rng::stream(self.seed, trial, "\u{0}component");
        let mut rngs: Vec<Rng> = space
            .params
            .iter()
            .map(|p| Rng::stream(self.seed, trial, &p.key))
            .collect();
        let mut best: Option<(Vec<f64>, f64)> = None;
        for _ in 0..self.tpe.n_candidates.max(1) {
            let k = pick.categorical(&l_w);
            let x: Vec<f64> = l
                .iter()
                .zip(rngs.iter_mut())
                .map(|(d, rng)| d.draw_from(k, rng))
                .collect();
            let score = log_density(&l, &l_logw, &x) - log_density(&g, &g_logw, &x);
            if best.as_ref().is_none_or(|(_, s)| score > *s) {
                best = Some((x, score));
            }
        }
        let (x, _) = best?;
        Some(
            space
                .params
                .iter()
                .zip(&l)
                .zip(x)
                .map(|((p, d), xd)| (p.key.clone(), Value(d.value(xd))))
                .collect(),
        )
    }
}

/// Weights of observations by age, given each one's position in the history: 1 each for up
/// to 25; beyond that the newest 25 weigh 1 and the older ones ramp linearly from `1/n` (the
/// oldest) up to 1, so that a group's estimator follows where the search is now.
fn age_weights(at: &[usize]) -> Vec<f64> {
    let n = at.len();
    let mut w = vec![1.0; n];
    if n > 25 {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| at[i]);
        let old = n - 25;
        let lo = 1.0 / n as f64;
        for (r, &i) in order[..old].iter().enumerate() {
            w[i] = if old == 1 {
                lo
            } else {
                lo + (1.0 - lo) * r as f64 / (old - 1) as f64
            };
        }
    }
    w
}

/// Weights of point components (`point_weights`) and the prior (`prior_weight`), normalised,
/// and their logs.
fn component_weights(point_weights: &[f64], prior_weight: f64) -> (Vec<f64>, Vec<f64>) {
    let total = point_weights.iter().sum::<f64>() + prior_weight;
    let mut w: Vec<f64> = point_weights.iter().map(|x| x / total).collect();
    w.push(prior_weight / total);
    let logw = w.iter().map(|x| x.ln()).collect();
    (w, logw)
}

/// One parameter's share of a multivariate estimator: per component (each observation, then
/// the prior), a distribution over the parameter. Points are on the internal scale; a choice
/// is its index.
enum Marginal<'a> {
    Numeric {
        scale: Scale<'a>,
        parzen: Parzen,
    },
    /// Per component, the probability of each choice: a component keeps its own choice with
    /// probability `1 − β` and otherwise picks uniformly, `β = 1/(n + 1)` for `n`
    /// observations (so kernels narrow as data accumulates, as the numeric ones do); the
    /// prior is uniform.
    Categorical {
        choices: &'a [toml::Value],
        p: Vec<Vec<f64>>,
        log_p: Vec<Vec<f64>>,
    },
}

impl<'a> Marginal<'a> {
    /// Fitted to `obs`, each of which holds a valid value for `key`.
    fn fit(dist: &'a Dist, key: &str, obs: &[Params], prior_weight: f64) -> Marginal<'a> {
        match dist {
            Dist::Choice(choices) => {
                let c = choices.len() as f64;
                let alpha = prior_weight / (obs.len() as f64 + 1.0);
                let mut p: Vec<Vec<f64>> = obs
                    .iter()
                    .map(|o| {
                        let own = choice_index(choices, &o[key]).unwrap_or(0);
                        (0..choices.len())
                            .map(|i| (alpha + if i == own { 1.0 } else { 0.0 }) / (1.0 + c * alpha))
                            .collect()
                    })
                    .collect();
                p.push(vec![1.0 / c; choices.len()]);
                let log_p = p
                    .iter()
                    .map(|row| row.iter().map(|x| x.ln()).collect())
                    .collect();
                Marginal::Categorical { choices, p, log_p }
            }
            _ => {
                let scale = Scale::of(dist);
                let points: Vec<f64> = obs
                    .iter()
                    .map(|o| {
                        scale
                            .to_internal(&o[key])
                            .unwrap_or(0.5 * (scale.a + scale.b))
                    })
                    .collect();
                let parzen = Parzen::fit_joint(&points, scale.a, scale.b, prior_weight);
                Marginal::Numeric { scale, parzen }
            }
        }
    }

    fn draw_from(&self, k: usize, rng: &mut Rng) -> f64 {
        match self {
            Marginal::Numeric { scale, parzen } => scale.snap(parzen.draw_from(k, rng)),
            Marginal::Categorical { p, .. } => rng.categorical(&p[k]) as f64,
        }
    }

    fn log_p(&self, k: usize, x: f64) -> f64 {
        match self {
            Marginal::Numeric { scale, parzen } => match scale.cell {
                Some(h) => parzen.log_mass_of(k, x - h, x + h),
                None => parzen.log_pdf_of(k, x),
            },
            Marginal::Categorical { log_p, .. } => log_p[k][x as usize],
        }
    }

    fn value(&self, x: f64) -> toml::Value {
        match self {
            Marginal::Numeric { scale, .. } => scale.to_value(x),
            Marginal::Categorical { choices, .. } => choices[x as usize].clone(),
        }
    }
}

/// Where an observation ranks: (class, −last step, value, canonical params), smaller first.
type RankKey = (u8, i64, f64, String);

/// The usable history, best first (see the module docs for the order).
fn rank(history: &[Observation]) -> Vec<&Observation> {
    let mut keyed: Vec<(RankKey, &Observation)> = history
        .iter()
        .filter_map(|o| {
            let key = match o.state {
                TrialState::Complete => match o.value {
                    Some(v) if v.is_finite() => (0, 0, v),
                    _ => return None,
                },
                TrialState::Pruned => match o
                    .intermediate
                    .iter()
                    .filter(|(_, v)| v.is_finite())
                    .max_by_key(|(s, _)| *s)
                {
                    Some(&(s, v)) => (1, -i64::from(s), v),
                    None => (2, 0, 0.0),
                },
                TrialState::Failed | TrialState::Running => return None,
            };
            let canon = serde_json::to_string(&o.params).unwrap_or_default();
            Some(((key.0, key.1, key.2, canon), o))
        })
        .collect();
    keyed.sort_by(|(a, _), (b, _)| {
        a.0.cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.total_cmp(&b.2))
            .then_with(|| a.3.cmp(&b.3))
    });
    keyed.into_iter().map(|(_, o)| o).collect()
}

fn sample_random(dist: &Dist, rng: &mut Rng) -> toml::Value {
    match dist {
        Dist::Uniform { lo, hi } => toml::Value::Float((lo + (hi - lo) * rng.unit()).min(*hi)),
        Dist::LogUniform { lo, hi } => {
            let (a, b) = (lo.ln(), hi.ln());
            toml::Value::Float((a + (b - a) * rng.unit()).exp().clamp(*lo, *hi))
        }
        Dist::Int { lo, hi } => {
            let span = (i128::from(*hi) - i128::from(*lo) + 1) as u128;
            let off = if span > u128::from(u64::MAX) {
                u128::from(rng.next_u64())
            } else {
                u128::from(rng.below(span as u64))
            };
            toml::Value::Integer((i128::from(*lo) + off as i128) as i64)
        }
        Dist::Choice(choices) => choices[rng.below(choices.len() as u64) as usize].clone(),
    }
}

/// A numeric distribution's internal scale for TPE.
struct Scale<'a> {
    dist: &'a Dist,
    a: f64,
    b: f64,
    /// Half the width of an integer's cell, for `int`.
    cell: Option<f64>,
}

impl<'a> Scale<'a> {
    fn of(dist: &'a Dist) -> Scale<'a> {
        match dist {
            Dist::Uniform { lo, hi } => Scale {
                dist,
                a: *lo,
                b: *hi,
                cell: None,
            },
            Dist::LogUniform { lo, hi } => Scale {
                dist,
                a: lo.ln(),
                b: hi.ln(),
                cell: None,
            },
            Dist::Int { lo, hi } => Scale {
                dist,
                a: *lo as f64 - 0.5,
                b: *hi as f64 + 0.5,
                cell: Some(0.5),
            },
            Dist::Choice(_) => unreachable!("choices have no numeric scale"),
        }
    }

    fn to_internal(&self, v: &Value) -> Option<f64> {
        match self.dist {
            Dist::Uniform { .. } => v.as_f64(),
            Dist::LogUniform { .. } => v.as_f64().map(f64::ln),
            Dist::Int { .. } => v.as_i64().map(|i| i as f64),
            Dist::Choice(_) => None,
        }
    }

    /// Round a drawn point to a value the distribution can produce (integers for `int`).
    fn snap(&self, x: f64) -> f64 {
        match self.dist {
            Dist::Int { lo, hi } => x.round().clamp(*lo as f64, *hi as f64),
            _ => x.clamp(self.a, self.b),
        }
    }

    fn to_value(&self, x: f64) -> toml::Value {
        match self.dist {
            Dist::Uniform { lo, hi } => toml::Value::Float(x.clamp(*lo, *hi)),
            Dist::LogUniform { lo, hi } => toml::Value::Float(x.exp().clamp(*lo, *hi)),
            Dist::Int { lo, hi } => toml::Value::Integer((x as i64).clamp(*lo, *hi)),
            Dist::Choice(_) => unreachable!("choices have no numeric scale"),
        }
    }
}

/// A mixture of Gaussians truncated to `[a, b]`: one per point, in the points' order, then
/// the prior.
struct Parzen {
    a: f64,
    b: f64,
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    /// Each component's weight (they sum to 1).
    weights: Vec<f64>,
    /// Each component's log weight.
    log_w: Vec<f64>,
    /// Minus the log of each component's mass inside `[a, b]`.
    log_norm: Vec<f64>,
}

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

impl Parzen {
    /// Components at `points` plus the prior; bandwidths as in the module docs.
    fn fit(points: &[f64], a: f64, b: f64, prior_weight: f64) -> Parzen {
        let range = b - a;
        let mid = 0.5 * (a + b);
        let mus: Vec<f64> = points.iter().map(|x| x.clamp(a, b)).collect();
        // Neighbours on the sorted axis, the prior's mean and the bounds included.
        let mut axis = mus.clone();
        axis.push(mid);
        axis.sort_by(f64::total_cmp);
        let min_sigma = range / (100.0f64).min(points.len() as f64 + 1.0);
        let mut sigmas = Vec::with_capacity(mus.len() + 1);
        for &m in &mus {
            let i = axis.partition_point(|&y| y < m);
            // `axis[i] == m`; its left neighbour is before it, the right one after any
            // duplicates of `m` (a duplicate is a gap of 0 and would only shrink the width).
            let left = if i == 0 { a } else { axis[i - 1] };
            let j = axis.partition_point(|&y| y <= m);
            let right = if j >= axis.len() { b } else { axis[j] };
            let s = (m - left).max(right - m);
            sigmas.push(s.clamp(min_sigma, range));
        }
        Parzen::with_sigmas(mus, sigmas, a, b, prior_weight)
    }

    /// One parameter's components in a multivariate estimator: each point's bandwidth is the
    /// larger gap to its neighbours on the sorted axis, the bounds included, except that the
    /// lowest and highest points (given at least two) take their inner gap, so a point near a
    /// bound is not made wide by the empty stretch beyond it; clipped to
    /// `[range / min(100, n + 2), range]`. The prior's mean is not a neighbour here.
    fn fit_joint(points: &[f64], a: f64, b: f64, prior_weight: f64) -> Parzen {
        let range = b - a;
        let mus: Vec<f64> = points.iter().map(|x| x.clamp(a, b)).collect();
        let mut order: Vec<usize> = (0..mus.len()).collect();
        order.sort_by(|&i, &j| mus[i].total_cmp(&mus[j]));
        let mut axis = Vec::with_capacity(mus.len() + 2);
        axis.push(a);
        axis.extend(order.iter().map(|&i| mus[i]));
        axis.push(b);
        let n = mus.len();
        let min_sigma = range / (100.0f64).min(n as f64 + 2.0);
        let mut sigmas = vec![0.0; n];
        for (r, &i) in order.iter().enumerate() {
            let (left, x, right) = (axis[r], axis[r + 1], axis[r + 2]);
            let s = if n >= 2 && r == 0 {
                right - x
            } else if n >= 2 && r == n - 1 {
                x - left
            } else {
                (x - left).max(right - x)
            };
            sigmas[i] = s.clamp(min_sigma, range);
        }
        Parzen::with_sigmas(mus, sigmas, a, b, prior_weight)
    }

    /// The mixture of components at `mus` with bandwidths `sigmas`, weight 1 each, plus the
    /// prior (the middle, the whole range as bandwidth, weight `prior_weight`).
    fn with_sigmas(
        mut mus: Vec<f64>,
        mut sigmas: Vec<f64>,
        a: f64,
        b: f64,
        prior_weight: f64,
    ) -> Parzen {
        let prior_weight = prior_weight.max(1e-9);
        let n = mus.len();
        mus.push(0.5 * (a + b));
        sigmas.push(b - a);
        let total = n as f64 + prior_weight;
        let mut weights = vec![1.0 / total; n];
        weights.push(prior_weight / total);
        let log_w = weights.iter().map(|w| w.ln()).collect();
        let log_norm = mus
            .iter()
            .zip(&sigmas)
            .map(|(&m, &s)| -log_ndtr_diff((a - m) / s, (b - m) / s))
            .collect();
        Parzen {
            a,
            b,
            mus,
            sigmas,
            weights,
            log_w,
            log_norm,
        }
    }

    /// A point drawn from the mixture.
    fn draw(&self, rng: &mut Rng) -> f64 {
        let k = rng.categorical(&self.weights);
        self.draw_from(k, rng)
    }

    /// A point drawn from component `k`.
    fn draw_from(&self, k: usize, rng: &mut Rng) -> f64 {
        let (m, s) = (self.mus[k], self.sigmas[k]);
        // Rejection: a component's mean lies inside [a, b] and its width is at most b − a, so
        // at least a third of its mass is inside and this rarely takes more than a few draws.
        for _ in 0..128 {
            let x = m + s * rng.normal();
            if self.a <= x && x <= self.b {
                return x;
            }
        }
        m
    }

    /// Component `k`'s log density at `x`.
    fn log_pdf_of(&self, k: usize, x: f64) -> f64 {
        let (m, s) = (self.mus[k], self.sigmas[k]);
        let z = (x - m) / s;
        self.log_norm[k] - 0.5 * z * z - s.ln() - LN_SQRT_2PI
    }

    /// The log of component `k`'s mass on `[x0, x1]`.
    fn log_mass_of(&self, k: usize, x0: f64, x1: f64) -> f64 {
        let (m, s) = (self.mus[k], self.sigmas[k]);
        self.log_norm[k] + log_ndtr_diff((x0 - m) / s, (x1 - m) / s)
    }

    fn log_pdf(&self, x: f64) -> f64 {
        log_sum_exp((0..self.mus.len()).map(|k| self.log_w[k] + self.log_pdf_of(k, x)))
    }

    /// The log of the mixture's mass on `[x0, x1]`.
    fn log_mass(&self, x0: f64, x1: f64) -> f64 {
        log_sum_exp((0..self.mus.len()).map(|k| self.log_w[k] + self.log_mass_of(k, x0, x1)))
    }
}

fn log_sum_exp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + xs.map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// `ln(Φ(z1) − Φ(z0))` for `z0 <= z1`, accurate far into either tail.
fn log_ndtr_diff(z0: f64, z1: f64) -> f64 {
    if z0 >= z1 {
        return f64::NEG_INFINITY;
    }
    if z0 >= 0.0 {
        // Both in the upper tail: Q(z0) − Q(z1) with Q(z) = 1 − Φ(z).
        let (q0, q1) = (log_upper(z0), log_upper(z1));
        q0 + ln_1m_exp(q1 - q0)
    } else if z1 <= 0.0 {
        let (q0, q1) = (log_upper(-z1), log_upper(-z0));
        q0 + ln_1m_exp(q1 - q0)
    } else {
        (-(log_upper(-z0).exp() + log_upper(z1).exp())).ln_1p()
    }
}

/// `ln Q(z)`, the log of the standard normal's upper tail.
fn log_upper(z: f64) -> f64 {
    log_erfc(z / std::f64::consts::SQRT_2) - std::f64::consts::LN_2
}

/// `ln(1 − eˣ)` for `x <= 0`.
fn ln_1m_exp(x: f64) -> f64 {
    if x > -std::f64::consts::LN_2 {
        (-x.exp_m1()).ln()
    } else {
        (-x.exp()).ln_1p()
    }
}

/// `ln erfc(x)`: a positive series for small |x|, a continued fraction in the tail.
fn log_erfc(x: f64) -> f64 {
    if x < 0.0 {
        // erfc(x) = 2 − erfc(−x), and erfc(−x) < 1 here.
        let r = if -x < 3.0 {
            erfc_small(-x)
        } else {
            log_tail_erfc(-x).exp()
        };
        (2.0 - r).ln()
    } else if x < 3.0 {
        erfc_small(x).ln()
    } else {
        log_tail_erfc(x)
    }
}

/// `erfc(x)` for `0 <= x <= 3` as `1 − erf(x)`, erf by its all-positive series
/// `erf(x) = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1))`.
fn erfc_small(x: f64) -> f64 {
    let two_x2 = 2.0 * x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    while term > 1e-17 * sum {
        n += 1.0;
        term *= two_x2 / (2.0 * n + 1.0);
        sum += term;
    }
    1.0 - std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp() * sum
}

/// `ln erfc(x)` for `x >= 3` from the continued fraction
/// `erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))`.
fn log_tail_erfc(x: f64) -> f64 {
    const LN_SQRT_PI: f64 = 0.572_364_942_924_700_1;
    let mut t = x;
    for n in (1..=80).rev() {
        t = x + (f64::from(n) * 0.5) / t;
    }
    -x * x - LN_SQRT_PI - t.ln()
}

/// SplitMix64: small, fast, and the same integer stream on every platform.
pub(crate) struct Rng(u64);

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// The stream for one parameter of one trial.
    fn stream(seed: u64, trial: u64, key: &str) -> Rng {
        // FNV-1a of the key: stable across platforms and Rust versions.
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
        Rng(mix(mix(mix(seed) ^ trial) ^ h))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform on `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform on `0..n` (`n > 0`), without modulo bias.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Standard normal (Box–Muller, one of the pair).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// An index drawn with probability proportional to `weights` (non-negative, not all 0).
    fn categorical(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut u = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if u < *w {
                return i;
            }
            u -= w;
        }
        weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        // Reference values of erfc (C's libm erfc, to its last digit).
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (2.0, 0.004_677_734_981_047_266),
            (2.9, 4.109_787_809_945_886e-5),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_035e-12),
            (10.0, 2.088_487_583_762_545e-45),
            (-1.0, 1.842_700_792_949_715),
        ] {
            let got = log_erfc(x).exp();
            assert!(
                // 1 − erf(x) loses a few digits as x nears 3.
                ((got - want) / want).abs() < 1e-10,
                "erfc({x}) = {got}, want {want}"
            );
        }
        // Far tail: erfc(30) ≈ 2.5646e-393 underflows as a number but not as a log.
        assert!((log_erfc(30.0) - (-900.0 - 0.572_364_942_924_700_1 - 30.0f64.ln())).abs() < 1e-3);
    }

    #[test]
    fn normal_interval_masses() {
        // Φ(1) − Φ(−1) = 0.682689492137086.
        assert!((log_ndtr_diff(-1.0, 1.0).exp() - 0.682_689_492_137_086).abs() < 1e-12);
        // Q(1) − Q(2) = 0.158655253931457 − 0.022750131948179 = 0.135905121983278.
        assert!((log_ndtr_diff(1.0, 2.0).exp() - 0.135_905_121_983_278).abs() < 1e-12);
        assert!((log_ndtr_diff(-2.0, -1.0).exp() - 0.135_905_121_983_278).abs() < 1e-12);
        // Deep tails stay finite and ordered.
        let far = log_ndtr_diff(40.0, 41.0);
        assert!(far.is_finite() && far < -700.0);
    }

    #[test]
    fn parzen_density_integrates_to_one() {
        let p = Parzen::fit(&[0.1, 0.15, 0.7], 0.0, 1.0, 1.0);
        let n = 20_000;
        let h = 1.0 / n as f64;
        let integral: f64 = (0..n)
            .map(|i| p.log_pdf((i as f64 + 0.5) * h).exp() * h)
            .sum();
        assert!((integral - 1.0).abs() < 1e-4, "{integral}");
        assert!((p.log_mass(0.0, 1.0)).abs() < 1e-9);
        // Cells of width 1 over an int range sum to 1 too.
        let q = Parzen::fit(&[2.0, 3.0], 0.5, 5.5, 1.0);
        let total: f64 = (1..=5)
            .map(|v| q.log_mass(v as f64 - 0.5, v as f64 + 0.5).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn draws_follow_the_mixture() {
        let p = Parzen::fit(&[0.2], 0.0, 1.0, 1.0);
        let mut rng = Rng(7);
        let n = 20_000;
        let inside = (0..n)
            .map(|_| p.draw(&mut rng))
            .filter(|x| (0.1..0.3).contains(x))
            .count() as f64
            / n as f64;
        let want = p.log_mass(0.1, 0.3).exp();
        assert!((inside - want).abs() < 0.015, "{inside} vs {want}");
    }

    #[test]
    fn unit_and_below_stay_in_range() {
        let mut rng = Rng(1);
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(rng.below(7) < 7);
        }
    }
}
