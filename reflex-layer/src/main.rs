//! `octollm-reflex`: the reflex layer's command-line entry point.

use clap::{Parser, Subcommand};
use std::io::{self, BufReader};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "octollm-reflex",
    version,
    about = "OctoLLM reflex layer: PII detection/redaction and prompt-injection scoring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read JSONL {"id", "text"} from stdin; write one JSON line per input line to stdout
    /// ({"id", "pii", "injection", "redacted"}; offsets are Unicode code points), flushed per line.
    Scan(ScanArgs),
    /// Read JSONL {"text"} from stdin; write the learned stage's hashed features per line
    /// ({"idx", "cnt", "n", "rule"}): what `make train-injection` trains on.
    Features {
        /// Print the feature spec and its hash (the weights file's header field) and exit.
        #[arg(long)]
        spec: bool,
    },
    /// Consume octo.tasks.v1 and route, quarantine or dead-letter every task, exactly once
    /// (one Kafka transaction per batch). Stops cleanly on SIGTERM/SIGINT.
    Run(Box<RunArgs>),
}

/// The learned prompt-injection stage's weights (loaded at start; missing or corrupt: exit 1).
#[derive(clap::Args)]
struct ModelArgs {
    /// Weights file (default: model/injection.v1.bin in this binary's source checkout).
    #[arg(long, env = "OCTO_REFLEX_INJECTION_MODEL")]
    injection_model: Option<std::path::PathBuf>,
    /// Fused probability at which a text becomes HIGH (quarantined); default: the file's.
    #[arg(long, env = "OCTO_REFLEX_INJECTION_THRESHOLD")]
    injection_threshold: Option<f32>,
}

#[derive(clap::Args)]
struct ScanArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Add "explain": rule hits and the strongest n-gram features behind each verdict.
    #[arg(long)]
    explain: bool,
    /// How many features --explain lists.
    #[arg(long, default_value_t = 12)]
    explain_top: usize,
}

/// Loads and installs the injection model; the error is one line for stderr.
fn load_model(args: &ModelArgs) -> Result<(), String> {
    use octollm_reflex::injection::model;
    let path = args
        .injection_model
        .clone()
        .unwrap_or_else(model::default_path);
    let mut m = model::Model::load(&path).map_err(|e| e.to_string())?;
    if let Some(t) = args.injection_threshold {
        if !(t > 0.0 && t < 1.0) {
            return Err(format!("--injection-threshold {t}: must be in (0, 1)"));
        }
        m.threshold = t;
    }
    let _ = model::install(m);
    Ok(())
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Kafka bootstrap servers.
    #[arg(long, env = "OCTO_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap_servers: String,
    /// Consumer group (on the cluster: <topic prefix><group>).
    #[arg(long, default_value = "octo-reflex")]
    group: String,
    /// Prepended to every topic name.
    #[arg(long, env = "OCTO_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// Directory with the octollm.v1.*.avsc contracts (default: the repository's schemas/).
    #[arg(long, env = "OCTO_SCHEMAS_DIR")]
    schemas_dir: Option<std::path::PathBuf>,
    /// Stable id of this process; transactional.id is octo-reflex-<prefix><instance>
    /// (default: the host name).
    #[arg(long, env = "OCTO_REFLEX_INSTANCE")]
    instance: Option<String>,
    /// Decode and forward to the orchestrator route with no checks (benchmark baseline).
    #[arg(long)]
    passthrough: bool,
    /// Most records per transaction.
    #[arg(long, default_value_t = 5000)]
    batch_max: usize,
    /// Longest wait for a batch to fill, in milliseconds.
    #[arg(long, default_value_t = 100)]
    batch_ms: u64,
    /// A task id admitted this recently is a duplicate (e.g. 24h, 30m, 0 = no dedupe).
    #[arg(long, env = "OCTO_REFLEX_DEDUPE_WINDOW", default_value = "24h")]
    dedupe_window: String,
    /// Most task ids the dedupe window remembers (the oldest are evicted first).
    #[arg(long, env = "OCTO_REFLEX_DEDUPE_MAX", default_value_t = 1_000_000)]
    dedupe_max: usize,
    /// Default per-tenant rate (e.g. 1000/s, 60/m; 0 = unlimited, the default).
    #[arg(long, env = "OCTO_REFLEX_RATE_LIMIT", default_value = "0")]
    rate_limit: String,
    /// Default bucket size (tasks a tenant may send at once; 0 = one second's worth).
    #[arg(long, env = "OCTO_REFLEX_RATE_BURST", default_value_t = 0.0)]
    rate_burst: f64,
    /// Per-tenant limits, TOML (or JSON if it ends in .json): [tenants.<id>] rate/burst.
    #[arg(long, env = "OCTO_REFLEX_RATE_LIMITS_FILE")]
    rate_limits: Option<std::path::PathBuf>,
    /// A task whose goal is longer than this many bytes (UTF-8) gets a REJECTED result instead
    /// of being routed (0 = no limit).
    #[arg(long, env = "OCTO_REFLEX_MAX_GOAL_BYTES", default_value_t = octollm_reflex::pipeline::DEFAULT_MAX_GOAL_BYTES)]
    max_goal_bytes: usize,
    /// Confluent schema registry for 0x00-framed values (plain http://).
    #[arg(long, env = "OCTO_SCHEMA_REGISTRY_URL")]
    schema_registry_url: Option<String>,
    /// Address of /metrics and /healthz ("0" or empty: off).
    #[arg(
        long,
        env = "OCTO_REFLEX_METRICS_ADDR",
        default_value = "127.0.0.1:9464"
    )]
    metrics_addr: String,
}

/// Turn the flags into a [`RunConfig`]; an invalid value is one line for stderr.
fn config(args: RunArgs) -> Result<octollm_reflex::config::RunConfig, String> {
    use octollm_reflex::{avro::Contracts, config, dedupe, metrics, ratelimit};
    let dedupe_window_ms = dedupe::parse_duration_ms(&args.dedupe_window)
        .map_err(|e| format!("--dedupe-window: {e}"))?;
    let per_sec =
        ratelimit::parse_rate(&args.rate_limit).map_err(|e| format!("--rate-limit: {e}"))?;
    let mut rate_limits = ratelimit::RateLimits {
        default: ratelimit::Limit::new(per_sec, args.rate_burst),
        ..Default::default()
    };
    if let Some(path) = &args.rate_limits {
        rate_limits = rate_limits
            .with_file(path)
            .map_err(|e| format!("--rate-limits: {e}"))?;
    }
    Ok(config::RunConfig {
        bootstrap_servers: args.bootstrap_servers,
        group: args.group,
        topic_prefix: args.topic_prefix,
        schemas_dir: args.schemas_dir.unwrap_or_else(Contracts::default_dir),
        instance: args.instance.unwrap_or_else(config::default_instance),
        passthrough: args.passthrough,
        batch_max: args.batch_max.max(1),
        batch_wait: std::time::Duration::from_millis(args.batch_ms.max(1)),
        dedupe_window_ms,
        dedupe_max_entries: args.dedupe_max.max(1),
        rate_limits,
        max_goal_bytes: args.max_goal_bytes,
        schema_registry_url: args.schema_registry_url.filter(|u| !u.trim().is_empty()),
        metrics_addr: metrics::parse_addr(&args.metrics_addr)?,
    })
}

fn run(args: RunArgs) -> ExitCode {
    use octollm_reflex::{avro::Contracts, pipeline, registry, stream};
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = load_model(&args.model) {
        eprintln!("octollm-reflex run: {e}");
        return ExitCode::FAILURE;
    }
    let cfg = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("octollm-reflex run: {e}");
            return ExitCode::from(2);
        }
    };
    let contracts = match Contracts::load(&cfg.schemas_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("octollm-reflex run: schemas: {e}");
            return ExitCode::FAILURE;
        }
    };
    let topics = pipeline::Topics::new(&cfg.topic_prefix);
    let mut p = pipeline::Pipeline::new(contracts, topics, cfg.passthrough)
        .with_max_goal_bytes(cfg.max_goal_bytes);
    if let Some(url) = &cfg.schema_registry_url {
        match registry::HttpRegistry::new(url) {
            Ok(r) => p = p.with_registry(std::sync::Arc::new(r)),
            Err(e) => {
                eprintln!("octollm-reflex run: --schema-registry-url: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match stream::run(&cfg, &p) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("octollm-reflex run: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(
                e.kind(),
                DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // one line on stderr, exit 2 (the usage block is noise for a supervised subprocess)
            let msg = e.render().to_string();
            eprintln!(
                "{}",
                msg.lines().next().unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Features { spec: true } => {
            use octollm_reflex::injection::model;
            let spec = serde_json::json!({
                "spec": model::FEATURE_SPEC,
                "hash": format!("{:016x}", model::spec_hash()),
                "bucket_bits": model::BUCKET_BITS,
            });
            println!("{spec}");
            ExitCode::SUCCESS
        }
        Command::Features { spec: false } => {
            let stdin = io::stdin().lock();
            let stdout = io::BufWriter::new(io::stdout().lock());
            let f = octollm_reflex::scan::features_line;
            match octollm_reflex::scan::run_lines(BufReader::new(stdin), stdout, f) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("octollm-reflex features: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Scan(args) => {
            if let Err(e) = load_model(&args.model) {
                eprintln!("octollm-reflex scan: {e}");
                return ExitCode::FAILURE;
            }
            let stdin = io::stdin().lock();
            let stdout = io::stdout().lock();
            let explain = args.explain.then_some(args.explain_top);
            let f = |l: &[u8]| octollm_reflex::scan::scan_line_with(l, explain);
            match octollm_reflex::scan::run_lines(BufReader::new(stdin), stdout, f) {
                Ok(()) => ExitCode::SUCCESS,
                // a closed stdout (reader went away) is a normal end
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("octollm-reflex scan: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
