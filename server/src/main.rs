//! The `eddy` binary: parses the command line, sets up tracing, opens the data
//! directory, binds and serves until SIGTERM or Ctrl-C; or, as `eddy migrate`, copies
//! a data directory into PostgreSQL (`migrate`).

mod cli;
mod migrate;

use anyhow::Context;
use clap::Parser;
use eddy_server::{AppState, Config};
use tracing_subscriber::EnvFilter;

/// mimalloc replaces `malloc` itself (its `override` feature), for Rust's allocations
/// through the default (system) allocator and for SQLite's own: request buffers are
/// allocated on the async workers and freed on the writer thread, a pattern glibc's
/// allocator handles poorly (docs/internals/decisions/0003-mimalloc-as-malloc.md).
use mimalloc as _;

#[derive(Parser)]
#[command(
    name = "eddy",
    version,
    about = "An event stream server with JavaScript reducers"
)]
enum Cli {
    /// Runs the server.
    #[command(after_help = "Examples:
  eddy serve                                        # ./eddy-data, 127.0.0.1:8080
  eddy serve --data /var/lib/eddy --listen 0.0.0.0:8080 --admin-token \"$TOKEN\"
  eddy serve --database postgres://eddy@localhost/eddy

Every option is also an EDDY_* environment variable. A configuration or storage that
cannot be used is told in one sentence on stderr, with exit code 1.")]
    Serve(Box<Config>),
    Migrate(migrate::MigrateArgs),
    /// Folds events through a reducer here, with no server, and checks the state.
    Test(cli::test::TestArgs),
    /// Sends stdin to a stream as it arrives: NDJSON lines, or bytes.
    Send(cli::send::SendArgs),
    /// Follows a stream live, one line per event, resuming after dropped connections.
    Tail(cli::tail::TailArgs),
    /// Writes a stream, a factory or an account's streams as NDJSON envelopes.
    Export(cli::export::ExportArgs),
    /// Appends NDJSON envelopes with their ids and timestamps; safe to run again.
    Import(cli::export::ImportArgs),
    /// Copies an embedded database, consistently, while its server runs.
    Backup(cli::backup::BackupArgs),
    /// Deploys a reducer or pipe from a file and follows the rebuild.
    Deploy(cli::deploy::DeployArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // the copy's own lines are its progress: only warnings besides them
    let default_filter = match cli {
        Cli::Serve(_) => "info",
        _ => "warn",
    };
    // a client subcommand's stdout is its output (events, states, exports): its
    // logs go to stderr
    let to_stderr = !matches!(cli, Cli::Serve(_) | Cli::Migrate(_));
    tracing_subscriber::fmt()
        .with_writer(move || -> Box<dyn std::io::Write> {
            match to_stderr {
                true => Box::new(std::io::stderr()),
                false => Box::new(std::io::stdout()),
            }
        })
        // colours only on a terminal, not in log files and journals
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_from_env("EDDY_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .init();
    let config = match cli {
        Cli::Serve(config) => *config,
        Cli::Migrate(args) => return migrate_command(args),
        Cli::Send(args) => return client_command("send", cli::send::run(args)),
        Cli::Tail(args) => return client_command("tail", cli::tail::run(args)),
        Cli::Export(args) => return client_command("export", cli::export::export(args)),
        Cli::Deploy(args) => return client_command("deploy", cli::deploy::run(args)),
        Cli::Import(args) => return client_command("import", cli::export::import(args)),
        Cli::Backup(args) => {
            if let Err(e) = cli::backup::run(&args) {
                fail("backup", &e);
            }
            return Ok(());
        }
        Cli::Test(args) => match cli::test::run(&args) {
            Ok(true) => return Ok(()),
            Ok(false) => std::process::exit(1),
            Err(e) => {
                eprintln!("eddy test: {e:#}");
                std::process::exit(2);
            }
        },
    };
    if let Err(e) = serve(config) {
        fail("serve", &e);
    }
    Ok(())
}

/// `eddy serve`: checks the configuration, opens the storage, binds and serves until
/// SIGTERM or Ctrl-C.
fn serve(config: Config) -> anyhow::Result<()> {
    config.check()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let addr = listener.local_addr()?;
            let mut config = config;
            // the port taken, for the node's address in /api/cluster
            config.listen = addr;
            let state = AppState::open(config.clone())
                .await
                .with_context(|| format!("cannot open the storage {}", config.storage()))?;
            tracing::info!(%addr, storage = %config.storage(), "eddy listening");
            eddy_server::serve(listener, state, shutdown_signal()).await?;
            Ok(())
        })
}

/// Ends the process with exit code 1 after one line on stderr: `eddy <name>: ` and
/// the error with its causes joined by ": " (any line breaks in them made spaces).
fn fail(name: &str, e: &anyhow::Error) -> ! {
    let said = format!("{e:#}");
    let line: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    eprintln!("eddy {name}: {}", line.join(" "));
    std::process::exit(1);
}

/// Runs a client subcommand: exit code 1 and one sentence on stderr when it fails.
fn client_command(
    name: &str,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let done = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(work);
    if let Err(e) = done {
        fail(name, &e);
    }
    Ok(())
}

/// `eddy migrate`: exit code 1 and one sentence on stderr when the copy fails.
fn migrate_command(args: migrate::MigrateArgs) -> anyhow::Result<()> {
    let copied = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(migrate::run(args));
    if let Err(e) = copied {
        eprintln!("eddy migrate: {e}");
        std::process::exit(1);
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
