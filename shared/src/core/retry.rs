//! What to do about a failed call: refresh the token, retry later (with a growing backoff), or
//! give up. Each channel owns its errcode table ([`Errcodes`]); what transport and HTTP status
//! mean is the same for every platform and decided here.

use crate::core::http::ApiError;

/// The longest backoff before a retry (SQS allows 12 h; WeChat's limits reset within minutes).
pub const MAX_BACKOFF_S: u32 = 900;

/// What to do about an API result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Drop the cached token (if it is still the one used), fetch a new one, retry once.
    RefreshToken,
    /// Retry later, not sooner than this.
    Transient { min_backoff_s: u32 },
    /// Do not retry: the DLQ, with the reason.
    Permanent,
}

/// A platform's errcode table: the verdict for each code it answers with (platforms share
/// numbers with different meanings, so each channel has its own).
pub type Errcodes = fn(i64) -> Verdict;

/// Classifies a failed call with the platform's errcode table.
pub fn classify(errcodes: Errcodes, err: &ApiError) -> Verdict {
    match err {
        ApiError::Transport { .. } => Verdict::Transient { min_backoff_s: 0 },
        ApiError::Http { status } if *status >= 500 || *status == 429 || *status == 408 => {
            Verdict::Transient { min_backoff_s: 0 }
        }
        ApiError::Http { .. } | ApiError::Decode(_) => Verdict::Permanent,
        ApiError::Errcode { code, .. } => errcodes(*code),
    }
}

/// The backoff before retry number `receive_count`: 10 s, 20 s, 40 s, … up to 15 min, never less
/// than what the error asks for, with a little jitter so a burst does not return as a burst.
pub fn backoff_s(receive_count: u32, min_backoff_s: u32) -> u32 {
    let exponential = 10u32.saturating_mul(1 << receive_count.saturating_sub(1).min(10));
    let jitter = u32::from(crate::protocol::crypto::random_prefix()[0] % 5);
    exponential.max(min_backoff_s).min(MAX_BACKOFF_S) + jitter
}

/// A failed send: the verdict and what the platform said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub verdict: Verdict,
    pub errcode: Option<i64>,
    pub message: String,
}

impl Failure {
    pub fn from_api(errcodes: Errcodes, err: &ApiError) -> Self {
        Self { verdict: classify(errcodes, err), errcode: err.errcode(), message: err.to_string() }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { verdict: Verdict::Permanent, errcode: None, message: message.into() }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self { verdict: Verdict::Transient { min_backoff_s: 0 }, errcode: None, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: i64) -> Verdict {
        Verdict::Permanent
    }

    #[test]
    fn transport_and_server_errors_are_transient_client_errors_permanent() {
        let cases = [
            (ApiError::Http { status: 502 }, Verdict::Transient { min_backoff_s: 0 }),
            (ApiError::Http { status: 429 }, Verdict::Transient { min_backoff_s: 0 }),
            (ApiError::Http { status: 408 }, Verdict::Transient { min_backoff_s: 0 }),
            (ApiError::Http { status: 404 }, Verdict::Permanent),
            (ApiError::Decode("x".into()), Verdict::Permanent),
            (
                ApiError::Transport { timeout: true, connect: false, detail: String::new() },
                Verdict::Transient { min_backoff_s: 0 },
            ),
            (ApiError::Errcode { code: 1, message: String::new() }, Verdict::Permanent),
        ];
        for (err, verdict) in cases {
            assert_eq!(classify(never, &err), verdict, "{err}");
        }
    }

    #[test]
    fn backoff_grows_with_receives_and_honours_the_minimum() {
        let base = |n| backoff_s(n, 0) / 5 * 5;
        assert!(backoff_s(1, 0) >= 10 && backoff_s(1, 0) < 15);
        assert!(base(3) >= 40 && base(3) < 45);
        assert!(backoff_s(2, 60) >= 60);
        assert!(backoff_s(30, 0) <= MAX_BACKOFF_S + 4);
    }
}
