//! The job manager's settings and their environment variables (`FILTER_NORMAL`,
//! `INCIDENT_MAX_SAMPLES`, `ES_CLEANUP_AGE`).

use crate::error::JobError;
use std::time::Duration;

/// Default number of sample lines kept in an incident's `data`.
pub const DEFAULT_MAX_SAMPLES: usize = 10;

/// What the job manager computes and how long it keeps records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfig {
    /// `FILTER_NORMAL` (default true): a window whose incident risk is 0 (only risk-0 lines)
    /// gets no incident document, and an existing document is deleted when its window becomes
    /// normal (its risky lines were retracted). With false every window with lines gets an
    /// incident document, normal ones with risk 0 and severity 1.
    pub filter_normal: bool,
    /// `INCIDENT_MAX_SAMPLES` (default 10): how many of the riskiest lines an incident keeps in
    /// `data`. Bounded so an incident document stays small however busy its minute was.
    pub max_samples: usize,
    /// `ES_CLEANUP_AGE` (default `now-1y`, as in logsight): how far back records are kept.
    /// `None` keeps everything. The manager does not read the clock itself: the caller turns
    /// this into a horizon with [`JobConfig::horizon_at`] and calls `retract_before`.
    pub retention: Option<Duration>,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            filter_normal: true,
            max_samples: DEFAULT_MAX_SAMPLES,
            retention: Some(Duration::from_secs(365 * 86_400)),
        }
    }
}

impl JobConfig {
    /// The defaults overridden by the process environment.
    pub fn from_env() -> Result<JobConfig, JobError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The defaults overridden by `lookup(name)`; unset or empty values keep the default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<JobConfig, JobError> {
        let mut config = JobConfig::default();
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(value) = get("FILTER_NORMAL") {
            config.filter_normal = parse_bool("FILTER_NORMAL", &value)?;
        }
        if let Some(value) = get("INCIDENT_MAX_SAMPLES") {
            config.max_samples = value.trim().parse().map_err(|_| JobError::Config {
                name: "INCIDENT_MAX_SAMPLES",
                value: value.clone(),
                reason: "expected a non-negative integer",
            })?;
        }
        if let Some(value) = get("ES_CLEANUP_AGE") {
            config.retention = parse_age(&value)?;
        }
        Ok(config)
    }

    /// The retention horizon at `now_ms` (epoch milliseconds): records of windows that ended at
    /// or before it are pruned. `None` when retention is off.
    pub fn horizon_at(&self, now_ms: i64) -> Option<i64> {
        let age = self.retention?;
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        Some(now_ms.saturating_sub(age_ms))
    }
}

/// `true/1/yes/on` or `false/0/no/off`, any case. (logsight's Python `bool(os.environ...)`
/// treated every non-empty string as true, so `FILTER_NORMAL=false` could not turn it off.)
fn parse_bool(name: &'static str, value: &str) -> Result<bool, JobError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(JobError::Config {
            name,
            value: value.to_owned(),
            reason: "expected true/false, 1/0, yes/no or on/off",
        }),
    }
}

/// An Elasticsearch date-math age as logsight writes it (`now-1y`, `now-30d`, `now-12h`) or the
/// same without `now-` (`30d`); `off`/`none`/`never` disables retention. Units: `y` (365 days),
/// `M` (30 days), `w`, `d`, `h`/`H`, `m`, `s`. Calendar years and months are approximated by
/// fixed lengths, which is enough for a retention horizon.
pub fn parse_age(value: &str) -> Result<Option<Duration>, JobError> {
    let err = |reason| JobError::Config {
        name: "ES_CLEANUP_AGE",
        value: value.to_owned(),
        reason,
    };
    let text = value.trim();
    if matches!(text.to_ascii_lowercase().as_str(), "off" | "none" | "never") {
        return Ok(None);
    }
    let text = text.strip_prefix("now-").unwrap_or(text);
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| err("missing unit (y, M, w, d, h, m or s)"))?;
    let (digits, unit) = text.split_at(digits_end);
    let amount: u64 = digits
        .parse()
        .map_err(|_| err("expected <number><unit>, e.g. now-1y or 30d"))?;
    let unit_secs: u64 = match unit {
        "y" => 365 * 86_400,
        "M" => 30 * 86_400,
        "w" => 7 * 86_400,
        "d" => 86_400,
        "h" | "H" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(err("unknown unit (y, M, w, d, h, m or s)")),
    };
    let secs = amount
        .checked_mul(unit_secs)
        .ok_or_else(|| err("too large"))?;
    Ok(Some(Duration::from_secs(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_match_logsight() {
        let config = JobConfig::from_lookup(|_| None).ok();
        assert_eq!(config, Some(JobConfig::default()));
        assert_eq!(
            JobConfig::default().retention,
            Some(Duration::from_secs(31_536_000))
        );
        assert!(JobConfig::default().filter_normal);
    }

    #[test]
    fn environment_overrides() {
        let config = JobConfig::from_lookup(lookup(&[
            ("FILTER_NORMAL", "False"),
            ("INCIDENT_MAX_SAMPLES", "3"),
            ("ES_CLEANUP_AGE", "now-2d"),
        ]))
        .ok();
        assert_eq!(
            config,
            Some(JobConfig {
                filter_normal: false,
                max_samples: 3,
                retention: Some(Duration::from_secs(172_800)),
            })
        );
        assert!(JobConfig::from_lookup(lookup(&[("FILTER_NORMAL", "maybe")])).is_err());
        assert!(JobConfig::from_lookup(lookup(&[("INCIDENT_MAX_SAMPLES", "-1")])).is_err());
    }

    #[test]
    fn ages() {
        let secs = |v: &str| parse_age(v).ok().flatten().map(|d| d.as_secs());
        assert_eq!(secs("now-1y"), Some(31_536_000));
        assert_eq!(secs("now-1M"), Some(2_592_000));
        assert_eq!(secs("2w"), Some(1_209_600));
        assert_eq!(secs("now-12h"), Some(43_200));
        assert_eq!(secs("now-5m"), Some(300));
        assert_eq!(secs("90s"), Some(90));
        assert_eq!(parse_age("never").ok(), Some(None));
        for bad in [
            "now-",
            "now-1",
            "1x",
            "y",
            "now-1.5d",
            "99999999999999999999y",
        ] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn horizon() {
        let config = JobConfig {
            retention: Some(Duration::from_secs(60)),
            ..JobConfig::default()
        };
        assert_eq!(config.horizon_at(1_000_000), Some(940_000));
        let off = JobConfig {
            retention: None,
            ..JobConfig::default()
        };
        assert_eq!(off.horizon_at(1_000_000), None);
    }
}
