-- OctoLLM audit log, version 1: every step of every task, terminal results, dead letters.
-- Applied by `octollm audit migrate` (streams/audit/store.py), recorded in schema_migrations.
-- {ttl_days} is filled from OCTO_AUDIT_TTL_DAYS; migrate re-applies the TTL when it changes.
--
-- Every table is a ReplacingMergeTree whose sorting key is the row's deterministic identity, so
-- a redelivered batch or a replayed event (same identity) never doubles a row. The key holds the
-- identity only, not ts: two copies of one event must collapse even if their timestamps differ.
-- Queries read with FINAL (or LIMIT 1 BY the identity) so duplicates not yet merged never show.
-- Only redacted data is stored: goals and outputs are redacted before they reach Kafka, and a
-- dead letter's raw payload stays on the octo.dlq topic (its size and hash are kept here).

CREATE TABLE IF NOT EXISTS audit_events
(
    event_id     String,
    task_id      String,
    tenant_id    LowCardinality(String),
    stage        LowCardinality(String),
    component    LowCardinality(String),
    ts           DateTime64(3, 'UTC'),
    status       LowCardinality(String),
    duration_ms  Nullable(Int64),
    generation   Int32,
    details      Map(String, String),
    -- where the sink read it (Kafka coordinates), for tracing a row back to its record
    src_topic     LowCardinality(String),
    src_partition Int32,
    src_offset    Int64,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (task_id, event_id)
TTL toDateTime(ts) + INTERVAL {ttl_days} DAY;

CREATE TABLE IF NOT EXISTS task_results
(
    task_id           String,
    generation        Int32,
    tenant_id         LowCardinality(String),
    status            LowCardinality(String),
    reason            Nullable(String),
    output            Nullable(String),
    steps             String,  -- JSON array of StepSummary
    prompt_tokens     Int64,
    completion_tokens Int64,
    cost_usd          Float64,
    created_at        DateTime64(3, 'UTC'),
    completed_at      DateTime64(3, 'UTC'),
    component         LowCardinality(String),
    src_topic         LowCardinality(String),
    src_partition     Int32,
    src_offset        Int64,
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(completed_at)
ORDER BY (task_id, generation)
TTL toDateTime(completed_at) + INTERVAL {ttl_days} DAY;

CREATE TABLE IF NOT EXISTS dead_letters
(
    dead_letter_id     String,
    original_topic     LowCardinality(String),
    original_partition Int32,
    original_offset    Int64,
    payload_bytes      Int64,
    payload_sha256     String,
    headers            Map(String, String),
    error_class        LowCardinality(String),
    reason             String,
    component          LowCardinality(String),
    ts                 DateTime64(3, 'UTC'),
    src_topic          LowCardinality(String),
    src_partition      Int32,
    src_offset         Int64,
    inserted_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (dead_letter_id)
TTL toDateTime(ts) + INTERVAL {ttl_days} DAY;
