//! The binary's side of the line: maps clap's arguments to the engine's options, renders
//! its events, asks for consent on the terminal, and turns the result into an exit
//! status. The engine itself (the `pcp` library) never prints.

pub(crate) mod args;
mod ask;
mod clean;
mod hint;
pub(crate) mod log;
pub(crate) mod prompt;
pub(crate) mod render;
mod text;

use std::io::IsTerminal;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pcp::error::chain;
use pcp::{
    CancellationToken, Code, Compression, Destination, ErrorKind, NetworkOptions, NodeOptions,
    ReceiveOptions, SendOptions, Source,
};

use args::{Cli, Command, CommonArgs, NodeArgs, ReceiveArgs, SendArgs};
use render::{Discovery, Reporter};

/// Process exit statuses, documented in the man pages' EXIT STATUS section.
pub(crate) mod exit {
    /// The transfer completed and verified.
    pub(crate) const SUCCESS: u8 = 0;
    /// The transfer failed, or local I/O did.
    pub(crate) const FAILURE: u8 = 1;
    /// The command line was wrong (clap uses 2 as well).
    pub(crate) const USAGE: u8 = 2;
    /// The peer could not be authenticated: wrong code, or too many failed attempts.
    pub(crate) const AUTH: u8 = 3;
    /// The receiver declined the offer.
    pub(crate) const DECLINED: u8 = 4;
    /// The peer did not turn up within `--timeout`.
    pub(crate) const TIMEOUT: u8 = 5;
    /// Interrupted by SIGINT or SIGTERM.
    pub(crate) const INTERRUPTED: u8 = 130;
}

/// A failure as the user sees it: the message chain, a hint, the exit status, and the
/// kind a `--json` reader gets (`pcp::ErrorKind::as_str`, or `usage`).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
    pub(crate) code: u8,
    pub(crate) kind: &'static str,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>, hint: Option<String>) -> Failure {
        Failure {
            message: message.into(),
            hint,
            code: exit::USAGE,
            kind: ErrorKind::Usage.as_str(),
        }
    }

    /// Prints the failure on stderr: `pcp: error: …` and `hint: …`, or with `--json`
    /// one `error` event. The message (the whole error chain, every level of it) and the
    /// hint pass through [`pcp::printable`] here, whatever made them: one line each.
    pub(crate) fn print(&self, json: bool) {
        self.write_to(&mut std::io::stderr().lock(), json);
    }

    /// [`Failure::print`] to any writer.
    fn write_to(&self, w: &mut impl std::io::Write, json: bool) {
        if json {
            let event =
                render::error_json(self.kind, &self.message, self.hint.as_deref(), self.code);
            render::write_json(w, event);
            return;
        }
        // Declining is a choice, not a failure: said plainly, still exit 4.
        let label = if self.code == exit::DECLINED { "" } else { "error: " };
        render::write_line(w, &format!("pcp: {label}{}", self.message));
        if let Some(hint) = &self.hint {
            render::write_line(w, &format!("hint: {hint}"));
        }
    }
}

/// The exit status for a kind of engine failure.
fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Usage => exit::USAGE,
        ErrorKind::WrongCode | ErrorKind::CodeBurnt | ErrorKind::Guessing => exit::AUTH,
        ErrorKind::Declined => exit::DECLINED,
        ErrorKind::Timeout => exit::TIMEOUT,
        ErrorKind::Cancelled => exit::INTERRUPTED,
        _ => exit::FAILURE,
    }
}

impl From<pcp::Error> for Failure {
    fn from(e: pcp::Error) -> Failure {
        Failure {
            message: chain(&e),
            hint: hint::hint(&e),
            code: exit_code(e.kind()),
            kind: e.kind().as_str(),
        }
    }
}

/// What `main` needs to know before running: `-q`, the `-v` count and `--json`, given
/// before the subcommand, after it, or both (the counts add up).
///
/// # Errors
/// `--json` before `node`, which has no JSON output (after it, clap refuses it).
pub(crate) fn verbosity(cli: &Cli) -> Result<(bool, u8, bool), Failure> {
    let (quiet, verbose, json) = match &cli.command {
        Command::Send(a) => (a.quiet, a.common.verbose, a.common.json),
        Command::Receive(a) => (a.quiet, a.common.verbose, a.common.json),
        Command::Node(_) if cli.json => {
            return Err(Failure::usage(
                "--json is for send and receive: pcp node prints its addresses on standard output",
                None,
            ));
        }
        Command::Node(a) => (a.quiet, a.verbose, false),
        Command::Clean(_) if cli.json => {
            return Err(Failure::usage("--json is for send and receive", None));
        }
        Command::Clean(_) => (false, 0, false),
    };
    Ok((cli.quiet || quiet, cli.verbose.saturating_add(verbose), cli.json || json))
}

/// Runs one subcommand until it ends or `cancel` stops it.
pub(crate) async fn run(
    cmd: Command,
    rep: Arc<Reporter>,
    cancel: CancellationToken,
) -> Result<(), Failure> {
    match cmd {
        Command::Send(a) => send(a, rep, cancel).await,
        Command::Receive(a) => receive(a, rep, cancel).await,
        Command::Node(a) => node(a, rep, cancel).await,
        // Blocking (a directory listing, a question on the terminal): off the reactor.
        Command::Clean(a) => tokio::task::spawn_blocking(move || clean::run(&a))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
    }
}

/// The library's events, to the reporter.
fn events(rep: &Arc<Reporter>) -> impl Fn(pcp::Event) + Send + Sync + 'static {
    let rep = Arc::clone(rep);
    move |ev| rep.emit(ev)
}

/// `pcp send`.
async fn send(
    mut a: SendArgs,
    rep: Arc<Reporter>,
    cancel: CancellationToken,
) -> Result<(), Failure> {
    let events = events(&rep);
    let (many, paths) = many_and_paths(a.many.take(), std::mem::take(&mut a.paths))?;
    a.paths = paths;
    // Without mDNS and the DHT, the receiver can reach us only with --peer.
    let announce = a.common.no_mdns && a.common.no_dht;
    let random: Vec<String> = a
        .common
        .listen
        .iter()
        .filter(|addr| announce && random_port(addr))
        .map(ToString::to_string)
        .collect();
    rep.discovery(Discovery {
        role: pcp::Role::Sender,
        mdns: !a.common.no_mdns,
        dht: !a.common.no_dht,
        peers: false,
    });
    let typed = reads_the_terminal(&a.paths, a.text.as_ref())?;
    let options = send_options(a, many)?;
    if typed {
        rep.emit_line("reading standard input from the terminal: type the text, then Ctrl-D");
    }
    if announce {
        rep.announce_addresses();
    }
    for addr in random {
        rep.emit_line(&format!(
            "--listen {addr} has a random port: the address for --peer changes with \
             every run (choose one, e.g. /ip4/0.0.0.0/tcp/4001)"
        ));
    }
    pcp::send(options, events, cancel).await?;
    Ok(())
}

/// `pcp receive`.
async fn receive(
    a: ReceiveArgs,
    rep: Arc<Reporter>,
    cancel: CancellationToken,
) -> Result<(), Failure> {
    let events = events(&rep);
    rep.discovery(Discovery {
        role: pcp::Role::Receiver,
        mdns: !a.common.no_mdns,
        dht: !a.common.no_dht,
        peers: !a.peer.is_empty(),
    });
    let chosen = a.output.as_ref().is_some_and(|o| o.as_os_str() == "-");
    let (mut options, yes) = receive_options(a)?;
    if matches!(options.destination, Destination::Writer(_)) && !chosen {
        rep.data_to_stdout();
    }
    if matches!(options.destination, Destination::Directory(_)) {
        options.text = Some(text_writer(&rep));
    }
    let to_file = matches!(options.destination, Destination::File(_));
    let consent = consent(Arc::clone(&rep), yes, to_file);
    let received = pcp::receive(options, events, consent, cancel).await;
    match received {
        // The reader of our stdout went away (`pcp receive … | head`): not a failure.
        Err(e) if e.is_broken_pipe() => Ok(()),
        r => r.map(drop).map_err(Failure::from),
    }
}

/// `pcp node`.
async fn node(a: NodeArgs, rep: Arc<Reporter>, cancel: CancellationToken) -> Result<(), Failure> {
    let events = events(&rep);
    let (options, warning) = node_options(a)?;
    if let Some(w) = warning {
        rep.emit_line(&w);
    }
    pcp::serve(options, events, cancel.clone())
        .await
        .map_err(|e| Failure::from(pcp::Error::from(e)))?;
    if cancel.is_cancelled() {
        return Err(Failure::from(pcp::Error::Cancelled));
    }
    Ok(())
}

/// Whether `pcp send` reads what is typed on the terminal: with `-`, it says so; with
/// no PATH at all it refuses, as a user who forgot the path would wait for nothing.
fn reads_the_terminal(paths: &[PathBuf], text: Option<&Option<String>>) -> Result<bool, Failure> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    match text {
        // `--text TEXT` reads nothing; `--text` alone reads what is typed.
        Some(Some(_)) => return Ok(false),
        Some(None) => return Ok(true),
        None => {}
    }
    match paths {
        [] => Err(Failure::usage(
            "nothing to send: no PATH was given, and standard input is the terminal",
            Some(
                "give a file or directory to send; `pcp send -` sends what you type (end it \
                 with Ctrl-D)"
                    .into(),
            ),
        )),
        [p] if p.as_os_str() == "-" => Ok(true),
        _ => Ok(false),
    }
}

/// Whether a listen address asks for port 0, a random port.
fn random_port(addr: &libp2p::Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    addr.iter().any(|p| matches!(p, Protocol::Tcp(0) | Protocol::Udp(0)))
}

fn network(
    c: &CommonArgs,
    reconnect_timeout: u64,
    timeout: Option<std::time::Duration>,
) -> NetworkOptions {
    NetworkOptions {
        listen: c.listen.clone(),
        mdns: !c.no_mdns,
        dht: !c.no_dht,
        bootstrap: c.bootstrap.clone(),
        allow_relay: c.allow_relay,
        reconnect_timeout: Duration::from_secs(reconnect_timeout),
        timeout,
        slot: slot(),
    }
}

/// The discovery slot's length: the library's default, unless the hidden, test-only
/// environment variable `PCP_SLOT_SECS` holds a positive number of seconds (tests/dht.rs
/// shortens the slot to see it roll over during a wait). Not a flag: users have no
/// reason to change it, and peers meet only if they agree on it.
fn slot() -> Duration {
    let secs = std::env::var("PCP_SLOT_SECS").ok().and_then(|v| v.parse::<u64>().ok());
    Duration::from_secs(secs.filter(|&n| n > 0).unwrap_or(pcp::code::SLOT_SECS))
}

fn parse_code(s: Result<Code, pcp::ParseCodeError>) -> Result<Code, Failure> {
    s.map_err(|e| Failure::usage(chain(&e), e.hint()))
}

fn send_options(a: SendArgs, many: Option<Option<NonZeroU32>>) -> Result<SendOptions, Failure> {
    let paths = a.paths;
    let stdin = |p: &PathBuf| p.as_os_str() == "-";
    let source = if let Some(given) = a.text {
        Source::Text(text::read_text(given)?)
    } else if paths.is_empty() || (paths.len() == 1 && stdin(&paths[0])) {
        Source::Reader(Box::new(std::io::stdin()))
    } else if paths.iter().any(stdin) {
        return Err(Failure::usage("`-` (stdin) cannot be sent together with paths", None));
    } else {
        Source::Paths(paths)
    };
    let mut o = SendOptions::new(source);
    o.code = a.code.as_deref().map(|c| parse_code(c.parse())).transpose()?;
    o.words = usize::from(a.words);
    o.compression = match (a.no_compress, a.level) {
        (true, _) => Compression::Off,
        (false, Some(level)) => Compression::Zstd(level),
        (false, None) => Compression::Adaptive,
    };
    o.chunk_size = a.chunk_size;
    o.network = network(&a.common, a.reconnect_timeout, a.timeout);
    if let Some(count) = many {
        let lag = std::time::Duration::from_secs(a.many_lag);
        o.receivers = pcp::Receivers::Many { count, lag };
    }
    Ok(o)
}

/// `--many`'s count, and the paths: what follows `--many` is its count when it is a
/// number, else the first path (`pcp send --many report.pdf`). `--many` alone serves
/// until Ctrl-C.
fn many_and_paths(
    many: Option<Option<PathBuf>>,
    mut paths: Vec<PathBuf>,
) -> Result<(Option<Option<NonZeroU32>>, Vec<PathBuf>), Failure> {
    let count = match many {
        None => return Ok((None, paths)),
        Some(None) => None,
        Some(Some(value)) => match value.to_str().map(str::parse::<u32>) {
            Some(Ok(0)) => {
                return Err(Failure::usage(
                    "--many 0 would serve nobody",
                    Some("give --many alone to serve until Ctrl-C".into()),
                ));
            }
            Some(Ok(n)) => NonZeroU32::new(n),
            _ => {
                paths.insert(0, value);
                None
            }
        },
    };
    Ok((Some(count), paths))
}

/// The receive options, and whether consent is given up front (`-y`).
fn receive_options(a: ReceiveArgs) -> Result<(ReceiveOptions, bool), Failure> {
    let code = match (&a.code, a.words.is_empty()) {
        (Some(c), _) => parse_code(c.parse())?,
        (None, false) => parse_code(Code::from_words(&a.words))?,
        (None, true) => ask_for_code()?,
    };
    if let Some(dir) = &a.directory {
        check_directory(dir)?;
    }
    if !a.yes && !prompt::has_tty() {
        return Err(Failure::usage(
            "no terminal to confirm the offer on",
            Some("pass -y to accept without asking".into()),
        ));
    }
    // -o takes anything; with stdout redirected the bytes go there (pipes first);
    // otherwise files are saved and folders extracted, here or under -C.
    let destination = match (a.output, a.directory) {
        // `-o -`: standard output, as for tar, curl and most tools.
        (Some(o), _) if o.as_os_str() == "-" => Destination::Writer(Box::new(std::io::stdout())),
        (Some(o), _) => Destination::File(o),
        (None, Some(d)) => Destination::Directory(d),
        (None, None) if std::io::stdout().is_terminal() => Destination::Directory(".".into()),
        (None, None) => Destination::Writer(Box::new(std::io::stdout())),
    };
    let mut o = ReceiveOptions::new(code, destination);
    o.force = a.force;
    o.peers = a.peer;
    o.network = network(&a.common, a.reconnect_timeout, a.timeout);
    Ok((o, a.yes))
}

/// The code, asked for on the terminal until it parses (issue 15): the user may mistype.
///
/// # Errors
/// No terminal to ask on, Ctrl-D (usage), Ctrl-C (interrupted).
fn ask_for_code() -> Result<Code, Failure> {
    let none = || {
        Some("give it on the command line (pcp receive CODE), with --code, or in PCP_CODE".into())
    };
    if !prompt::has_tty() {
        return Err(Failure::usage("no code given, and no terminal to ask for it on", none()));
    }
    loop {
        match ask::ask_code() {
            Ok(ask::Answer::Line(line)) if line.is_empty() => {}
            Ok(ask::Answer::Line(line)) => match line.parse::<Code>() {
                Ok(code) => return Ok(code),
                Err(e) => {
                    render::eprint_line(&format!("pcp: {}", chain(&e)));
                    if let Some(hint) = e.hint() {
                        render::eprint_line(&format!("hint: {hint}"));
                    }
                }
            },
            Ok(ask::Answer::End) => return Err(Failure::usage("no code given", none())),
            Ok(ask::Answer::Interrupted) => return Err(Failure::from(pcp::Error::Cancelled)),
            Err(e) => return Err(Failure::usage(format!("cannot ask for the code: {e}"), none())),
        }
    }
}

/// Where a text offer goes when the receiver saves into a directory: the terminal,
/// cleaned, when standard output is one; else the raw bytes, to standard output.
fn text_writer(rep: &Arc<Reporter>) -> Box<dyn std::io::Write + Send> {
    if std::io::stdout().is_terminal() {
        Box::new(text::TerminalText::new(std::io::stdout(), Some(Arc::clone(rep))))
    } else {
        Box::new(std::io::stdout())
    }
}

/// `-C DIR` must name an existing directory. It is not created: a mistyped DIR would
/// otherwise leave a stray directory behind, which is what `tar -C` does too.
fn check_directory(dir: &std::path::Path) -> Result<(), Failure> {
    let shown = prompt::sanitize(&dir.display().to_string());
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Failure::usage(format!("{shown} is not a directory"), None)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Failure::usage(
            format!("{shown} does not exist"),
            Some(format!("create it first (mkdir -p {shown}), or choose another -C")),
        )),
        Err(e) => Err(Failure::usage(format!("{shown}: {e}"), None)),
    }
}

/// The node's options, and a warning about its key file to show, if any.
fn node_options(a: NodeArgs) -> Result<(NodeOptions, Option<String>), Failure> {
    let (keypair, warning) = match &a.key {
        Some(path) => {
            let key = pcp::load_or_create_key(path).map_err(|e| Failure {
                message: chain(&e),
                hint: hint::key(&e).map(str::to_owned),
                code: exit::FAILURE,
                kind: ErrorKind::Io.as_str(),
            })?;
            (Some(key.keypair), key.warning)
        }
        None => (None, None),
    };
    Ok((NodeOptions { listen: a.listen, bootstrap: a.bootstrap, keypair }, warning))
}

/// Consent: with `-y`, say what is coming and accept; otherwise ask on the terminal.
fn consent(
    rep: Arc<Reporter>,
    yes: bool,
    to_file: bool,
) -> impl FnOnce(&pcp::OfferInfo) -> std::io::Result<bool> + Send + 'static {
    move |offer| {
        // A short text is read, not saved: shown as it comes, like a message.
        if text::shown_without_asking(offer, to_file) {
            return Ok(true);
        }
        if yes {
            rep.emit_line(&format!("receiving {}", prompt::describe_short(offer)));
            return Ok(true);
        }
        rep.clear();
        prompt::confirm(&prompt::question(offer, rep.is_verbose()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, item 4: the error chain is printed cleaned at every level, whatever
    /// the layer below put in it (the `tar` crate quotes a header's raw bytes).
    #[test]
    fn a_failure_is_printed_without_escapes_at_any_level() {
        let hostile = "cksum for top/\x1b]52;c;cGNw\x07\x1b[2J\u{202E}x\nforged line";
        let f = Failure::from(pcp::Error::Consent(std::io::Error::other(hostile)));
        assert!(f.message.contains('\x1b'), "the chain holds the raw text: {:?}", f.message);
        let text = |json| {
            let mut out = Vec::new();
            f.write_to(&mut out, json);
            String::from_utf8(out).expect("UTF-8")
        };
        for json in [false, true] {
            let text = text(json);
            let bad = ['\x1b', '\x07', '\u{202E}'];
            assert!(!text.contains(bad), "{text:?}");
            assert_eq!(text.lines().count(), 1, "{text:?}");
        }
        assert_eq!(
            text(false),
            "pcp: error: cannot ask whether to accept: cksum for top/?]52;c;cGNw??[2J?x?forged line\n"
        );
        let mut out = Vec::new();
        Failure::usage("x", Some("try \x1b[2J".into())).write_to(&mut out, false);
        assert_eq!(out, b"pcp: error: x\nhint: try ?[2J\n");
    }

    /// Issue 15: `--many [N] PATH…` reads N when it is a number, else the first path.
    #[test]
    fn many_takes_a_count_or_leaves_the_path() {
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        let n = NonZeroU32::new;
        let got = |many, p: &[&str]| {
            many_and_paths(many, paths(p)).map_err(|f| f.message).expect("accepted")
        };
        assert_eq!(got(None, &["a"]), (None, paths(&["a"])));
        assert_eq!(got(Some(None), &["a"]), (Some(None), paths(&["a"])));
        assert_eq!(got(Some(Some("5".into())), &["a"]), (Some(n(5)), paths(&["a"])));
        assert_eq!(got(Some(Some("a".into())), &["b"]), (Some(None), paths(&["a", "b"])));
        assert_eq!(got(Some(Some("./5".into())), &[]), (Some(None), paths(&["./5"])));
        let zero = many_and_paths(Some(Some("0".into())), paths(&["a"]));
        assert!(zero.is_err_and(|f| f.code == exit::USAGE));
    }

    #[test]
    fn authentication_failures_exit_3() {
        for kind in [ErrorKind::WrongCode, ErrorKind::CodeBurnt, ErrorKind::Guessing] {
            assert_eq!(exit_code(kind), exit::AUTH, "{kind:?}");
        }
    }
}
