//! What each client thread records, and the merged numbers the report prints.

use std::time::{Duration, Instant};

/// One client thread's measurements. Only what happens inside the window `[from, until)` counts:
/// a request completed there (whenever it started) and an error that happened there.
#[derive(Debug)]
pub struct Recorder {
    from: Instant,
    until: Instant,
    /// Latency of every counted request, in microseconds.
    latencies: Vec<u32>,
    errors: u64,
    connect_errors: u64,
    first_error: Option<String>,
}

impl Recorder {
    /// Starts the clock now: `warmup`, then a window of `duration`.
    pub fn start(warmup: Duration, duration: Duration, expected_requests: usize) -> Recorder {
        let from = Instant::now() + warmup;
        Recorder {
            from,
            until: from + duration,
            // Reserved up front so that the vector rarely grows (and copies) mid-run.
            latencies: Vec::with_capacity(expected_requests),
            errors: 0,
            connect_errors: 0,
            first_error: None,
        }
    }

    /// When the run ends.
    pub fn until(&self) -> Instant {
        self.until
    }

    pub fn finished(&self, now: Instant) -> bool {
        now >= self.until
    }

    fn in_window(&self, now: Instant) -> bool {
        now >= self.from && now < self.until
    }

    /// A request that started at `started` completed at `now`. True when it was counted.
    #[inline]
    pub fn complete(&mut self, started: Instant, now: Instant) -> bool {
        if !self.in_window(now) {
            return false;
        }
        let micros = now.saturating_duration_since(started).as_micros();
        self.latencies
            .push(u32::try_from(micros).unwrap_or(u32::MAX));
        true
    }

    /// A failure at `now`: `connecting` when the connection was never established.
    pub fn error(&mut self, now: Instant, connecting: bool, what: &dyn std::fmt::Display) {
        if !self.in_window(now) {
            return;
        }
        self.errors += 1;
        if connecting {
            self.connect_errors += 1;
        }
        if self.first_error.is_none() {
            self.first_error = Some(what.to_string());
        }
    }

    /// The thread's results; `unserved` is how many of its connections or clients completed no
    /// request in the window.
    pub fn finish(self, unserved: u64) -> Tally {
        Tally {
            latencies: self.latencies,
            errors: self.errors,
            connect_errors: self.connect_errors,
            unserved,
            first_error: self.first_error,
        }
    }
}

/// A thread's results, or several threads' merged.
#[derive(Debug, Default)]
pub struct Tally {
    pub latencies: Vec<u32>,
    pub errors: u64,
    pub connect_errors: u64,
    pub unserved: u64,
    pub first_error: Option<String>,
}

impl Tally {
    pub fn merge(tallies: Vec<Tally>) -> Tally {
        let total = tallies.iter().map(|t| t.latencies.len()).sum();
        let mut merged = Tally {
            latencies: Vec::with_capacity(total),
            ..Tally::default()
        };
        for t in tallies {
            merged.latencies.extend_from_slice(&t.latencies);
            merged.errors += t.errors;
            merged.connect_errors += t.connect_errors;
            merged.unserved += t.unserved;
            merged.first_error = merged.first_error.or(t.first_error);
        }
        merged
    }

    /// Sorts the latencies and summarizes them.
    pub fn summary(mut self, duration: Duration) -> Summary {
        self.latencies.sort_unstable();
        let requests = self.latencies.len() as u64;
        Summary {
            requests,
            rps: requests as f64 / duration.as_secs_f64(),
            p50_us: percentile(&self.latencies, 50.0),
            p99_us: percentile(&self.latencies, 99.0),
            max_us: self.latencies.last().copied().unwrap_or(0),
            errors: self.errors,
            connect_errors: self.connect_errors,
            unserved: self.unserved,
            first_error: self.first_error,
            client_cpu_s: 0.0,
        }
    }
}

/// The numbers of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub rps: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
    pub errors: u64,
    pub connect_errors: u64,
    pub unserved: u64,
    pub first_error: Option<String>,
    /// CPU time (user and system, all threads) the generator itself used during the window.
    pub client_cpu_s: f64,
}

/// The nearest-rank percentile `p` (0 < p <= 100) of sorted samples: the smallest sample with at
/// least p% of the samples at or below it. 0 when there are no samples.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let hundred: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50.0), 50);
        assert_eq!(percentile(&hundred, 99.0), 99);
        assert_eq!(percentile(&hundred, 100.0), 100);
        assert_eq!(percentile(&hundred, 0.1), 1);
        let thousand: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&thousand, 99.0), 990);
        // Few samples: p99 is the largest, p50 the lower middle.
        assert_eq!(percentile(&[5, 7], 50.0), 5);
        assert_eq!(percentile(&[5, 7], 99.0), 7);
        assert_eq!(percentile(&[42], 50.0), 42);
        assert_eq!(percentile(&[], 99.0), 0);
    }

    #[test]
    fn only_the_window_counts() {
        let mut rec = Recorder::start(Duration::from_millis(30), Duration::from_secs(60), 4);
        let t0 = Instant::now();
        assert!(!rec.complete(t0, t0), "still warming up");
        rec.error(t0, true, &"refused");
        std::thread::sleep(Duration::from_millis(40));
        let now = Instant::now();
        assert!(rec.complete(now - Duration::from_micros(250), now));
        rec.error(now, false, &"reset");
        rec.error(now, true, &"refused");
        assert!(!rec.complete(now, rec.until()), "the window is half-open");
        let tally = rec.finish(1);
        assert_eq!(tally.latencies, [250]);
        assert_eq!((tally.errors, tally.connect_errors), (2, 1));
        assert_eq!(tally.first_error.as_deref(), Some("reset"));
    }

    #[test]
    fn merged_tallies_summarize() {
        let a = Tally {
            latencies: vec![30, 10],
            errors: 1,
            connect_errors: 1,
            unserved: 0,
            first_error: Some("refused".into()),
        };
        let b = Tally {
            latencies: vec![20, 40],
            errors: 2,
            unserved: 3,
            ..Tally::default()
        };
        let s = Tally::merge(vec![a, b]).summary(Duration::from_secs(2));
        assert_eq!(s.requests, 4);
        assert_eq!(s.rps, 2.0);
        assert_eq!((s.p50_us, s.p99_us, s.max_us), (20, 40, 40));
        assert_eq!((s.errors, s.connect_errors, s.unserved), (3, 1, 3));
        assert_eq!(s.first_error.as_deref(), Some("refused"));
    }
}
