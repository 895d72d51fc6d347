//! Ranking and classification metrics for implicit-feedback recommenders.
//!
//! Leave-one-out evaluation (`hit_rate_at_k`, `ndcg_at_k`) scores each user's held-out
//! positive together with sampled negatives; the positive is **index 0** of each group. Ties
//! count against the positive (a negative scoring exactly as high ranks above it), the
//! pessimistic convention, so constant scores get no credit.

/// Why a metric cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// Scores and labels differ in length.
    #[error("{scores} scores but {labels} labels")]
    LengthMismatch {
        /// Number of scores.
        scores: usize,
        /// Number of labels.
        labels: usize,
    },
    /// AUC needs both classes.
    #[error("AUC needs at least one positive and one negative label")]
    OneClass,
    /// A label other than 0 or 1.
    #[error("label {0} at index {1} is not 0 or 1")]
    BadLabel(f32, usize),
    /// A score that is NaN.
    #[error("score at index {0} is NaN")]
    NanScore(usize),
}

fn check(scores: &[f32], labels: &[f32]) -> Result<(), MetricError> {
    if scores.len() != labels.len() {
        return Err(MetricError::LengthMismatch {
            scores: scores.len(),
            labels: labels.len(),
        });
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(MetricError::NanScore(i));
    }
    if let Some((i, l)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| **l != 0.0 && **l != 1.0)
    {
        return Err(MetricError::BadLabel(*l, i));
    }
    Ok(())
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, ties counting one half (Mann–Whitney U). O(n log n).
pub fn auc(scores: &[f32], labels: &[f32]) -> Result<f64, MetricError> {
    check(scores, labels)?;
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut pos) = (0.0f64, 0u64);
    let mut i = 0;
    while i < idx.len() {
        // a run of tied scores shares the average rank
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] == 1.0 {
                rank_sum += avg_rank;
                pos += 1;
            }
        }
        i = j + 1;
    }
    let neg = scores.len() as u64 - pos;
    if pos == 0 || neg == 0 {
        return Err(MetricError::OneClass);
    }
    let u = rank_sum - (pos * (pos + 1)) as f64 / 2.0;
    Ok(u / (pos as f64 * neg as f64))
}

/// Mean binary cross-entropy of probabilities `p` against `labels`, with `p` clamped to
/// [1e-7, 1 − 1e-7] so a confident mistake costs a large but finite amount.
pub fn logloss(p: &[f32], labels: &[f32]) -> Result<f64, MetricError> {
    check(p, labels)?;
    if p.is_empty() {
        return Ok(0.0);
    }
    let sum: f64 = p
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = (p as f64).clamp(1e-7, 1.0 - 1e-7);
            -(y as f64 * p.ln() + (1.0 - y as f64) * (1.0 - p).ln())
        })
        .sum();
    Ok(sum / p.len() as f64)
}

/// 0-based rank of the positive (index 0) in its group: how many negatives score at least
/// as high (ties count against the positive).
pub fn rank_of_positive(group: &[f32]) -> usize {
    let pos = group[0];
    group[1..]
        .iter()
        .filter(|&&s| s >= pos || s.is_nan())
        .count()
}

/// HR@K: the share of groups whose positive ranks in the top `k`.
pub fn hit_rate_at_k(groups: &[&[f32]], k: usize) -> f64 {
    if groups.is_empty() {
        return 0.0;
    }
    let hits = groups
        .iter()
        .filter(|g| !g.is_empty() && rank_of_positive(g) < k)
        .count();
    hits as f64 / groups.len() as f64
}

/// NDCG@K with one relevant item per group: 1 / log2(rank + 2) when the positive ranks in
/// the top `k`, else 0; averaged over groups.
pub fn ndcg_at_k(groups: &[&[f32]], k: usize) -> f64 {
    if groups.is_empty() {
        return 0.0;
    }
    let total: f64 = groups
        .iter()
        .filter(|g| !g.is_empty())
        .map(|g| {
            let r = rank_of_positive(g);
            if r < k {
                1.0 / ((r + 2) as f64).log2()
            } else {
                0.0
            }
        })
        .sum();
    total / groups.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_hand() {
        // positives 0.8, 0.4; negatives 0.6, 0.2: pairs (0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2) → 3/4
        assert_eq!(
            auc(&[0.8, 0.6, 0.4, 0.2], &[1.0, 0.0, 1.0, 0.0]).unwrap(),
            0.75
        );
        // a tie between a positive and a negative counts one half: (1 + 0.5) / 2
        assert_eq!(auc(&[0.5, 0.5, 0.1], &[1.0, 0.0, 0.0]).unwrap(), 0.75);
        // all scores equal → 0.5
        assert_eq!(auc(&[0.3; 4], &[1.0, 0.0, 1.0, 0.0]).unwrap(), 0.5);
        assert_eq!(auc(&[0.1, 0.9], &[1.0, 0.0]).unwrap(), 0.0);
        assert_eq!(auc(&[0.1, 0.9], &[1.0, 1.0]), Err(MetricError::OneClass));
        assert_eq!(auc(&[0.1], &[2.0]), Err(MetricError::BadLabel(2.0, 0)));
        assert!(matches!(
            auc(&[0.1, 0.2], &[1.0]),
            Err(MetricError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn logloss_by_hand() {
        let l = logloss(&[0.8, 0.3], &[1.0, 0.0]).unwrap();
        let want = -(0.8f64.ln() + 0.7f64.ln()) / 2.0;
        assert!((l - want).abs() < 1e-6, "{l} vs {want}");
        // a confident mistake is large but finite
        let l = logloss(&[0.0], &[1.0]).unwrap();
        assert!((l - 16.118).abs() < 1e-2, "{l}");
    }

    #[test]
    fn ranking_metrics_by_hand() {
        let g1 = [0.9, 0.1, 0.2, 0.3]; // positive first: rank 0
        let g2 = [0.5, 0.6, 0.7, 0.1]; // two negatives above: rank 2
        let g3 = [0.4, 0.4, 0.1, 0.0]; // a tie counts against the positive: rank 1
        let groups: Vec<&[f32]> = vec![&g1, &g2, &g3];
        assert_eq!(rank_of_positive(&g3), 1);
        assert_eq!(hit_rate_at_k(&groups, 1), 1.0 / 3.0);
        assert_eq!(hit_rate_at_k(&groups, 2), 2.0 / 3.0);
        assert_eq!(hit_rate_at_k(&groups, 3), 1.0);
        // NDCG@3 = (1/log2(2) + 1/log2(4) + 1/log2(3)) / 3
        let want = (1.0 + 0.5 + 1.0 / 3f64.log2()) / 3.0;
        assert!((ndcg_at_k(&groups, 3) - want).abs() < 1e-12);
        // NDCG@2 drops the rank-2 group
        let want = (1.0 + 1.0 / 3f64.log2()) / 3.0;
        assert!((ndcg_at_k(&groups, 2) - want).abs() < 1e-12);
        // constant scores earn nothing
        let flat = [0.5f32; 101];
        assert_eq!(hit_rate_at_k(&[&flat[..]], 10), 0.0);
    }
}
