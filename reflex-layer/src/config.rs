//! Settings of `octollm-reflex run`. Flags fall back to the `OCTO_*` environment variables the
//! Python side uses (see `main.rs`), so one environment configures both.

use crate::ratelimit::RateLimits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `OCTO_BOOTSTRAP_SERVERS`, default `127.0.0.1:9092`.
    pub bootstrap_servers: String,
    /// Consumer group, default `octo-reflex`.
    pub group: String,
    /// `OCTO_TOPIC_PREFIX`, prepended to every topic name.
    pub topic_prefix: String,
    /// Where the `.avsc` contracts are (`OCTO_SCHEMAS_DIR`).
    pub schemas_dir: PathBuf,
    /// Stable id of this process, for `transactional.id = octo-reflex-<prefix><instance>`.
    pub instance: String,
    /// Forward every decodable task to the orchestrator route with no checks.
    pub passthrough: bool,
    /// At most this many records per transaction.
    pub batch_max: usize,
    /// Close a batch after this long even if it is not full.
    pub batch_wait: Duration,
    /// `OCTO_REFLEX_DEDUPE_WINDOW`: a task id seen this recently is a duplicate (0 = off).
    pub dedupe_window_ms: i64,
    /// Most task ids remembered (oldest evicted first); also bounds the start-up read-back.
    pub dedupe_max_entries: usize,
    /// `OCTO_REFLEX_RATE_LIMIT` / `--rate-burst` / `OCTO_REFLEX_RATE_LIMITS_FILE`.
    pub rate_limits: RateLimits,
    /// `OCTO_REFLEX_MAX_GOAL_BYTES`: a longer goal is REJECTED (0 = no limit).
    pub max_goal_bytes: usize,
    /// `OCTO_SCHEMA_REGISTRY_URL`: decode Confluent-framed values with writer schemas from it.
    pub schema_registry_url: Option<String>,
    /// `OCTO_REFLEX_METRICS_ADDR`: where /metrics and /healthz are served (`None` = off).
    pub metrics_addr: Option<SocketAddr>,
}

impl RunConfig {
    pub fn transactional_id(&self) -> String {
        format!("octo-reflex-{}{}", self.topic_prefix, self.instance)
    }

    /// The consumer group on the cluster: `<prefix><group>`, so environments that share a
    /// cluster through `OCTO_TOPIC_PREFIX` never share (and never rebalance) a group.
    pub fn group_id(&self) -> String {
        format!("{}{}", self.topic_prefix, self.group)
    }
}

/// Default `--instance`: the host name (stable across restarts of the same pod/machine).
pub fn default_instance() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "local".to_string())
}
