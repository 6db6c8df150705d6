//! The current time as the response's `Date` and the access log's timestamp, formatted once a
//! second per thread (as nginx keeps its cached time strings), not once per request.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which text of the current time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// An IMF-fixdate, as `Date` carries it: `Sun, 06 Nov 1994 08:49:37 GMT`.
    Http,
    /// The common log format's: `06/Nov/1994:08:49:37 +0000`.
    Clf,
}

/// This second's texts.
struct Cached {
    second: u64,
    http: String,
    clf: String,
}

thread_local! {
    static CACHED: RefCell<Cached> = const {
        RefCell::new(Cached { second: u64::MAX, http: String::new(), clf: String::new() })
    };
}

/// Appends the current time in `form` to `out`.
pub(crate) fn push_now(out: &mut String, form: Form) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let done = CACHED.try_with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.second != second {
            let http = httpdate::fmt_http_date(now);
            cached.clf = clf_of(&http);
            cached.http = http;
            cached.second = second;
        }
        out.push_str(match form {
            Form::Http => &cached.http,
            Form::Clf => &cached.clf,
        });
    });
    if done.is_err() {
        // The thread is ending and its cache is gone: format this one afresh.
        let http = httpdate::fmt_http_date(now);
        out.push_str(&match form {
            Form::Http => http,
            Form::Clf => clf_of(&http),
        });
    }
}

/// The common log format's text of an IMF-fixdate.
fn clf_of(imf: &str) -> String {
    let parts: Vec<&str> = imf.split_whitespace().collect();
    match parts.as_slice() {
        [_, day, month, year, time, _] => format!("{day}/{month}/{year}:{time} +0000"),
        _ => imf.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A time in the common log format (`10/Oct/2000:13:55:36 +0000`, always UTC).
    fn clf_date(when: SystemTime) -> String {
        clf_of(&httpdate::fmt_http_date(when))
    }

    #[test]
    fn clf_dates_look_like_apache() {
        let when = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(clf_date(when), "09/Sep/2001:01:46:40 +0000");
    }

    #[test]
    fn both_forms_name_the_same_second() {
        let (mut http, mut clf) = (String::new(), String::new());
        push_now(&mut http, Form::Http);
        push_now(&mut clf, Form::Clf);
        let parsed = httpdate::parse_http_date(&http).expect("an IMF-fixdate");
        let again = clf_date(parsed);
        // The two calls may straddle a second boundary.
        let later = clf_date(parsed + Duration::from_secs(1));
        assert!(clf == again || clf == later, "{http} vs {clf}");
        assert!(http.ends_with(" GMT"), "{http}");
    }
}
