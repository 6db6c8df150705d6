//! Deadlines as `Option<Instant>`: `None` is "never". Shared by the serving loop's drain, the
//! blocking TLS handshake and the HTTP connection's waits.

use std::time::{Duration, Instant};

/// `now + d`, or `None` ("never") when that is past what `Instant` can hold.
pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// A deadline that has passed.
#[derive(Debug)]
pub(crate) struct Expired;

/// Time left until `deadline`: `Ok(None)` when there is none, `Err(Expired)` once it passed.
pub(crate) fn time_left(deadline: Option<Instant>) -> Result<Option<Duration>, Expired> {
    match deadline {
        None => Ok(None),
        Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(Expired),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_deadline_never_expires_and_a_past_one_has() {
        assert!(matches!(time_left(None), Ok(None)));
        assert!(time_left(Some(Instant::now())).is_err());
        let left = time_left(deadline_after(Duration::from_secs(60)))
            .unwrap()
            .unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(59));
        assert_eq!(deadline_after(Duration::MAX), None);
    }
}
