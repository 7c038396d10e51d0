//! The `pcp` binary: parse, set up logging and the runtime, run the engine, map the
//! result to an exit status. What the user sees is drawn by `cli::render`; the engine
//! is the `pcp` library.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use pcp::CancellationToken;

use cli::args::{Cli, Command};
use cli::{Failure, exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let (quiet, verbose, json) = match cli::verbosity(&cli) {
        Ok(v) => v,
        Err(f) => {
            f.print(cli.json);
            return ExitCode::from(f.code);
        }
    };
    init_logging(verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            let f = Failure {
                message: format!("cannot start the runtime: {e}"),
                hint: None,
                code: exit::FAILURE,
                kind: pcp::ErrorKind::Io.as_str(),
            };
            f.print(json);
            return ExitCode::from(f.code);
        }
    };
    let rep = cli::render::Reporter::new(quiet).verbose(verbose > 0).json(json);
    let rep = if matches!(cli.command, Command::Node(_)) { rep.node() } else { rep }.shared();
    let cancel = CancellationToken::new();
    let result = runtime.block_on(async {
        tokio::spawn(on_signals(cancel.clone()));
        // On the runtime's workers, not this thread: the data phase and the connection
        // task it feeds then wake each other on the same threads, without a futex round
        // trip to this one each time (issue 8: 1.1x the speed, 12 % less sender CPU).
        match tokio::spawn(cli::run(cli.command, Arc::clone(&rep), cancel)).await {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    });
    rep.clear();
    // A question the engine stopped waiting for: its line ends before the error.
    cli::prompt::abandon();
    let code = match result {
        Ok(()) => exit::SUCCESS,
        Err(f) => {
            f.print(json);
            f.code
        }
    };
    // Reader threads may sit in a blocking read of stdin; don't wait for them.
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// A command line clap refused: clap's own message and exit status (help and
/// `--version` go to stdout with 0), or, when `--json` is among the arguments, the
/// first line of that message as a JSON `error` event, so a script reading `--json`
/// output never meets plain text.
///
/// clap quotes the command line back, and a code pasted from a message may hold
/// anything: when its message holds a character `pcp::printable` would hide, it is
/// printed without clap's colours, each line cleaned.
fn usage_error(e: &clap::Error) -> ExitCode {
    let json = std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json");
    if !e.use_stderr() {
        e.exit();
    }
    let rendered = e.render().to_string();
    let code = u8::try_from(e.exit_code()).unwrap_or(exit::USAGE);
    if !json {
        if rendered.lines().all(|l| pcp::printable(l) == l) {
            e.exit();
        }
        rendered.lines().for_each(cli::render::eprint_line);
        return ExitCode::from(code);
    }
    let first = rendered.lines().next().unwrap_or_default();
    let message = first.strip_prefix("error: ").unwrap_or(first);
    Failure::usage(message, None).print(true);
    ExitCode::from(code)
}

/// `-v` for pcp's own logs (debug: the detail an error message leaves out, such as what
/// was wrong in a peer's tar header), `-vv` for all of pcp's (trace), `-vvv` for the
/// network stack's too (libp2p, yamux, quinn, hickory, …: they flood a terminal, and
/// the consent prompt with it); `PCP_LOG` overrides. Colour only on a terminal, and
/// never with `NO_COLOR` set. Every field is cleaned ([`cli::log::CleanFields`]): logs
/// reach the terminal too.
fn init_logging(verbose: u8) {
    let filter = log_filter(verbose);
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PCP_LOG")
                .unwrap_or_else(|_| filter.as_str().into()),
        )
        .with_ansi(colour)
        .fmt_fields(cli::log::CleanFields)
        .with_writer(std::io::stderr)
        .init();
}

/// The network stack: every target that starts with one of these.
const NETWORK_STACK: [&str; 9] = [
    "libp2p",
    "yamux",
    "quinn",
    "hickory",
    "multistream_select",
    "rustls",
    "netlink",
    "if_watch",
    "igd",
];

/// The log filter for `-v` given `verbose` times.
fn log_filter(verbose: u8) -> String {
    let stack = |level: &str| NETWORK_STACK.map(|t| format!(",{t}={level}")).concat();
    match verbose {
        0 => format!("warn{},libp2p_kad=off", stack("error")),
        1 => format!("warn,pcp=debug{},libp2p_kad=off", stack("error")),
        2 => format!("info,pcp=trace{},libp2p_kad=off", stack("error")),
        _ => format!("info,pcp=trace{}", stack("debug")),
    }
}

/// The first Ctrl-C or SIGTERM cancels: the engine tells the peer and stops (a commit
/// under way finishes first). A second one exits at once. Ctrl-C at the consent prompt
/// declines the offer instead (`cli::prompt::interrupt`).
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
        let interrupt = tokio::select! {
            _ = tokio::signal::ctrl_c() => true,
            _ = term => false,
        };
        // Ctrl-C at the consent prompt is the person's "no", not a cancel.
        if interrupt && cli::prompt::interrupt() {
            continue;
        }
        signalled += 1;
        if signalled > 1 {
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
        cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    /// Issue 15, item 12: `-v` and `-vv` leave the network stack at errors; `-vvv`
    /// shows its debug lines.
    #[test]
    fn the_network_stack_logs_only_from_vvv() {
        use tracing_subscriber::EnvFilter;
        use tracing_subscriber::layer::SubscriberExt;
        let enabled = |verbose: u8, target: &'static str| {
            let subscriber =
                tracing_subscriber::registry().with(EnvFilter::new(super::log_filter(verbose)));
            let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            tracing::subscriber::with_default(subscriber, || {
                macro_rules! at {
                    ($t:literal) => {
                        if tracing::enabled!(target: $t, tracing::Level::DEBUG) {
                            seen.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                    };
                }
                match target {
                    "pcp::node" => at!("pcp::node"),
                    "libp2p_swarm" => at!("libp2p_swarm"),
                    "yamux::connection" => at!("yamux::connection"),
                    "quinn_proto::connection" => at!("quinn_proto::connection"),
                    "hickory_proto::xfer" => at!("hickory_proto::xfer"),
                    "multistream_select::dialer_select" => at!("multistream_select::dialer_select"),
                    _ => unreachable!(),
                }
            });
            seen.load(std::sync::atomic::Ordering::Relaxed)
        };
        let stack = [
            "libp2p_swarm",
            "yamux::connection",
            "quinn_proto::connection",
            "hickory_proto::xfer",
            "multistream_select::dialer_select",
        ];
        for verbose in [0, 1, 2] {
            for t in stack {
                assert!(!enabled(verbose, t), "-v×{verbose} shows {t}'s debug lines");
            }
        }
        assert!(enabled(1, "pcp::node"));
        for t in stack {
            assert!(enabled(3, t), "-vvv hides {t}'s debug lines");
        }
    }

    /// The binary's sources, without their tests.
    fn sources() -> Vec<(&'static str, &'static str)> {
        let files = [
            ("src/main.rs", include_str!("main.rs")),
            ("src/cli.rs", include_str!("cli.rs")),
            ("src/cli/args.rs", include_str!("cli/args.rs")),
            ("src/cli/log.rs", include_str!("cli/log.rs")),
            ("src/cli/prompt.rs", include_str!("cli/prompt.rs")),
            ("src/cli/render.rs", include_str!("cli/render.rs")),
            ("src/cli/render/json.rs", include_str!("cli/render/json.rs")),
            ("src/cli/render/announce.rs", include_str!("cli/render/announce.rs")),
            ("src/cli/render/many.rs", include_str!("cli/render/many.rs")),
            ("src/cli/render/words.rs", include_str!("cli/render/words.rs")),
            ("src/cli/ask.rs", include_str!("cli/ask.rs")),
            ("src/cli/clean.rs", include_str!("cli/clean.rs")),
            ("src/cli/hint.rs", include_str!("cli/hint.rs")),
            ("src/cli/text.rs", include_str!("cli/text.rs")),
        ];
        files.map(|(name, text)| (name, text.split("#[cfg(test)]").next().unwrap_or(text))).into()
    }

    /// Issue 14, item 4: one boundary. Every write to stderr or `/dev/tty` goes through
    /// `pcp::printable` (`render::eprint_line`, `render::eprint_json`, the bar's lines
    /// and messages, the consent question) or through the log formatter, which cleans.
    #[test]
    fn every_write_to_the_terminal_passes_the_printing_boundary() {
        let allowed_stderr = [
            "std::io::stderr().is_terminal()",
            "ProgressDrawTarget::stderr()",
            "write_line(&mut std::io::stderr().lock(), line);",
            "write_json(&mut std::io::stderr().lock(), event);",
            "self.write_to(&mut std::io::stderr().lock(), json);",
        ];
        let mut checked = 0;
        for (file, text) in sources() {
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                let at = format!("{file}:{}: {line}", i + 1);
                assert!(!code.contains("eprint!") && !code.contains("eprintln!"), "{at}");
                if code.contains("io::stderr()") {
                    assert!(allowed_stderr.iter().any(|a| code.contains(a)), "{at}");
                    checked += 1;
                }
                if code.contains("with_writer(std::io::stderr)") {
                    // The log layer: its fields go through cli::log::CleanFields.
                    assert!(text.contains(".fmt_fields(cli::log::CleanFields)"), "{at}");
                }
                // The log formatter writes into tracing's line buffer, each value cleaned
                // in `CleanVisitor::field` (tested in cli::log).
                for drawn in [".println(", ".set_message(", "write!(w,"] {
                    if code.contains(drawn) && file != "src/cli/log.rs" {
                        assert!(code.contains("printable("), "{at}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 8, "the scan found only {checked} writes: has the code moved?");
    }
}
