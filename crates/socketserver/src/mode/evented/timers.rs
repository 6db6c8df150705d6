//! A loop's timers: a min-heap of `(deadline, token, generation)` with lazy deadlines. A
//! connection keeps the deadline it armed (`Entry::armed`); a later deadline is not pushed
//! (the earlier entry fires, and the loop re-arms with the current one), an earlier one is,
//! and entries for closed or re-armed connections go stale and are skipped when they fire.
//! Nothing ever scans every connection; stale entries are swept only when they outnumber
//! the live connections ([`Timers::sweep`]), so churn with long timeouts cannot pile up.
//!
//! Also the lingering close's bounds ([`Linger`]): how long, and how much, a closing
//! connection's unread input is discarded for.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// How long, and how many bytes, a closing connection's unread input is discarded for.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// One timer: when, and for which connection (token and generation).
pub(super) type Timer = (Instant, usize, u64);

#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    pub(super) fn arm(&mut self, when: Instant, token: usize, generation: u64) {
        self.heap.push(Reverse((when, token, generation)));
    }

    /// The earliest deadline, stale or not.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((when, _, _))| *when)
    }

    /// Takes the earliest timer if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((when, _, _))) if *when <= now => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// When the timers outnumber the `live` connections (twice over, plus a margin), keeps
    /// only those `current` says are still armed.
    pub(super) fn sweep(&mut self, live: usize, current: impl Fn(&Timer) -> bool) {
        if self.heap.len() > 2 * live + 1024 {
            self.heap.retain(|Reverse(timer)| current(timer));
        }
    }
}

/// A lingering close: our side is shut down, and what the peer still sends (a body the
/// answer did not need) is read and discarded until it closes too, for a bounded time and
/// amount. Closing with unread bytes would reset the connection and could destroy the answer
/// before the client reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Linger {
    /// Discard until then.
    pub(super) until: Instant,
    /// Bytes still to discard.
    left: usize,
}

impl Linger {
    pub(super) fn start(now: Instant) -> Linger {
        Linger {
            until: now + LINGER_TIME,
            left: LINGER_BYTES,
        }
    }

    /// `n` more bytes were discarded: false once the allowance is spent (close now).
    pub(super) fn discarded(&mut self, n: usize) -> bool {
        if self.left > n {
            self.left -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.arm(t0 + Duration::from_secs(3), 3, 1);
        timers.arm(t0 + Duration::from_secs(1), 1, 1);
        timers.arm(t0 + Duration::from_secs(2), 2, 1);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None, "nothing is due yet");
        let now = t0 + Duration::from_secs(2);
        assert_eq!(timers.pop_due(now).map(|t| t.1), Some(1));
        assert_eq!(timers.pop_due(now).map(|t| t.1), Some(2));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn stale_timers_are_swept_only_once_they_outnumber_the_live_connections() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for token in 0..3000 {
            timers.arm(t0 + Duration::from_secs(60), token, 7);
        }
        // 3000 timers for 1000 live connections: under 2 × 1000 + 1024, kept.
        timers.sweep(1000, |_| false);
        assert_eq!(timers.len(), 3000);
        // For 10 live connections: swept down to the current ones.
        timers.sweep(10, |&(_, token, generation)| token < 10 && generation == 7);
        assert_eq!(timers.len(), 10);
    }

    #[test]
    fn a_lingering_close_discards_a_bounded_amount_for_a_bounded_time() {
        let now = Instant::now();
        let mut linger = Linger::start(now);
        assert_eq!(linger.until, now + LINGER_TIME);
        assert!(linger.discarded(LINGER_BYTES - 1));
        assert!(!linger.discarded(1), "the allowance is spent: close");
        let mut linger = Linger::start(now);
        assert!(
            !linger.discarded(LINGER_BYTES),
            "one read of the whole allowance closes"
        );
    }
}
