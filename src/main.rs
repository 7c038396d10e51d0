//! The `pcp` binary: parse, set up logging and the runtime, run the engine, map the
//! result to an exit status. What the user sees is drawn by `cli::render`; the engine
//! is the `pcp` library.

mod cli;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use pcp::CancellationToken;

use cli::args::Cli;
use cli::exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (quiet, verbose, json) = match cli::verbosity(&cli) {
        Ok(v) => v,
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "pcp: error: {}", f.message);
            return ExitCode::from(f.code);
        }
    };
    init_logging(verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "pcp: error: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let rep = Arc::new(cli::render::Reporter::new(quiet).verbose(verbose > 0).json(json));
    let cancel = CancellationToken::new();
    let result = runtime.block_on(async {
        tokio::spawn(on_signals(cancel.clone()));
        cli::run(cli.command, Arc::clone(&rep), cancel).await
    });
    rep.clear();
    let code = match result {
        Ok(()) => exit::SUCCESS,
        Err(f) => {
            // Declining is a choice, not a failure: said plainly, still exit 4.
            let label = if f.code == exit::DECLINED { "" } else { "error: " };
            let mut msg = format!("pcp: {label}{}", f.message);
            if let Some(hint) = f.hint {
                msg.push_str(&format!("\nhint: {hint}"));
            }
            let _ = writeln!(std::io::stderr(), "{msg}");
            f.code
        }
    };
    // Reader threads may sit in a blocking read of stdin; don't wait for them.
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// `-v` for pcp's own logs, `-vv` for libp2p's too; `PCP_LOG` overrides. Colour only
/// on a terminal, and never with `NO_COLOR` set.
fn init_logging(verbose: u8) {
    let filter = match verbose {
        0 => "warn,libp2p=error,libp2p_kad=off",
        1 => "warn,pcp=debug,libp2p=error,libp2p_kad=off",
        _ => "info,pcp=trace,libp2p=debug",
    };
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PCP_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
}

/// The first Ctrl-C or SIGTERM cancels: the engine tells the peer and stops (a commit
/// under way finishes first). A second one exits at once.
async fn on_signals(cancel: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut signalled = 0;
    loop {
        let term = async {
            match term.as_mut() {
                Some(t) => t.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        signalled += 1;
        if signalled > 1 {
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
        cancel.cancel();
    }
}
