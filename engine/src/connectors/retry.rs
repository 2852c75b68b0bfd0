//! Retry policy of the connectors: how many attempts, and how long to wait between them
//! (exponential backoff from one second, capped). `RETRY_ATTEMPTS` (default 6) and
//! `RETRY_TIMEOUT` (seconds, default 10) are the original logsight settings.

use std::time::Duration;
use thiserror::Error;

/// Errors of reading a retry setting.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RetryConfigError {
    #[error("{name}={value:?}: expected {expected}")]
    Invalid {
        name: String,
        value: String,
        expected: &'static str,
    },
}

/// Bounded exponential backoff: attempt 1 runs at once, attempt `n + 1` after
/// `min(initial × 2^(n-1), max_delay)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1 (`RETRY_ATTEMPTS`).
    pub attempts: u32,
    /// Longest wait between two attempts (`RETRY_TIMEOUT`).
    pub max_delay: Duration,
    /// Wait before the second attempt.
    pub initial: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            max_delay: Duration::from_secs(10),
            initial: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The default policy with `RETRY_ATTEMPTS` / `RETRY_TIMEOUT` applied from `get`
    /// (a lookup of settings by name; blank values count as unset).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, RetryConfigError> {
        let mut policy = RetryPolicy::default();
        let value = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = value("RETRY_ATTEMPTS") {
            policy.attempts = v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| invalid("RETRY_ATTEMPTS", &v, "a whole number of at least 1"))?;
        }
        if let Some(v) = value("RETRY_TIMEOUT") {
            let secs = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
                .ok_or_else(|| invalid("RETRY_TIMEOUT", &v, "seconds between 0 and 86400"))?;
            policy.max_delay = Duration::from_secs_f64(secs);
            policy.initial = policy.initial.min(policy.max_delay);
        }
        Ok(policy)
    }

    /// The wait before attempt `attempt + 1`, after `attempt` (1-based) failed; `None` when no
    /// attempt is left.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let exp = attempt.saturating_sub(1).min(30);
        let delay = self.initial.saturating_mul(1u32 << exp);
        Some(delay.min(self.max_delay))
    }

    /// The longest time all waits of one operation add up to.
    pub fn total_wait(&self) -> Duration {
        (1..self.attempts).filter_map(|a| self.delay_after(a)).sum()
    }
}

fn invalid(name: &str, value: &str, expected: &'static str) -> RetryConfigError {
    RetryConfigError::Invalid {
        name: name.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_back_off_exponentially_up_to_the_cap() {
        let p = RetryPolicy::default();
        let delays: Vec<u64> = (1..=6)
            .filter_map(|a| p.delay_after(a))
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 10]);
        assert_eq!(p.total_wait(), Duration::from_secs(25));
    }

    #[test]
    fn settings_are_read_and_checked() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let p = RetryPolicy::from_lookup(env(&[("RETRY_ATTEMPTS", "3"), ("RETRY_TIMEOUT", "0.5")]))
            .unwrap();
        assert_eq!(p.attempts, 3);
        assert_eq!(p.delay_after(1), Some(Duration::from_millis(500)));
        assert_eq!(p.delay_after(3), None);
        assert_eq!(
            RetryPolicy::from_lookup(env(&[("RETRY_ATTEMPTS", " ")])).unwrap(),
            RetryPolicy::default()
        );
        assert!(RetryPolicy::from_lookup(env(&[("RETRY_ATTEMPTS", "0")])).is_err());
        assert!(RetryPolicy::from_lookup(env(&[("RETRY_TIMEOUT", "soon")])).is_err());
        // One attempt: no retry at all.
        let once = RetryPolicy::from_lookup(env(&[("RETRY_ATTEMPTS", "1")])).unwrap();
        assert_eq!(once.delay_after(1), None);
    }
}
