//! The `inlet` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

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
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Check { config } => {
            inlet::config::load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Run {
            config,
            available_now,
        } => {
            let cfg = inlet::config::load(&config)?;
            let mode = if available_now {
                inlet::Mode::AvailableNow
            } else {
                inlet::Mode::Continuous
            };
            let pipeline = inlet::Pipeline::new(cfg).with_mode(mode);
            let shutdown = pipeline.shutdown_handle();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("signal received: committing what is buffered, then exiting");
                shutdown.store(true, Ordering::Release);
            });
            let summary = pipeline.run().await?;
            println!(
                "consumed {} messages, wrote {} rows in {} commits, rejected {}, fenced {}",
                summary.consumed,
                summary.rows_written,
                summary.commits,
                summary.rejected,
                summary.fenced
            );
            Ok(())
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
