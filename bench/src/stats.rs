//! Latency samples and their summaries.

use serde::Serialize;

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

/// The `p` quantile (0..=1) of sorted samples (nearest rank).
pub fn quantile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Percentiles {
    /// From latencies in microseconds, sorted ascending.
    pub fn of_sorted_us(sorted: &[u32]) -> Self {
        let ms = |us: u32| f64::from(us) / 1000.0;
        Self {
            p50: ms(quantile(sorted, 0.50)),
            p90: ms(quantile(sorted, 0.90)),
            p99: ms(quantile(sorted, 0.99)),
            p999: ms(quantile(sorted, 0.999)),
            max: ms(sorted.last().copied().unwrap_or(0)),
        }
    }
}

/// Points of a latency CDF for plotting: (latency ms, fraction at or below), at most `points`
/// of them, spaced evenly in rank.
pub fn cdf_points(sorted_us: &[u32], points: usize) -> Vec<(f64, f64)> {
    if sorted_us.is_empty() || points < 2 {
        return Vec::new();
    }
    let n = sorted_us.len();
    (0..points)
        .map(|i| {
            let rank = ((i as f64 / (points - 1) as f64) * (n - 1) as f64).round() as usize;
            (
                f64::from(sorted_us[rank]) / 1000.0,
                (rank + 1) as f64 / n as f64,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 500);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.999), 999);
        assert_eq!(quantile(&v, 1.0), 1000);
        assert_eq!(quantile(&[7], 0.5), 7);
        assert_eq!(quantile(&[], 0.5), 0);
        let p = Percentiles::of_sorted_us(&v);
        assert!((p.p50 - 0.5).abs() < 1e-9 && (p.max - 1.0).abs() < 1e-9);
    }

    #[test]
    fn cdf_ends_at_one() {
        let v: Vec<u32> = (1..=10).map(|x| x * 1000).collect();
        let c = cdf_points(&v, 5);
        assert_eq!(c.len(), 5);
        assert_eq!(c[0], (1.0, 0.1));
        assert_eq!(c[4], (10.0, 1.0));
    }
}
