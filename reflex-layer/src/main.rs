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
    Scan,
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
        Command::Scan => {
            let stdin = io::stdin().lock();
            let stdout = io::stdout().lock();
            match octollm_reflex::scan::run(BufReader::new(stdin), stdout) {
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
