//! Kafka I/O of `octollm-reflex run`: consume `octo.tasks.v1` (read_committed), run each record
//! through [`Pipeline`], and produce the outputs plus the consumer offsets in one Kafka
//! transaction per batch (exactly-once read-process-write). A blocking loop over rdkafka's
//! `BaseConsumer`/`BaseProducer`; no async runtime.

use crate::config::RunConfig;
use crate::dedupe::DedupeWindow;
use crate::metrics::{Health, Metrics};
use crate::pipeline::{Decision, DedupeRecord, Gate, Input, Output, Pipeline};
use crate::ratelimit::RateLimiter;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashSet};
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
        if let Some(p) = out.partition {
            rec = rec.partition(p);
        }
        if !out.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(out.headers.len());
            for (k, v) in &out.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            rec = rec.headers(h);
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
fn rewind(consumer: &BaseConsumer<ReflexContext>) {
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

/// The consumer's context: feeds librdkafka's statistics (consumer lag) to `/metrics`.
pub struct ReflexContext {
    metrics: Arc<Metrics>,
}

impl ClientContext for ReflexContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                // -1: librdkafka does not know (yet); the internal partition is -1 too
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &p.to_string()])
                        .set(part.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for ReflexContext {}

/// The dedupe loader's context: reaching the end of a partition is how the loader knows it is
/// done, not an error worth a log line.
struct LoaderContext;

impl ClientContext for LoaderContext {
    fn error(&self, err: KafkaError, reason: &str) {
        let eof = matches!(
            err,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            error!(%err, reason, "dedupe loader");
        }
    }
}

impl ConsumerContext for LoaderContext {}

/// Which topics exist, from cluster metadata (listing all topics never auto-creates one),
/// refreshed at most every few seconds. Used for tasks' own reply topics: a produce to a
/// missing topic would fail the transaction and retry the batch forever.
struct KnownTopics {
    names: HashSet<String>,
    fetched: Option<Instant>,
}

impl KnownTopics {
    const REFRESH: Duration = Duration::from_secs(5);

    fn new() -> KnownTopics {
        KnownTopics {
            names: HashSet::new(),
            fetched: None,
        }
    }

    fn exists(&mut self, consumer: &BaseConsumer<ReflexContext>, topic: &str) -> bool {
        if self.names.contains(topic) {
            return true;
        }
        if self.fetched.is_none_or(|t| t.elapsed() >= Self::REFRESH) {
            self.fetched = Some(Instant::now());
            match consumer.fetch_metadata(None, Duration::from_secs(10)) {
                Ok(md) => {
                    self.names = md
                        .topics()
                        .iter()
                        .filter(|t| t.error().is_none())
                        .map(|t| t.name().to_string())
                        .collect();
                }
                // unknown: try the produce (the transaction fails and retries if it is missing)
                Err(e) => {
                    warn!(%e, "cannot list topics");
                    return true;
                }
            }
        }
        self.names.contains(topic)
    }
}

/// Fail at start-up, with one clear line, when a topic the stream writes to is missing: a
/// produce to a missing topic would abort every transaction and retry it forever.
fn check_topics(consumer: &BaseConsumer<ReflexContext>, pipeline: &Pipeline) -> Result<(), String> {
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(|e| format!("cannot read cluster metadata from the brokers: {e}"))?;
    let have: HashSet<&str> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name())
        .collect();
    let mut want = vec![pipeline.topics.tasks.clone()];
    want.extend(pipeline.topics.outputs());
    let missing: Vec<String> = want
        .into_iter()
        .filter(|t| !have.contains(t.as_str()))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing topics: {} (create them first: `octollm topics create`)",
            missing.join(", ")
        ))
    }
}

/// Partition count of `topic`, or `None` when it does not exist.
fn partitions_of(
    consumer: &BaseConsumer<ReflexContext>,
    topic: &str,
) -> Result<Option<usize>, String> {
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(|e| format!("metadata: {e}"))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len()))
}

/// Create the compacted dedupe topic when it is missing, with as many partitions as the tasks
/// topic (a task's dedupe record goes to its task's partition number).
fn ensure_dedupe_topic(
    cfg: &RunConfig,
    consumer: &BaseConsumer<ReflexContext>,
    pipeline: &Pipeline,
) -> Result<(), String> {
    let topic = &pipeline.topics.dedupe;
    let tasks = partitions_of(consumer, &pipeline.topics.tasks)?
        .ok_or_else(|| format!("missing topic {}", pipeline.topics.tasks))?;
    if let Some(n) = partitions_of(consumer, topic)? {
        if n < tasks {
            return Err(format!(
                "{topic} has {n} partitions, fewer than the {tasks} of {}",
                pipeline.topics.tasks
            ));
        }
        return Ok(());
    }
    let brokers = consumer
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(|e| format!("metadata: {e}"))?
        .brokers()
        .len();
    let rf = brokers.clamp(1, 3) as i32;
    let retention = cfg.dedupe_window_ms.max(60_000).to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.bootstrap_servers)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let nt = NewTopic::new(topic, tasks as i32, TopicReplication::Fixed(rf))
        // compacted (the latest generation per task id) and deleted after the window
        .set("cleanup.policy", "compact,delete")
        .set("retention.ms", &retention)
        .set("min.insync.replicas", if rf >= 2 { "2" } else { "1" });
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let res = futures_executor::block_on(admin.create_topics([&nt], &opts))
        .map_err(|e| format!("creating {topic}: {e}"))?;
    for r in res {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(format!("creating {t}: {e}")),
        }
    }
    info!(topic = %topic, partitions = tasks, replication = rf, "created the dedupe topic");
    // wait until the brokers' metadata has it, so the first produce does not fail
    let deadline = Instant::now() + Duration::from_secs(30);
    while partitions_of(consumer, topic)? != Some(tasks) {
        if Instant::now() > deadline {
            return Err(format!(
                "{topic} was created but does not show in the metadata"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Read back the dedupe records of `partitions` (read_committed, only the window and at most
/// `max_entries / partitions` records per partition) into `gate`. Returns the count read.
fn load_dedupe(
    cfg: &RunConfig,
    pipeline: &Pipeline,
    partitions: &[i32],
    dedupe: &mut DedupeWindow,
) -> Result<u64, String> {
    let topic = &pipeline.topics.dedupe;
    let now = now_ms();
    let loader: BaseConsumer<LoaderContext> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("group.id", format!("{}-dedupe-loader", cfg.group_id()))
        .set(
            "client.id",
            format!("octo-reflex-{}-dedupe-loader", cfg.instance),
        )
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(LoaderContext)
        .map_err(|e| format!("dedupe loader: {e}"))?;
    let per_partition = (cfg.dedupe_max_entries / partitions.len().max(1)).max(1) as i64;
    let mut times = TopicPartitionList::new();
    for p in partitions {
        times
            .add_partition_offset(topic, *p, Offset::Offset(now - cfg.dedupe_window_ms))
            .map_err(|e| e.to_string())?;
    }
    let by_time = loader
        .offsets_for_times(times, Duration::from_secs(30))
        .map_err(|e| format!("{topic}: offsets for the window start: {e}"))?;
    let mut start = TopicPartitionList::new();
    let mut open: HashSet<i32> = HashSet::new();
    for e in by_time.elements() {
        let (low, high) = loader
            .fetch_watermarks(topic, e.partition(), Duration::from_secs(30))
            .map_err(|err| format!("{topic}/{}: watermarks: {err}", e.partition()))?;
        let from = match e.offset() {
            Offset::Offset(o) => o.max(high - per_partition).max(low),
            _ => high, // nothing inside the window
        };
        if from >= high {
            continue;
        }
        start
            .add_partition_offset(topic, e.partition(), Offset::Offset(from))
            .map_err(|err| err.to_string())?;
        open.insert(e.partition());
    }
    if open.is_empty() {
        return Ok(0);
    }
    loader
        .assign(&start)
        .map_err(|e| format!("{topic}: assign: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0u64;
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(format!(
                "{topic}: reading back the dedupe state took over 120 s (partitions left: {open:?})"
            ));
        }
        match loader.poll(Duration::from_millis(500)) {
            None => {}
            Some(Ok(m)) => {
                let (Some(k), Some(v)) = (m.key(), m.payload()) else {
                    continue;
                };
                match (std::str::from_utf8(k), DedupeRecord::decode(v)) {
                    (Ok(task_id), Some(r)) => {
                        dedupe.load(task_id, r.generation, r.seen_at, now);
                        n += 1;
                    }
                    _ => warn!(
                        partition = m.partition(),
                        offset = m.offset(),
                        "unreadable dedupe record skipped"
                    ),
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(format!("{topic}: {e}")),
        }
    }
    dedupe.finish_load(now_ms());
    Ok(n)
}

/// Partitions of `topic` in the consumer's current assignment.
fn assigned(consumer: &BaseConsumer<ReflexContext>, topic: &str) -> HashSet<i32> {
    consumer
        .assignment()
        .map(|a| {
            a.elements()
                .iter()
                .filter(|e| e.topic() == topic)
                .map(|e| e.partition())
                .collect()
        })
        .unwrap_or_default()
}

/// Run until SIGTERM/SIGINT (finishing the current transaction) or a fatal error.
pub fn run(cfg: &RunConfig, pipeline: &Pipeline) -> Result<Stats, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    if let Some(addr) = cfg.metrics_addr {
        // observability must never stop the data path: a taken port is logged, not fatal
        if let Err(e) =
            crate::metrics::serve(addr, Arc::clone(&metrics), Arc::clone(&health), now_ms)
        {
            error!(error = %e, "no /metrics and /healthz");
        }
    }
    let consumer: BaseConsumer<ReflexContext> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("group.id", cfg.group_id())
        .set("client.id", format!("octo-reflex-{}", cfg.instance))
        // static membership: a restarted instance takes its partitions back at once instead
        // of waiting for the dead member's session to time out
        .set(
            "group.instance.id",
            format!("octo-reflex-{}{}", cfg.topic_prefix, cfg.instance),
        )
        .set("session.timeout.ms", "15000")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // librdkafka pre-fetches up to 64 MB per consumer by default; a batch is at most a few
        // MB, so a smaller read-ahead keeps RSS flat under a backlog at no cost in throughput
        .set("queued.max.messages.kbytes", "8192")
        .set(
            "statistics.interval.ms",
            if cfg.metrics_addr.is_some() {
                "5000"
            } else {
                "0"
            },
        )
        .create_with_context(ReflexContext {
            metrics: Arc::clone(&metrics),
        })
        .map_err(|e| format!("consumer: {e}"))?;
    check_topics(&consumer, pipeline)?;
    let dedupe_on = cfg.dedupe_window_ms > 0 && !pipeline.passthrough;
    if dedupe_on {
        ensure_dedupe_topic(cfg, &consumer, pipeline)?;
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", format!("octo-reflex-{}", cfg.instance))
        .set("transactional.id", cfg.transactional_id())
        .set("enable.idempotence", "true")
        // the Java client's partitioner (as aiokafka/Faust and the Python producers): a task id
        // lands on the same partition number of every topic (co-partitioning)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        // AddOffsetsToTxn right after a commit often meets CONCURRENT_TRANSACTIONS while the
        // coordinator writes the markers; the default 100 ms back-off made each transaction
        // cost ~120 ms more than it needs (measured with the end-to-end benchmark)
        .set("retry.backoff.ms", "10")
        .set("retry.backoff.max.ms", "100")
        .set("transaction.timeout.ms", "60000")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    // fences (and aborts the open transaction of) a predecessor with the same id, so the
    // dedupe state read below includes everything it committed and nothing it did not
    producer
        .init_transactions(TXN_TIMEOUT)
        .map_err(|e| format!("init_transactions: {e}"))?;
    let tasks = pipeline.topics.tasks.clone();
    consumer
        .subscribe(&[tasks.as_str()])
        .map_err(|e| format!("subscribe {tasks}: {e}"))?;
    info!(
        topic = %tasks,
        group = %cfg.group_id(),
        transactional_id = %cfg.transactional_id(),
        passthrough = pipeline.passthrough,
        dedupe_window_ms = if dedupe_on { cfg.dedupe_window_ms } else { 0 },
        rate_limited = !cfg.rate_limits.is_unlimited(),
        max_goal_bytes = pipeline.max_goal_bytes,
        schema_registry = cfg.schema_registry_url.as_deref().unwrap_or(""),
        "reflex layer consuming"
    );

    let mut gate = Gate::new(
        DedupeWindow::new(
            if dedupe_on { cfg.dedupe_window_ms } else { 0 },
            cfg.dedupe_max_entries,
        ),
        RateLimiter::new(cfg.rate_limits.clone()),
    );
    let mut loaded: HashSet<i32> = HashSet::new();
    let mut stats = Stats::default();
    let mut seen_lookups = crate::registry::Lookups::default();
    let mut known = KnownTopics::new();
    let fixed: HashSet<String> = pipeline
        .topics
        .outputs()
        .into_iter()
        .chain([pipeline.topics.dedupe.clone()])
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // --- collect a batch
        let mut batch: Vec<Owned> = Vec::new();
        let deadline = Instant::now() + cfg.batch_wait;
        while batch.len() < cfg.batch_max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stop.load(Ordering::Relaxed) {
                break;
            }
            let polled = consumer.poll(left);
            health.last_poll_ms.store(now_ms(), Ordering::Relaxed);
            match polled {
                None => break,
                Some(Ok(m)) => batch.push(Owned::from(&m)),
                Some(Err(e)) => {
                    // a fatal error (e.g. fenced by a newer member with our group.instance.id)
                    // never clears: exit so the supervisor sees it instead of a zombie consumer
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        return Err(format!("fatal consumer error: {code:?}: {reason}"));
                    }
                    warn!(%e, "consumer error");
                    break;
                }
            }
        }
        producer.poll(Duration::ZERO);
        // --- dedupe state of partitions assigned since the last batch, before any of their
        // records is judged
        let now_assigned = assigned(&consumer, &tasks);
        health
            .assigned
            .store(!now_assigned.is_empty(), Ordering::Relaxed);
        if dedupe_on && now_assigned != loaded {
            let mut new: Vec<i32> = now_assigned.difference(&loaded).copied().collect();
            new.sort_unstable();
            if !new.is_empty() {
                let t = Instant::now();
                let n = load_dedupe(cfg, pipeline, &new, &mut gate.dedupe)?;
                metrics.dedupe_loaded.inc_by(n);
                metrics.dedupe_entries.set(gate.dedupe.len() as i64);
                info!(partitions = ?new, records = n, entries = gate.dedupe.len(),
                      ms = t.elapsed().as_millis() as u64, "dedupe state read back");
            }
            loaded = now_assigned;
        }
        if batch.is_empty() {
            continue;
        }
        // --- process it in one transaction
        let mut sink = Sink {
            consumer: &consumer,
            producer: &producer,
            fixed: &fixed,
            known: &mut known,
        };
        match transact(&mut sink, pipeline, &mut gate, &batch) {
            Ok(done) => {
                gate.commit(now_ms());
                health.last_txn_failed.store(false, Ordering::Relaxed);
                stats.records += batch.len() as u64;
                stats.dead_letters += done.dead_letters;
                stats.transactions += 1;
                done.apply(&metrics);
                metrics.transactions.inc();
                metrics.dedupe_entries.set(gate.dedupe.len() as i64);
                if let Some(r) = &pipeline.registry {
                    let l = r.lookups();
                    metrics
                        .registry_lookups
                        .with_label_values(&["fetched"])
                        .inc_by(l.fetched - seen_lookups.fetched);
                    metrics
                        .registry_lookups
                        .with_label_values(&["not_found"])
                        .inc_by(l.not_found - seen_lookups.not_found);
                    metrics
                        .registry_lookups
                        .with_label_values(&["failed"])
                        .inc_by(l.failed - seen_lookups.failed);
                    seen_lookups = l;
                }
                debug!(
                    records = batch.len(),
                    dead_letters = done.dead_letters,
                    "transaction committed"
                );
            }
            Err(e) => {
                gate.rollback();
                stats.aborts += 1;
                metrics.aborts.inc();
                health.last_txn_failed.store(true, Ordering::Relaxed);
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

/// What one committed batch did, applied to the metrics only after the commit.
#[derive(Default)]
struct Done {
    dead_letters: u64,
    /// (decision label, dead-letter class or rate-limited tenant, seconds)
    records: Vec<(&'static str, Option<String>, f64)>,
}

impl Done {
    fn apply(&self, m: &Metrics) {
        for (label, extra, secs) in &self.records {
            m.records.with_label_values(&[label]).inc();
            m.processing.observe(*secs);
            match (*label, extra) {
                ("dead_lettered", Some(class)) => {
                    m.dead_letters.with_label_values(&[class.as_str()]).inc()
                }
                ("rate_limited", Some(tenant)) => {
                    m.rate_limited.with_label_values(&[tenant.as_str()]).inc()
                }
                ("deduplicated", _) => m.duplicates.inc(),
                _ => {}
            }
        }
    }
}

/// Where `transact` writes: the producer, plus what it needs to skip a missing reply topic.
struct Sink<'a> {
    consumer: &'a BaseConsumer<ReflexContext>,
    producer: &'a BaseProducer,
    /// Topics checked at start-up.
    fixed: &'a HashSet<String>,
    known: &'a mut KnownTopics,
}

fn transact(
    sink: &mut Sink<'_>,
    pipeline: &Pipeline,
    gate: &mut Gate,
    batch: &[Owned],
) -> Result<Done, KafkaError> {
    let (consumer, producer) = (sink.consumer, sink.producer);
    producer.begin_transaction()?;
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut done = Done::default();
    for m in batch {
        let input = Input {
            topic: &m.topic,
            partition: m.partition,
            offset: m.offset,
            key: m.key.as_deref(),
            payload: m.payload.as_deref(),
            headers: m.headers.clone(),
        };
        let t = Instant::now();
        let (decision, outputs) = pipeline.process_with(&input, gate, now_ms());
        let secs = t.elapsed().as_secs_f64();
        let extra = match &decision {
            Decision::DeadLetter(dl) => {
                done.dead_letters += 1;
                warn!(
                    topic = %m.topic, partition = m.partition, offset = m.offset,
                    error_class = %dl.error_class, reason = %dl.reason, "dead-lettered"
                );
                Some(dl.error_class.clone())
            }
            Decision::RateLimited(res) => {
                debug!(task_id = %res.task_id, tenant_id = %res.tenant_id, "rate limited");
                Some(res.tenant_id.clone())
            }
            Decision::Rejected(res) => {
                info!(task_id = %res.task_id, tenant_id = %res.tenant_id,
                      reason = res.reason.as_deref().unwrap_or_default(), "rejected");
                None
            }
            Decision::Duplicate {
                task_id,
                tenant_id,
                seen_generation,
                ..
            } => {
                debug!(task_id = %task_id, tenant_id = %tenant_id, seen_generation, "duplicate dropped");
                None
            }
            Decision::Quarantine(rt, _) => {
                info!(task_id = %rt.task.task_id, tenant_id = %rt.task.tenant_id,
                      severity = %rt.injection.severity, "quarantined");
                None
            }
            Decision::Route(_) => None,
        };
        let label = if pipeline.passthrough {
            "passthrough"
        } else {
            decision.label()
        };
        done.records.push((label, extra, secs));
        for o in &outputs {
            if !sink.fixed.contains(&o.topic) && !sink.known.exists(consumer, &o.topic) {
                // the result is still on octo.results.v1; only the task's own copy is skipped
                warn!(task_id = %String::from_utf8_lossy(o.key.as_deref().unwrap_or_default()),
                      topic = %o.topic, "reply topic does not exist; result not copied there");
                continue;
            }
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
    Ok(done)
}
