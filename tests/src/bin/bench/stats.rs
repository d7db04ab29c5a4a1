//! Small statistics over samples: medians, percentiles, Jain's fairness index.

use std::time::Duration;

/// The median of `xs` (the mean of the middle two for an even count); 0 if empty.
pub fn median(xs: &[f64]) -> f64 {
    percentile(xs, 50.0)
}

/// The `p`-th percentile of `xs` by linear interpolation between closest ranks; 0 if empty.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut sorted: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if sorted.is_empty() {
        return 0.0;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let (a, b) = (sorted[lo], sorted[hi.min(sorted.len() - 1)]);
    a + (b - a) * (rank - lo as f64)
}

/// Jain's fairness index `(Σx)² / (n·Σx²)`: 1 when all are equal, `1/n` when one
/// takes everything.
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if xs.is_empty() || squares == 0.0 {
        return 0.0;
    }
    sum * sum / (xs.len() as f64 * squares)
}

/// `bytes` over `elapsed` in MiB/s.
pub fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9)
}

/// Milliseconds, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The machine's CPU counters from `/proc/stat`, to tell how many core-seconds
/// a stretch of work took across every process (ours and the harness's).
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    busy: u64,
    total: u64,
    at: std::time::Instant,
}

impl CpuMark {
    pub fn now() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let (busy, total) = parse_cpu_line(stat.lines().next().unwrap_or_default())
            .ok_or_else(|| anyhow::anyhow!("no aggregate cpu line in /proc/stat"))?;
        Ok(Self { busy, total, at: std::time::Instant::now() })
    }

    /// Core-seconds every CPU spent busy since `self`: the busy share of the
    /// ticks, times the cores, times the wall time.
    pub fn core_seconds_since(&self, cores: usize) -> anyhow::Result<f64> {
        let now = Self::now()?;
        let ticks = now.total.saturating_sub(self.total).max(1);
        let busy = now.busy.saturating_sub(self.busy) as f64 / ticks as f64;
        Ok(busy * cores as f64 * now.at.duration_since(self.at).as_secs_f64())
    }
}

/// `(busy, total)` ticks of a `/proc/stat` `cpu` line: idle, iowait and
/// steal (the hypervisor's) are not busy; guest time is already inside user.
fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if !fields.next()?.starts_with("cpu") {
        return None;
    }
    let ticks: Vec<u64> = fields.take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)? + ticks.get(7)?;
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 100.0), 5.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn cpu_line() {
        let line = "cpu  100 5 50 800 20 3 2 10 0 0";
        assert_eq!(parse_cpu_line(line), Some((160, 990)));
        assert_eq!(parse_cpu_line("intr 1 2 3"), None);
        assert_eq!(parse_cpu_line("cpu 1 2"), None);
    }

    #[test]
    fn jain_index() {
        assert!((jain(&[1.0; 10]) - 1.0).abs() < 1e-12);
        assert!((jain(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
    }
}
