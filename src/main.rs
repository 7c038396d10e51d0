//! The `pcp` binary: parse, set up logging and the runtime, run, map the error to an
//! exit status. Everything else lives in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use pcp::{cli::Cli, error::exit, progress::Reporter};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (quiet, verbose, json) = match &cli.command {
        pcp::cli::Command::Send(a) => (a.common.quiet, a.common.verbose, a.common.json),
        pcp::cli::Command::Receive(a) => (a.common.quiet, a.common.verbose, a.common.json),
        pcp::cli::Command::Node(a) => (a.quiet, a.verbose, false),
    };
    let filter = match verbose {
        0 => "warn",
        1 => "warn,pcp=debug",
        _ => "info,pcp=trace,libp2p=debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PCP_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pcp: error: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let reporter = Reporter::new(quiet).verbose(verbose > 0).json(json);
    let result = runtime.block_on(async {
        let run = pcp::run(cli, &reporter);
        tokio::pin!(run);
        loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tokio::signal::ctrl_c() => {
                    // Mid-commit, stopping would leave a half-moved extraction: finish.
                    if !pcp::sink::committing() {
                        break Err(pcp::Error::Interrupted);
                    }
                }
            }
        }
    });
    reporter.clear();
    let code = match result {
        Ok(()) => exit::SUCCESS,
        // The reader of our stdout went away (`pcp receive … | head`): not a failure.
        Err(e) if e.is_broken_pipe() => exit::SUCCESS,
        Err(e) => {
            let mut msg = format!("pcp: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            if let Some(hint) = e.hint() {
                msg.push_str(&format!("\nhint: {hint}"));
            }
            let _ = writeln!(std::io::stderr(), "{msg}");
            e.exit_code()
        }
    };
    // Reader threads may sit in a blocking read of stdin; don't wait for them.
    runtime.shutdown_background();
    ExitCode::from(code)
}
