//! Kafka I/O of `octollm-reflex run`: consume `octo.tasks.v1` (read_committed), run each record
//! through [`Pipeline`], and produce the outputs plus the consumer offsets in one Kafka
//! transaction per batch (exactly-once read-process-write). A blocking loop over rdkafka's
//! `BaseConsumer`/`BaseProducer`; no async runtime.

use crate::config::RunConfig;
use crate::pipeline::{Input, Output, Pipeline};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, error, info, warn};

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Counters, logged at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub records: u64,
    pub dead_letters: u64,
    pub transactions: u64,
    pub aborts: u64,
}

fn produce(producer: &BaseProducer, out: &Output) -> Result<(), KafkaError> {
    loop {
        let mut rec = BaseRecord::to(&out.topic).payload(&out.value);
        if let Some(k) = &out.key {
            rec = rec.key(k);
        }
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Seek every assigned partition back to its committed offset (after an abort), so the batch
/// is read and processed again.
fn rewind(consumer: &BaseConsumer) {
    match consumer.committed(Duration::from_secs(10)) {
        Ok(committed) => {
            let mut tpl = TopicPartitionList::new();
            for e in committed.elements() {
                let off = match e.offset() {
                    Offset::Offset(n) => Offset::Offset(n),
                    _ => Offset::Beginning,
                };
                if let Err(err) = tpl.add_partition_offset(e.topic(), e.partition(), off) {
                    warn!(%err, "rewind: bad partition");
                }
            }
            if let Err(err) = consumer.seek_partitions(tpl, Duration::from_secs(10)) {
                warn!(%err, "rewind: seek failed");
            }
        }
        Err(err) => warn!(%err, "rewind: cannot read committed offsets"),
    }
}

/// Run until SIGTERM/SIGINT (finishing the current transaction) or a fatal error.
pub fn run(cfg: &RunConfig, pipeline: &Pipeline) -> Result<Stats, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("group.id", &cfg.group)
        .set("client.id", format!("octo-reflex-{}", cfg.instance))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", format!("octo-reflex-{}", cfg.instance))
        .set("transactional.id", cfg.transactional_id())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("transaction.timeout.ms", "60000")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    producer
        .init_transactions(TXN_TIMEOUT)
        .map_err(|e| format!("init_transactions: {e}"))?;
    let tasks = pipeline.topics.tasks.clone();
    consumer
        .subscribe(&[tasks.as_str()])
        .map_err(|e| format!("subscribe {tasks}: {e}"))?;
    info!(
        topic = %tasks,
        group = %cfg.group,
        transactional_id = %cfg.transactional_id(),
        passthrough = pipeline.passthrough,
        "reflex layer consuming"
    );

    let mut stats = Stats::default();
    while !stop.load(Ordering::Relaxed) {
        // --- collect a batch
        let mut batch: Vec<Owned> = Vec::new();
        let deadline = Instant::now() + cfg.batch_wait;
        while batch.len() < cfg.batch_max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stop.load(Ordering::Relaxed) {
                break;
            }
            match consumer.poll(left) {
                None => break,
                Some(Ok(m)) => batch.push(Owned::from(&m)),
                Some(Err(e)) => {
                    warn!(%e, "consumer error");
                    break;
                }
            }
        }
        producer.poll(Duration::ZERO);
        if batch.is_empty() {
            continue;
        }
        // --- process it in one transaction
        match transact(&consumer, &producer, pipeline, &batch) {
            Ok(dl) => {
                stats.records += batch.len() as u64;
                stats.dead_letters += dl;
                stats.transactions += 1;
                debug!(
                    records = batch.len(),
                    dead_letters = dl,
                    "transaction committed"
                );
            }
            Err(e) => {
                stats.aborts += 1;
                let fatal = matches!(&e, KafkaError::Transaction(t) if t.is_fatal());
                error!(%e, fatal, "transaction failed; aborting");
                if fatal {
                    return Err(format!("fatal transaction error: {e}"));
                }
                if let Err(a) = producer.abort_transaction(TXN_TIMEOUT) {
                    error!(%a, "abort_transaction failed");
                    return Err(format!("abort failed: {a}"));
                }
                rewind(&consumer);
            }
        }
    }
    info!(?stats, "stopping");
    consumer.unsubscribe();
    Ok(stats)
}

/// A consumed record, copied out of librdkafka's buffer.
struct Owned {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

impl<M: Message> From<&M> for Owned {
    fn from(m: &M) -> Owned {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_string(),
                            x.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Owned {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

fn transact(
    consumer: &BaseConsumer,
    producer: &BaseProducer,
    pipeline: &Pipeline,
    batch: &[Owned],
) -> Result<u64, KafkaError> {
    producer.begin_transaction()?;
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut dead = 0;
    for m in batch {
        let input = Input {
            topic: &m.topic,
            partition: m.partition,
            offset: m.offset,
            key: m.key.as_deref(),
            payload: m.payload.as_deref(),
            headers: m.headers.clone(),
        };
        let (decision, outputs) = pipeline.process(&input, now_ms());
        if let crate::pipeline::Decision::DeadLetter(dl) = &decision {
            dead += 1;
            warn!(
                topic = %m.topic, partition = m.partition, offset = m.offset,
                error_class = %dl.error_class, reason = %dl.reason, "dead-lettered"
            );
        }
        for o in &outputs {
            produce(producer, o)?;
        }
        let e = next.entry((m.topic.clone(), m.partition)).or_insert(0);
        *e = (*e).max(m.offset + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for ((t, p), o) in &next {
        offsets.add_partition_offset(t, *p, Offset::Offset(*o))?;
    }
    let cgm = consumer
        .group_metadata()
        .ok_or(KafkaError::MessageProduction(RDKafkaErrorCode::State))?;
    producer.send_offsets_to_transaction(&offsets, &cgm, TXN_TIMEOUT)?;
    producer.commit_transaction(TXN_TIMEOUT)?;
    Ok(dead)
}
