//! The `inlet` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Kafka → Delta Lake ingestion, exactly once.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "INLET_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ingest: join the consumer group and run until SIGTERM/SIGINT.
    Run {
        /// Configuration file.
        #[arg(short, long, env = "INLET_CONFIG")]
        config: PathBuf,
        /// Ingest up to the high watermarks seen at start, then exit.
        #[arg(long)]
        available_now: bool,
    },
    /// Re-ingest a bounded range, idempotently, under the replay's own app id.
    ///
    /// Ranges are Spark's startingOffsets/endingOffsets JSON
    /// (`{"events":{"0":100}}`, -2 = earliest, -1 = latest; the end is
    /// exclusive) or a timestamp for every partition (epoch milliseconds or
    /// RFC 3339). Running the same replay again writes nothing new.
    Replay {
        /// Configuration file.
        #[arg(short, long, env = "INLET_CONFIG")]
        config: PathBuf,
        /// Start of the range.
        #[arg(long)]
        from: String,
        /// End of the range, exclusive. Default: the high watermarks now.
        #[arg(long, default_value = "{}")]
        to: String,
        /// Write into this table location instead of the configured one
        /// (configs with one table only). When the table has a quarantine
        /// table, --quarantine-uri is required too: the configured one
        /// belongs to the ingest.
        #[arg(long)]
        table_uri: Option<String>,
        /// Write the replay's rejected messages into this quarantine table.
        #[arg(long)]
        quarantine_uri: Option<String>,
        /// The replay's app id. Default: derived from the app id and the range.
        #[arg(long)]
        replay_id: Option<String>,
    },
    /// Show stored offsets, high watermarks and lag per partition, and each
    /// table's version, files and last commit.
    Status {
        /// Configuration file.
        #[arg(short, long, env = "INLET_CONFIG")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Show the offsets stored under this app id instead of the
        /// config's, e.g. a replay's (`inlet replay` logs it:
        /// `<app_id>-replay-<hash>`, or its `--replay-id`).
        #[arg(long)]
        app_id: Option<String>,
    },
    /// Apply the pending versioned table definitions of a migrations
    /// directory (`<dir>/<table>/<version>_<what>.toml`), in order, each
    /// exactly once; the applied version is recorded in the table.
    Migrate {
        /// Configuration file (table locations and storage options).
        #[arg(short, long, env = "INLET_CONFIG")]
        config: PathBuf,
        /// Migrations directory.
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
        /// Only this table (repeatable). Default: every table with a folder.
        #[arg(long)]
        table: Vec<String>,
        /// Show what would be applied, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compact small files of the configured tables once (for a scheduled
    /// job); ingest may keep running.
    Compact {
        /// Configuration file.
        #[arg(short, long, env = "INLET_CONFIG")]
        config: PathBuf,
        /// Only this table (repeatable). Default: every table.
        #[arg(long)]
        table: Vec<String>,
        /// Compact even when fewer than `compaction.min_small_files` are small.
        #[arg(long)]
        force: bool,
    },
    /// Validate the configuration file and exit.
    Check {
        /// Configuration file.
        #[arg(short, long, env = "INLET_CONFIG")]
        config: PathBuf,
    },
}

/// inlet at info; delta-rs only when something is wrong (it logs every
/// snapshot at info and a warning per binary column per file). Its kernel is
/// silenced: it logs an ERROR for the expected "no table yet" on first start,
/// and every real failure reaches inlet as an error value anyway.
const DEFAULT_LOG_FILTER: &str =
    "info,buoyant_kernel=off,deltalake_core=warn,deltalake_core::writer::stats=error";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INLET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    // A run cut short by its shutdown timeout may leave a blocking task
    // (the consumer's close) behind: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            exit_code(e.as_ref())
        }
    }
}

/// 3 when a bounded run ended without its whole range in the table (it
/// could not, or it was stopped first; see the README's exit codes), 1 for
/// every other failure.
fn exit_code(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    use inlet::pipeline::PipelineError;
    match e.downcast_ref::<PipelineError>() {
        Some(PipelineError::Incomplete(_) | PipelineError::Interrupted(_)) => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    }
}

async fn dispatch(command: Command) -> inlet::commands::Result {
    use inlet::commands;
    match command {
        Command::Run {
            config,
            available_now,
        } => commands::ingest::run(&config, available_now).await,
        Command::Replay {
            config,
            from,
            to,
            table_uri,
            quarantine_uri,
            replay_id,
        } => {
            let replay = commands::ingest::Replay {
                from,
                to,
                table_uri,
                quarantine_uri,
                replay_id,
            };
            commands::ingest::replay(&config, replay).await
        }
        Command::Status {
            config,
            json,
            app_id,
        } => commands::status::run(&config, json, app_id).await,
        Command::Migrate {
            config,
            dir,
            table,
            dry_run,
        } => commands::migrate::run(&config, dir, table, dry_run).await,
        Command::Compact {
            config,
            table,
            force,
        } => commands::compact::run(&config, &table, force).await,
        Command::Check { config } => commands::check::run(&config).await,
    }
}
