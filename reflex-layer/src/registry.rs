//! Confluent schema registry client for the streaming path: `GET {url}/schemas/ids/{id}`,
//! blocking (`ureq`, plain HTTP only), with a cache.
//!
//! * A schema found is kept for the life of the process (ids are immutable).
//! * An id the registry does not know (404) is answered from memory for 30 s, so a stream of
//!   records with a bogus id does not hammer the registry (same as the Python codec).
//! * When the registry cannot be reached or fails (timeout, connection refused, 5xx), lookups
//!   fail fast for 5 s: the records are dead-lettered as `RegistryUnavailable` without each one
//!   waiting for a timeout inside the open transaction.

use crate::avro::{DecodeError, RegistryWriter, WriterSchemas};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

const UNKNOWN_ID_TTL: Duration = Duration::from_secs(30);
const DOWN_BACKOFF: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
enum Cached {
    Found(Arc<RegistryWriter>),
    Unknown(Instant),
}

#[derive(Debug, Default)]
struct State {
    by_id: HashMap<u32, Cached>,
    down_until: Option<(Instant, String)>,
}

/// Counters of what the client did, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lookups {
    pub fetched: u64,
    pub not_found: u64,
    pub failed: u64,
}

pub struct HttpRegistry {
    base: String,
    agent: ureq::Agent,
    state: Mutex<State>,
    lookups: Mutex<Lookups>,
}

impl std::fmt::Debug for HttpRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRegistry")
            .field("base", &self.base)
            .finish()
    }
}

/// The `schema` field of a `GET /schemas/ids/{id}` answer; `schemaType` must be AVRO if given.
pub fn schema_text_of(answer: &str) -> Result<String, String> {
    let j: serde_json::Value =
        serde_json::from_str(answer).map_err(|e| format!("registry answer is not JSON: {e}"))?;
    if let Some(t) = j.get("schemaType").and_then(|t| t.as_str()) {
        if t != "AVRO" {
            return Err(format!("registry schema type is {t}, not AVRO"));
        }
    }
    j.get("schema")
        .and_then(|s| s.as_str())
        .map(str::to_string)
        .ok_or_else(|| "registry answer has no \"schema\"".to_string())
}

impl HttpRegistry {
    pub fn new(url: &str) -> Result<HttpRegistry, String> {
        let base = url.trim().trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(format!(
                "schema registry URL {base:?}: only http:// is supported (the binary is built \
                 without TLS)"
            ));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(HttpRegistry {
            base,
            agent,
            state: Mutex::new(State::default()),
            lookups: Mutex::new(Lookups::default()),
        })
    }

    pub fn lookups(&self) -> Lookups {
        *self.lookups.lock().expect("lookups lock")
    }

    fn count(&self, f: impl FnOnce(&mut Lookups)) {
        f(&mut self.lookups.lock().expect("lookups lock"));
    }

    fn fetch(&self, id: u32) -> Result<Result<Arc<RegistryWriter>, ()>, String> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(Err(()));
        }
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("GET {url}: reading the answer: {e}"))?;
        if status != 200 {
            return Err(format!("GET {url}: HTTP {status}: {body}"));
        }
        let text = schema_text_of(&body).map_err(|e| format!("GET {url}: {e}"))?;
        // a schema we cannot use is permanent, like a 404, but with its own reason
        match RegistryWriter::from_schema_text(&text) {
            Ok(w) => Ok(Ok(Arc::new(w))),
            Err(e) => {
                warn!(schema_id = id, error = %e, "registry schema unusable");
                Ok(Err(()))
            }
        }
    }
}

impl WriterSchemas for HttpRegistry {
    fn lookups(&self) -> Lookups {
        HttpRegistry::lookups(self)
    }

    fn writer(&self, id: u32) -> Result<Arc<RegistryWriter>, DecodeError> {
        {
            let mut st = self.state.lock().expect("registry lock");
            match st.by_id.get(&id) {
                Some(Cached::Found(w)) => return Ok(Arc::clone(w)),
                Some(Cached::Unknown(at)) if at.elapsed() < UNKNOWN_ID_TTL => {
                    return Err(DecodeError::UnknownSchemaId(id))
                }
                _ => {}
            }
            if let Some((until, why)) = &st.down_until {
                if Instant::now() < *until {
                    return Err(DecodeError::RegistryUnavailable(format!(
                        "schema registry unavailable (retrying after a short pause): {why}"
                    )));
                }
                st.down_until = None;
            }
        }
        // the HTTP call runs without the lock held; a concurrent miss just fetches twice
        let got = self.fetch(id);
        let mut st = self.state.lock().expect("registry lock");
        match got {
            Ok(Ok(w)) => {
                self.count(|l| l.fetched += 1);
                st.by_id.insert(id, Cached::Found(Arc::clone(&w)));
                Ok(w)
            }
            Ok(Err(())) => {
                self.count(|l| l.not_found += 1);
                st.by_id.insert(id, Cached::Unknown(Instant::now()));
                Err(DecodeError::UnknownSchemaId(id))
            }
            Err(why) => {
                self.count(|l| l.failed += 1);
                warn!(schema_id = id, error = %why, "schema registry unavailable");
                st.down_until = Some((Instant::now() + DOWN_BACKOFF, why.clone()));
                Err(DecodeError::RegistryUnavailable(format!(
                    "schema registry unavailable: {why}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_parsing() {
        let a = r#"{"schema": "{\"type\":\"record\",\"name\":\"A\",\"fields\":[]}"}"#;
        assert!(schema_text_of(a).unwrap().contains("\"A\""));
        assert!(schema_text_of(r#"{"schema": "x", "schemaType": "PROTOBUF"}"#).is_err());
        assert!(schema_text_of("{}").is_err());
        assert!(schema_text_of("<html>").is_err());
    }

    #[test]
    fn only_plain_http() {
        assert!(HttpRegistry::new("https://r.example").is_err());
        assert!(HttpRegistry::new("http://127.0.0.1:1/").is_ok());
    }

    #[test]
    fn unreachable_registry_fails_fast_after_the_first_try() {
        // port 1 on loopback: connection refused at once
        let r = HttpRegistry::new("http://127.0.0.1:1").unwrap();
        assert!(matches!(
            r.writer(7),
            Err(DecodeError::RegistryUnavailable(_))
        ));
        let t = Instant::now();
        assert!(matches!(
            r.writer(8),
            Err(DecodeError::RegistryUnavailable(_))
        ));
        assert!(t.elapsed() < Duration::from_millis(50));
        assert_eq!(r.lookups().failed, 1);
    }
}
