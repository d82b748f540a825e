//! The reflex layer's pure decision core: text in, findings and verdicts out. It knows nothing
//! of Kafka; the streaming path and `octollm-reflex scan` both call it.

pub mod injection;
pub mod pii;
pub mod redact;
pub mod scan;

// The streaming path (`octollm-reflex run`); only `stream` talks to Kafka.
pub mod audit;
pub mod avro;
pub mod config;
pub mod dedupe;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod ratelimit;
pub mod registry;
pub mod stream;
