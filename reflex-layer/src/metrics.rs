//! `/metrics` (Prometheus text format) and `/healthz` for `octollm-reflex run`, served by a
//! tiny HTTP server on its own thread, bound to 127.0.0.1 by default.
//!
//! Counters are bumped by the stream loop only after a transaction commits, so they count what
//! downstream consumers see (an aborted, replayed batch is not counted twice).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How long the consumer may go without polling before `/healthz` says 503.
pub const POLL_STALE_MS: i64 = 30_000;

/// What `/healthz` looks at.
#[derive(Debug, Default)]
pub struct Health {
    /// ms since the epoch of the last consumer poll
    pub last_poll_ms: AtomicI64,
    pub assigned: AtomicBool,
    pub last_txn_failed: AtomicBool,
}

impl Health {
    /// Healthy when the consumer has an assignment or polled recently, and the last
    /// transaction did not fail.
    pub fn check(&self, now_ms: i64) -> Result<&'static str, String> {
        if self.last_txn_failed.load(Ordering::Relaxed) {
            return Err("the last transaction failed".into());
        }
        let polled = now_ms - self.last_poll_ms.load(Ordering::Relaxed) < POLL_STALE_MS;
        if self.assigned.load(Ordering::Relaxed) || polled {
            Ok("ok")
        } else {
            Err("the consumer has no assignment and is not polling".into())
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    /// decision = routed | quarantined | rate_limited | rejected | deduplicated | dead_lettered |
    /// passthrough (`Decision::label`)
    pub records: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub duplicates: IntCounter,
    pub rate_limited: IntCounterVec,
    pub transactions: IntCounter,
    pub aborts: IntCounter,
    pub processing: Histogram,
    pub dedupe_entries: IntGauge,
    pub dedupe_loaded: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub registry_lookups: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let p = "octo_reflex_";
        let records = IntCounterVec::new(
            Opts::new(
                format!("{p}records_total"),
                "Records processed, by decision",
            ),
            &["decision"],
        )
        .expect("metric");
        let dead_letters = IntCounterVec::new(
            Opts::new(
                format!("{p}dead_letters_total"),
                "Dead letters, by error class",
            ),
            &["error_class"],
        )
        .expect("metric");
        let duplicates = IntCounter::new(
            format!("{p}duplicates_total"),
            "Tasks dropped as duplicates of a task id seen within the window",
        )
        .expect("metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                format!("{p}rate_limited_total"),
                "Tasks answered RATE_LIMITED, by tenant",
            ),
            &["tenant"],
        )
        .expect("metric");
        let transactions =
            IntCounter::new(format!("{p}transactions_total"), "Committed transactions")
                .expect("metric");
        let aborts = IntCounter::new(
            format!("{p}transaction_aborts_total"),
            "Aborted transactions (the batch is processed again)",
        )
        .expect("metric");
        let processing = Histogram::with_opts(
            HistogramOpts::new(
                format!("{p}processing_seconds"),
                "Time to decide one record (decode, checks, encode)",
            )
            .buckets(vec![
                5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1,
            ]),
        )
        .expect("metric");
        let dedupe_entries = IntGauge::new(
            format!("{p}dedupe_entries"),
            "Task ids remembered by the dedupe window",
        )
        .expect("metric");
        let dedupe_loaded = IntCounter::new(
            format!("{p}dedupe_loaded_total"),
            "Dedupe records read back from the dedupe topic at start-up or assignment",
        )
        .expect("metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                format!("{p}consumer_lag"),
                "Records behind the end of the partition (librdkafka statistics)",
            ),
            &["topic", "partition"],
        )
        .expect("metric");
        let registry_lookups = IntCounterVec::new(
            Opts::new(
                format!("{p}registry_lookups_total"),
                "Schema registry fetches, by result",
            ),
            &["result"],
        )
        .expect("metric");
        for c in [
            Box::new(records.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(dead_letters.clone()),
            Box::new(duplicates.clone()),
            Box::new(rate_limited.clone()),
            Box::new(transactions.clone()),
            Box::new(aborts.clone()),
            Box::new(processing.clone()),
            Box::new(dedupe_entries.clone()),
            Box::new(dedupe_loaded.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(registry_lookups.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            records,
            dead_letters,
            duplicates,
            rate_limited,
            transactions,
            aborts,
            processing,
            dedupe_entries,
            dedupe_loaded,
            consumer_lag,
            registry_lookups,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Parse `--metrics-addr`: empty or `0` disables the server.
pub fn parse_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    let t = s.trim();
    if t.is_empty() || t == "0" {
        return Ok(None);
    }
    t.parse()
        .map(Some)
        .map_err(|e| format!("--metrics-addr {t:?}: {e} (e.g. 127.0.0.1:9464, or 0 to disable)"))
}

/// Start the server thread; returns the bound address (useful with port 0).
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    now_ms: fn() -> i64,
) -> Result<SocketAddr, String> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| format!("metrics server on {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("metrics server on {addr}: not an IP listener"))?;
    info!(addr = %bound, "serving /metrics and /healthz");
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || loop {
            let req = match server.recv_timeout(Duration::from_secs(1)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    warn!(%e, "metrics server stopped");
                    return;
                }
            };
            let path = req.url().split('?').next().unwrap_or("").to_string();
            let text = |s: String, code: u16, ctype: &str| {
                tiny_http::Response::from_string(s)
                    .with_status_code(code)
                    .with_header(
                        tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes())
                            .expect("valid header"),
                    )
            };
            let resp = match path.as_str() {
                "/metrics" => text(
                    metrics.render(),
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                "/healthz" => match health.check(now_ms()) {
                    Ok(s) => text(format!("{s}\n"), 200, "text/plain"),
                    Err(s) => text(format!("{s}\n"), 503, "text/plain"),
                },
                _ => text("not found\n".into(), 404, "text/plain"),
            };
            if let Err(e) = req.respond(resp) {
                warn!(%e, "metrics: responding failed");
            }
        })
        .map_err(|e| format!("metrics thread: {e}"))?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_rules() {
        let h = Health::default();
        assert!(h.check(100_000).is_err());
        h.last_poll_ms.store(90_000, Ordering::Relaxed);
        assert!(h.check(100_000).is_ok());
        assert!(h.check(90_000 + POLL_STALE_MS).is_err());
        h.assigned.store(true, Ordering::Relaxed);
        assert!(h.check(10_000_000).is_ok());
        h.last_txn_failed.store(true, Ordering::Relaxed);
        assert!(h.check(100_000).is_err());
    }

    #[test]
    fn addr_parsing_and_render() {
        assert_eq!(parse_addr("0").unwrap(), None);
        assert_eq!(parse_addr("").unwrap(), None);
        assert!(parse_addr("127.0.0.1:9464").unwrap().is_some());
        assert!(parse_addr("nope").is_err());
        let m = Metrics::new();
        m.records.with_label_values(&["routed"]).inc();
        m.processing.observe(1e-5);
        let t = m.render();
        assert!(t.contains("octo_reflex_records_total{decision=\"routed\"} 1"));
        assert!(t.contains("octo_reflex_processing_seconds_bucket"));
    }
}
