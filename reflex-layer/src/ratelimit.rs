//! Per-tenant token buckets, pure: every call takes `now_ms`, so tests are deterministic and
//! the stream can stage a batch's takes and drop them if the transaction aborts (same shape as
//! [`crate::dedupe`]).
//!
//! Limits: a default for every tenant (`--rate-limit`, `--rate-burst`) and per-tenant overrides
//! from a TOML or JSON file (`--rate-limits`). A rate of 0 means unlimited.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// A bucket's shape: `per_sec` tokens refill per second, at most `burst` kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub per_sec: f64,
    pub burst: f64,
}

impl Limit {
    /// `None` for unlimited (rate 0). `burst` 0 means "one second's worth" (at least 1).
    pub fn new(per_sec: f64, burst: f64) -> Option<Limit> {
        if per_sec <= 0.0 {
            return None;
        }
        let burst = if burst > 0.0 { burst } else { per_sec.max(1.0) };
        Some(Limit { per_sec, burst })
    }
}

/// Parse `1000/s`, `60/m`, `10/min`, `3600/h`, `5/d` or a bare number (per second); `0` or
/// empty is unlimited.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(0.0);
    }
    let (num, unit) = t.split_once('/').unwrap_or((t, "s"));
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid rate {s:?} (e.g. 1000/s, 60/m, 100/h; 0 = unlimited)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("invalid rate {s:?}: must be ≥ 0"));
    }
    let secs = match unit.trim() {
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => return Err(format!("invalid rate unit {other:?} in {s:?}")),
    };
    Ok(n / secs)
}

/// A rate in a limits file: `"10/s"` or a number (per second).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RateSpec {
    Num(f64),
    Text(String),
}

impl RateSpec {
    fn per_sec(&self) -> Result<f64, String> {
        match self {
            RateSpec::Num(n) if *n >= 0.0 => Ok(*n),
            RateSpec::Num(n) => Err(format!("invalid rate {n}: must be ≥ 0")),
            RateSpec::Text(s) => parse_rate(s),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitSpec {
    rate: RateSpec,
    #[serde(default)]
    burst: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    #[serde(default)]
    default: Option<LimitSpec>,
    #[serde(default)]
    tenants: HashMap<String, LimitSpec>,
}

/// The configured limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    pub default: Option<Limit>,
    /// Per-tenant override; `None` = this tenant is unlimited.
    pub tenants: HashMap<String, Option<Limit>>,
}

impl RateLimits {
    pub fn limit_for(&self, tenant: &str) -> Option<Limit> {
        match self.tenants.get(tenant) {
            Some(l) => *l,
            None => self.default,
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.default.is_none() && self.tenants.values().all(Option::is_none)
    }

    /// Parse a limits file (`.json` as JSON, anything else as TOML):
    ///
    /// ```toml
    /// [default]            # optional: replaces --rate-limit/--rate-burst
    /// rate = "1000/s"
    /// burst = 2000
    /// [tenants.acme]
    /// rate = "10/s"
    /// burst = 20
    /// [tenants.internal]
    /// rate = 0             # unlimited
    /// ```
    pub fn with_file_text(mut self, text: &str, json: bool) -> Result<RateLimits, String> {
        let file: LimitsFile = if json {
            serde_json::from_str(text).map_err(|e| e.to_string())?
        } else {
            toml::from_str(text).map_err(|e| e.to_string())?
        };
        if let Some(d) = file.default {
            self.default = Limit::new(d.rate.per_sec()?, d.burst);
        }
        for (tenant, spec) in file.tenants {
            let l = Limit::new(
                spec.rate.per_sec().map_err(|e| format!("{tenant}: {e}"))?,
                spec.burst,
            );
            self.tenants.insert(tenant, l);
        }
        Ok(self)
    }

    pub fn with_file(self, path: &Path) -> Result<RateLimits, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json = path.extension().is_some_and(|x| x == "json");
        self.with_file_text(&text, json)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub last_ms: i64,
}

impl Bucket {
    pub fn full(limit: &Limit, now_ms: i64) -> Bucket {
        Bucket {
            tokens: limit.burst,
            last_ms: now_ms,
        }
    }

    /// Refill for the time since the last call (a clock going back refills nothing), then take
    /// one token if there is one.
    pub fn try_take(&mut self, limit: &Limit, now_ms: i64) -> bool {
        if now_ms > self.last_ms {
            let dt = (now_ms - self.last_ms) as f64 / 1000.0;
            self.tokens = (self.tokens + dt * limit.per_sec).min(limit.burst);
            self.last_ms = now_ms;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Buckets per tenant with staged (per-transaction) takes.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limits: RateLimits,
    committed: HashMap<String, Bucket>,
    staged: HashMap<String, Bucket>,
}

/// Above this many buckets, full ones are dropped at commit (a full bucket is the same as none).
const PRUNE_ABOVE: usize = 100_000;

impl RateLimiter {
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter {
            limits,
            committed: HashMap::new(),
            staged: HashMap::new(),
        }
    }

    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// May `tenant` have one more task at `now_ms`? Takes the token (staged) when it may.
    pub fn try_acquire(&mut self, tenant: &str, now_ms: i64) -> bool {
        let Some(limit) = self.limits.limit_for(tenant) else {
            return true;
        };
        let mut b = self
            .staged
            .get(tenant)
            .or_else(|| self.committed.get(tenant))
            .copied()
            .unwrap_or_else(|| Bucket::full(&limit, now_ms));
        let ok = b.try_take(&limit, now_ms);
        self.staged.insert(tenant.to_string(), b);
        ok
    }

    pub fn commit(&mut self, now_ms: i64) {
        self.committed.extend(self.staged.drain());
        if self.committed.len() > PRUNE_ABOVE {
            let limits = &self.limits;
            self.committed.retain(|t, b| match limits.limit_for(t) {
                None => false,
                Some(l) => {
                    let dt = (now_ms - b.last_ms).max(0) as f64 / 1000.0;
                    b.tokens + dt * l.per_sec < l.burst
                }
            });
        }
    }

    pub fn rollback(&mut self) {
        self.staged.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: &str, burst: f64) -> RateLimiter {
        RateLimiter::new(RateLimits {
            default: Limit::new(parse_rate(rate).unwrap(), burst),
            tenants: HashMap::new(),
        })
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("1000/s").unwrap(), 1000.0);
        assert_eq!(parse_rate("60/m").unwrap(), 1.0);
        assert_eq!(parse_rate("3600/h").unwrap(), 1.0);
        assert_eq!(parse_rate("7").unwrap(), 7.0);
        assert_eq!(parse_rate("0").unwrap(), 0.0);
        assert_eq!(parse_rate("").unwrap(), 0.0);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10/w").is_err());
        assert!(parse_rate("-1/s").is_err());
        assert_eq!(Limit::new(0.0, 5.0), None);
        assert_eq!(Limit::new(0.5, 0.0).unwrap().burst, 1.0);
    }

    #[test]
    fn burst_then_refill_by_time() {
        let mut l = limiter("2/s", 3.0);
        let t0 = 1_000_000;
        assert!((0..3).all(|_| l.try_acquire("a", t0)));
        assert!(!l.try_acquire("a", t0));
        assert!(!l.try_acquire("a", t0 + 499)); // 0.998 tokens
        assert!(l.try_acquire("a", t0 + 500)); // exactly 1 token
        assert!(!l.try_acquire("a", t0 + 500));
        // tenants are independent
        assert!(l.try_acquire("b", t0));
        // a long pause refills only up to the burst
        l.commit(t0);
        let t1 = t0 + 3_600_000;
        assert_eq!((0..10).filter(|_| l.try_acquire("a", t1)).count(), 3);
    }

    #[test]
    fn clock_going_back_refills_nothing() {
        let mut l = limiter("1/s", 1.0);
        assert!(l.try_acquire("a", 10_000));
        assert!(!l.try_acquire("a", 5_000));
        assert!(!l.try_acquire("a", 10_999));
        assert!(l.try_acquire("a", 11_000));
    }

    #[test]
    fn rollback_returns_the_batch_tokens() {
        let mut l = limiter("1/h", 2.0);
        assert!(l.try_acquire("a", 0));
        l.commit(0);
        assert!(l.try_acquire("a", 0));
        assert!(!l.try_acquire("a", 0));
        l.rollback();
        assert!(l.try_acquire("a", 0));
        l.commit(0);
        assert!(!l.try_acquire("a", 0));
    }

    #[test]
    fn unlimited_default_and_overrides_from_toml_and_json() {
        let base = RateLimits::default();
        assert!(base.is_unlimited());
        let toml = "[tenants.acme]\nrate = \"10/s\"\nburst = 20\n[tenants.free]\nrate = 1\n";
        let l = base.clone().with_file_text(toml, false).unwrap();
        assert_eq!(
            l.limit_for("acme"),
            Some(Limit {
                per_sec: 10.0,
                burst: 20.0
            })
        );
        assert_eq!(
            l.limit_for("free"),
            Some(Limit {
                per_sec: 1.0,
                burst: 1.0
            })
        );
        assert_eq!(l.limit_for("other"), None);
        let json = r#"{"default": {"rate": "100/s"}, "tenants": {"vip": {"rate": 0}}}"#;
        let l = base.with_file_text(json, true).unwrap();
        assert_eq!(
            l.limit_for("x"),
            Some(Limit {
                per_sec: 100.0,
                burst: 100.0
            })
        );
        assert_eq!(l.limit_for("vip"), None);
        assert!(RateLimits::default()
            .with_file_text("[tenants.a]\nrat = 1\n", false)
            .is_err());
    }
}
