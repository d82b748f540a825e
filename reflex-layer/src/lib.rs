//! The reflex layer's pure decision core: text in, findings and verdicts out. It knows nothing
//! of Kafka; the streaming path and `octollm-reflex scan` both call it.

pub mod injection;
pub mod pii;
pub mod redact;
pub mod scan;
