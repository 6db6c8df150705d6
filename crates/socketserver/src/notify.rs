//! Telling a service manager how the server is doing: systemd's `sd_notify` protocol (a
//! datagram to `NOTIFY_SOCKET`, sent by the `sd-notify` crate), on when
//! [`ServerBuilder::notify_service_manager`](crate::ServerBuilder::notify_service_manager) is
//! set and the variable is there.
//!
//! - `READY=1` once, when the serving loop first turns: every listener is bound by then, and a
//!   program that prints its addresses before serving has printed them.
//! - `STOPPING=1` when a graceful stop (or a close) begins, from whichever thread asked.
//! - `WATCHDOG=1` at half the `WATCHDOG_USEC` interval (when `WATCHDOG_PID` is unset or this
//!   process), sent by the serving loop as it turns: a loop that stops turning stops the pings,
//!   and the service manager restarts the service.
//!
//! A message that cannot be sent is logged once at warning level; serving goes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Set once a message failed, so a broken socket is reported once, not at every ping.
static FAILED: AtomicBool = AtomicBool::new(false);

fn send(state: NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state])
        && !FAILED.swap(true, Ordering::SeqCst)
    {
        log::warn!(
            "cannot notify the service manager through NOTIFY_SOCKET: {}",
            crate::error::describe(&e)
        );
    }
}

/// `READY=1`.
pub(crate) fn ready() {
    send(NotifyState::Ready);
}

/// `STOPPING=1`.
pub(crate) fn stopping() {
    send(NotifyState::Stopping);
}

/// The serving loop's watchdog pings.
#[derive(Debug)]
pub(crate) struct Watchdog {
    every: Duration,
    next: Instant,
}

impl Watchdog {
    /// The pings the service manager asks for (`WATCHDOG_USEC`), if it does: every half of
    /// its interval, the first at once.
    pub(crate) fn from_env() -> Option<Watchdog> {
        let every = sd_notify::watchdog_enabled()?.checked_div(2)?;
        (!every.is_zero()).then(|| Watchdog {
            every,
            next: Instant::now(),
        })
    }

    /// Pings when one is due at `now`.
    pub(crate) fn turn(&mut self, now: Instant) {
        if now >= self.next {
            send(NotifyState::Watchdog);
            self.next = now + self.every;
        }
    }

    /// When the next ping is due (the serving loop wakes for it).
    pub(crate) fn next(&self) -> Instant {
        self.next
    }
}
