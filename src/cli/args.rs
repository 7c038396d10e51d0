//! The command line: the only module that knows clap.
//!
//! [`command`] is the single definition that `main`, the man pages and the shell
//! completions are all made from: `tests/generated.rs` includes this file by path, so
//! it uses nothing of the binary but clap and the `pcp` library.

use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand, ValueHint};
use libp2p::Multiaddr;

macro_rules! exit_status {
    () => {
        "\
EXIT STATUS:
    0    the transfer completed and every chunk verified
    1    the transfer or local I/O failed (nothing unverified was written)
    2    usage error
    3    authentication failed: wrong code, the sender saw too many wrong codes, or
         someone posing as the sender is guessing the code
    4    the receiver declined the offer (at its prompt: n, Enter or Ctrl-C)
    5    the peer did not turn up within --timeout
    130  interrupted (SIGINT)"
    };
}

const SEND_AFTER: &str = concat!(
    "\
EXAMPLES:
    pcp send report.pdf              send a file; prints the code to give the receiver
    pcp send photos/                 send a directory as a tar stream
    tar c dir | pcp send -           stream stdin of unknown length
    pcp send --text \"see you at 5\"   a text the receiver sees on its terminal
    git diff | pcp send --text       a text read from stdin (up to 1 MiB)
    pcp send --code CODE backup.img  use a code agreed beforehand (or PCP_CODE)

",
    exit_status!()
);

const NODE_AFTER: &str = "\
EXAMPLES:
    pcp node --listen /ip4/0.0.0.0/tcp/4001 --key ~/.config/pcp/node.key
    pcp node --listen /ip4/198.18.0.2/tcp/4001 --bootstrap /ip4/198.18.0.1/tcp/4001/p2p/12D3KooW…

EXIT STATUS:
    1    could not listen, or the key file could not be read or written
    2    usage error
    130  stopped by SIGINT (the normal way to stop a node)";

const CLEAN_AFTER: &str = "\
EXAMPLES:
    pcp clean                 list what interrupted runs left here, ask, remove
    pcp clean -y ~/Downloads  remove without asking

EXIT STATUS:
    0    nothing found, removed, or kept at the prompt's no
    1    DIR could not be read, or something could not be removed
    2    usage error, or no terminal to ask on without -y";

const RECEIVE_AFTER: &str = concat!(
    "\
EXAMPLES:
    pcp receive bubble-enemy-result-increase          save under the announced name
    pcp receive                                       ask for the code (Tab completes)
    pcp receive bubble enemy result increase > out    the raw bytes on stdout
    pcp receive CODE | tar x                          a directory as a tar stream
    pcp receive -o disk.img CODE                      write to disk.img via disk.img.pcp-part
    pcp receive -C /tmp CODE                          extract a directory under /tmp

",
    exit_status!()
);

/// Peer copy: send a stream, a file or a directory to a peer found by code words.
///
/// The sender prints a code of a few words; the receiver types it. The peers find each
/// other on the local network (mDNS), on the public IPFS DHT, or at a known address,
/// authenticate each other with SPAKE2 over the code, and move the data encrypted
/// (ChaCha20-Poly1305), compressed (zstd) and verified chunk by chunk (blake3), directly
/// from one to the other.
///
/// No server of pcp's own is involved, but by default more than the two peers is
/// contacted: besides mDNS on the local network, the public IPFS bootstrap nodes
/// (/dnsaddr/bootstrap.libp2p.io, through DNS) and other peers of the public DHT, where
/// the sender leaves a record under a key made of the code's first word and the time
/// (never the code itself) and the receiver looks it up; behind a NAT, a DHT node that
/// is a relay carries the handshake while a direct connection is punched (the data
/// only with --allow-relay). --bootstrap uses a group's own pcp node instead; --no-dht
/// contacts no DHT at all.
#[derive(Debug, Parser)]
#[command(name = "pcp", version, propagate_version = true, after_long_help = exit_status!())]
pub(crate) struct Cli {
    /// Print nothing on standard error but errors (before or after the subcommand).
    #[arg(short, long)]
    pub(crate) quiet: bool,

    /// More logging on standard error: -v for pcp's own, -vv for all of pcp's, -vvv for
    /// the network stack's too (before or after the subcommand).
    #[arg(short, long, action = ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Print one JSON object per event on standard error: send and receive only
    /// (before or after the subcommand).
    #[arg(long)]
    pub(crate) json: bool,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Send a stream, a file or a directory.
    ///
    /// With no PATH, or with `-`, pcp sends its standard input, of any length, without a
    /// temporary file. One file is sent as itself; a directory, or several paths, as a tar
    /// stream (modes, mtimes, symlinks as links, empty directories). The code and the
    /// matching receive command are printed on standard error; with neither mDNS nor the
    /// DHT (--no-mdns --no-dht), so are the addresses a receiver gives to --peer.
    #[command(after_long_help = SEND_AFTER)]
    Send(SendArgs),
    /// Receive what a sender offers, given its code.
    ///
    /// With standard output redirected, the bytes go there: the stream, the file's bytes,
    /// or a directory's tar stream. Otherwise a file is saved under its announced name and a
    /// directory is extracted, in the current directory or under `-C DIR`. Nothing is
    /// written outside the target, no entry may escape it, and nothing is overwritten
    /// without `--force`. The receiver is shown the offer and asked to confirm on the
    /// terminal unless `-y` is given.
    ///
    /// A lost connection is a pause: both sides look for each other again with the same
    /// code, authenticate afresh and continue where the receiver stands
    /// (`--reconnect-timeout`). A file is written through NAME.pcp-part, with a manifest
    /// of verified chunks beside it (NAME.pcp-part.manifest); a directory is extracted as
    /// its chunks verify into DIR/.pcp-ID.partial/ (with DIR/.pcp-ID.partial.manifest),
    /// and moved into place once all verified. Both
    /// stay when a run fails or is killed, and a later `pcp receive` of the same offer,
    /// with any code, resumes from them: the sender, rerun on the same data, reads and
    /// checks what the receiver holds and sends only the rest. A sender whose data changed
    /// is refused.
    ///
    /// Text (`pcp send --text`, or a short text on the sender's stdin) is shown on the
    /// terminal, cleaned of anything that would steer it, and without a question when
    /// it is at most 4 KiB; with standard output redirected its bytes go there.
    ///
    /// Without a code on the command line, pcp asks for it on the terminal, where Tab
    /// completes a word of it.
    #[command(after_long_help = RECEIVE_AFTER, visible_alias = "recv")]
    Receive(ReceiveArgs),
    /// Run a long-lived DHT, relay and AutoNAT node for a group's own infrastructure.
    ///
    /// A Kademlia server (protocol /ipfs/kad/1.0.0), a circuit relay v2 server and an
    /// AutoNAT server. Give its addresses to senders and receivers with --bootstrap (or
    /// PCP_BOOTSTRAP), and to other nodes to join them into one DHT. On start it prints
    /// each address it listens on, with its /p2p/ id, on standard output, one per line,
    /// then serves until interrupted.
    #[command(after_long_help = NODE_AFTER)]
    Node(NodeArgs),
    /// List and remove what interrupted receives left in a directory.
    ///
    /// A receiver that stops before the end keeps what it verified so that a rerun
    /// resumes: NAME.pcp-part with NAME.pcp-part.manifest and NAME.pcp-part.key for a
    /// file, DIR/.pcp-ID.partial/ with .pcp-ID.partial.manifest and .pcp-ID.partial.key
    /// for a folder. pcp clean lists those in DIR (not below it), with their sizes, and
    /// asks on the terminal before removing them. Only regular files and directories you
    /// own are listed; a symlink is never followed or removed. A transfer whose leftovers
    /// are removed starts over when it is received again.
    #[command(after_long_help = CLEAN_AFTER)]
    Clean(CleanArgs),
}

/// `pcp clean`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CleanArgs {
    /// The directory to clean (the current one if omitted).
    #[arg(value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub(crate) dir: Option<PathBuf>,

    /// Remove without asking.
    #[arg(short = 'y', long)]
    pub(crate) yes: bool,
}

/// Flags both sides share.
#[derive(Debug, Clone, Args)]
pub(crate) struct CommonArgs {
    /// More logging on standard error: -v for pcp's own, -vv for all of pcp's, -vvv for
    /// the network stack's too.
    #[arg(short, long, action = ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Do not look for peers on the local network (mDNS).
    #[arg(long, env = "PCP_NO_MDNS", global = true, value_parser = clap::builder::FalseyValueParser::new())]
    pub(crate) no_mdns: bool,

    /// Listen on this address instead of all interfaces on a random port (repeatable).
    ///
    /// For example /ip4/0.0.0.0/tcp/4001 or /ip4/0.0.0.0/udp/4001/quic-v1.
    #[arg(long, value_name = "MULTIADDR", global = true)]
    pub(crate) listen: Vec<Multiaddr>,

    /// Join the DHT through this node instead of the public IPFS bootstrap nodes
    /// (repeatable; PCP_BOOTSTRAP takes a comma-separated list).
    ///
    /// For example a group's own `pcp node`: /ip4/192.0.2.1/tcp/4001/p2p/12D3KooW…
    /// Without it, pcp uses the public IPFS list (/dnsaddr/bootstrap.libp2p.io/p2p/…).
    ///
    /// The peers meet on the Kademlia DHT under a provider record whose key is the
    /// sha2-256 multihash (0x12 0x20 + digest) of the string /pcp/{slot}/{channel}:
    /// slot is the unix time in seconds rounded down to a multiple of 300, channel the
    /// index of the code's first word in the BIP39 English list. The sender publishes
    /// the current slot's key, again at each new slot; the receiver looks up the current
    /// and the previous slot.
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "PCP_BOOTSTRAP",
        value_delimiter = ',',
        global = true
    )]
    pub(crate) bootstrap: Vec<Multiaddr>,

    /// Do not use the DHT: find the peer on the local network or at --peer only.
    #[arg(long, env = "PCP_NO_DHT", global = true, value_parser = clap::builder::FalseyValueParser::new())]
    pub(crate) no_dht: bool,

    /// Let the data go through a relay when no direct connection can be made.
    ///
    /// Public relays and `pcp node` allow 128 KiB per circuit, which is enough to
    /// authenticate but rarely for the data: without this flag pcp says so and stops
    /// rather than stall.
    #[arg(long, global = true)]
    pub(crate) allow_relay: bool,

    /// Print one JSON object per event on standard error (phases, peers found, the
    /// offer, progress every second, the totals), terminal or not.
    ///
    /// The offer has its name, kind (file, folder, stream or text), size and entries in
    /// fields of their own. A failure is an `error` event, with its kind (usage,
    /// wrong_code, declined, io, network, …), message, exit status and any hint, in
    /// place of the `pcp: error:` lines.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `pcp node`.
#[derive(Debug, Clone, Args)]
pub(crate) struct NodeArgs {
    /// Listen on this address (repeatable); the default is TCP and QUIC port 4001 on
    /// all IPv4 interfaces.
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) listen: Vec<Multiaddr>,

    /// Join other nodes into one DHT (repeatable; PCP_BOOTSTRAP takes a comma-separated
    /// list). Without it the node stands alone: others join it.
    #[arg(long, value_name = "MULTIADDR", env = "PCP_BOOTSTRAP", value_delimiter = ',')]
    pub(crate) bootstrap: Vec<Multiaddr>,

    /// Keep the node's identity (an ed25519 key) in FILE, so its /p2p/ id stays the same
    /// across restarts; created, with mode 0600, when missing.
    ///
    /// An existing FILE is used only if it is yours alone: a regular file (not a
    /// symlink) that you own, with one link, no write bit for group or others, and at
    /// most 4 KiB. One that group or others can read is used with a warning.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub(crate) key: Option<PathBuf>,

    /// Print nothing on standard error but errors.
    #[arg(short, long)]
    pub(crate) quiet: bool,

    /// More logging on standard error: -v for pcp's own, -vv for all of pcp's, -vvv for
    /// the network stack's too.
    #[arg(short, long, action = ArgAction::Count)]
    pub(crate) verbose: u8,
}

/// `pcp send`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SendArgs {
    /// Files or directories to send; none, or `-`, sends standard input.
    #[arg(value_name = "PATH", value_hint = ValueHint::AnyPath)]
    pub(crate) paths: Vec<PathBuf>,

    /// Send TEXT as text: the receiver sees it on its terminal instead of saving a
    /// file, without a question up to 4 KiB. Without TEXT, the text is read from
    /// standard input, up to 1 MiB of UTF-8.
    ///
    /// Without --text, a standard input that has ended within 4 KiB of UTF-8 by the
    /// time the receiver connects is offered as text too (`echo hi | pcp send`).
    #[arg(long, value_name = "TEXT", num_args = 0..=1, conflicts_with = "paths")]
    pub(crate) text: Option<Option<String>>,

    /// Use this code instead of making one up (word-word-word-word).
    #[arg(long, env = "PCP_CODE", hide_env_values = true)]
    pub(crate) code: Option<String>,

    /// How many words a new code has (at least 3; more words, more security).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(3..=24))]
    pub(crate) words: u8,

    /// zstd level for every chunk (1 fastest … 19 smallest); by default it adapts.
    ///
    /// Without --level, each chunk is compressed as much as the link leaves time for:
    /// not at all when the link is faster than compression, up to level 6 when it is
    /// slow. Data that does not compress is sent as it is either way.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub(crate) level: Option<i32>,

    /// Do not compress: for data known not to compress, or a very fast link.
    #[arg(long)]
    pub(crate) no_compress: bool,

    /// Chunk size in bytes (a power of two from 64 KiB to 8 MiB).
    #[arg(long, hide = true, default_value_t = pcp::DEFAULT_CHUNK_SIZE)]
    pub(crate) chunk_size: u32,

    /// Print nothing on standard error but errors, and the code when pcp made it up.
    #[arg(short, long)]
    pub(crate) quiet: bool,

    /// After a lost connection, how long to wait for the receiver to come back before
    /// giving up (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub(crate) reconnect_timeout: u64,

    /// Give up when no receiver has come within DURATION (90, 90s, 10m, 1h): exit 5.
    ///
    /// Without it the sender waits until interrupted. A receiver deciding at its prompt
    /// is not timed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<std::time::Duration>,

    /// Serve the same code to many receivers: until N of them have finished, or
    /// without N until Ctrl-C.
    ///
    /// Each receiver runs its own session, with its own key, progress and resume; the
    /// files are read again for each one. Wrong codes count against the code, whoever
    /// tries them. A receiver that fails is dropped and the others go on. Standard
    /// input and text are read once into one shared buffer of 64 MiB that every
    /// receiver reads at its own pace, from when N receivers are there (without N,
    /// from the first): the slowest one sets the pace (see
    /// --many-lag), and a receiver that comes once the stream's start has left the
    /// buffer (some 40 MiB or more in) is told it cannot have the stream. What follows
    /// --many is N when it is a number, else the first PATH (`--many ./5` sends a file
    /// named 5 until Ctrl-C).
    #[arg(long, value_name = "N", num_args = 0..=1, value_hint = ValueHint::AnyPath)]
    pub(crate) many: Option<Option<PathBuf>>,

    /// With --many and standard input or text: drop a receiver that keeps the others
    /// waiting for SECS seconds.
    ///
    /// When the shared buffer is full because one receiver is behind and takes
    /// nothing for SECS seconds, that receiver is dropped, with a message on both
    /// sides, and the others go on. A slow receiver that keeps taking sets the pace.
    #[arg(long, value_name = "SECS", default_value_t = 60, requires = "many")]
    pub(crate) many_lag: u64,

    /// Shared flags.
    #[command(flatten)]
    pub(crate) common: CommonArgs,
}

/// `pcp receive`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ReceiveArgs {
    /// The code, as word-word-word-word or as separate words; without it (and without
    /// --code), pcp asks for it on the terminal.
    #[arg(value_name = "CODE")]
    pub(crate) words: Vec<String>,

    /// The code, from a flag or the environment instead of the command line.
    #[arg(long, env = "PCP_CODE", hide_env_values = true, conflicts_with = "words")]
    pub(crate) code: Option<String>,

    /// Dial the sender at this address instead of (or as well as) searching for it.
    ///
    /// A sender with neither mDNS nor the DHT (--no-mdns --no-dht) prints the addresses
    /// to give here. With /p2p/PEER-ID at the end, only that peer is accepted.
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) peer: Vec<Multiaddr>,

    /// Write what is received to FILE (a directory's tar stream, too), through
    /// FILE.pcp-part, renamed into place only once everything verified; `-` is standard
    /// output.
    #[arg(short, long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub(crate) output: Option<PathBuf>,

    /// Save or extract into DIR instead of the current directory. DIR must exist: pcp
    /// does not create it.
    #[arg(short = 'C', long = "directory", value_name = "DIR", value_hint = ValueHint::DirPath, conflicts_with = "output")]
    pub(crate) directory: Option<PathBuf>,

    /// Accept the offer without asking.
    #[arg(short, long)]
    pub(crate) yes: bool,

    /// Overwrite existing files.
    #[arg(long)]
    pub(crate) force: bool,

    /// Print nothing on standard error but errors.
    #[arg(short, long)]
    pub(crate) quiet: bool,

    /// After a lost connection, how long to look for the sender again before giving up
    /// (seconds). What arrived stays in the .pcp-part file (unless it went to standard
    /// output), and a later run resumes from it.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub(crate) reconnect_timeout: u64,

    /// Give up when the sender has not been found within DURATION (90, 90s, 10m, 1h):
    /// exit 5.
    ///
    /// Without it the receiver looks until interrupted (after 30 s it says what may be
    /// wrong).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<std::time::Duration>,

    /// Shared flags.
    #[command(flatten)]
    pub(crate) common: CommonArgs,
}

/// `--timeout`'s value: a whole number of seconds, or of `ms`, `s`, `m`/`min` or `h`.
///
/// # Errors
/// Anything else, and zero.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration (90, 90s, 10m, 1h)"))?;
    let secs = |k: u64| n.checked_mul(k).map(std::time::Duration::from_secs);
    let d = match unit.trim() {
        "ms" => Some(std::time::Duration::from_millis(n)),
        "" | "s" | "sec" => secs(1),
        "m" | "min" => secs(60),
        "h" => secs(3600),
        _ => None,
    };
    match d {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err("the timeout must be more than zero".into()),
        None => Err(format!("{s:?} is not a duration (90, 90s, 10m, 1h)")),
    }
}

/// The clap command, for the man pages and the completions (`tests/generated.rs`
/// includes this file) and the definition's own check.
#[must_use]
#[allow(dead_code, reason = "the binary parses through `Cli::parse`")]
pub(crate) fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_cli() {
        command().debug_assert();
    }

    #[test]
    fn receive_takes_separate_words() {
        let cli = Cli::try_parse_from(["pcp", "receive", "a", "b", "c"]).expect("parses");
        let Command::Receive(args) = cli.command else { panic!("not receive") };
        assert_eq!(args.words, ["a", "b", "c"]);
    }

    #[test]
    fn no_dht_reads_the_environment_as_a_boolean() {
        // The environment is process-wide, so the env binding is checked, not set
        // (PCP_NO_DHT=1 itself is exercised by every process test: see clean_env).
        let cli = Cli::try_parse_from(["pcp", "send", "--no-dht"]).expect("parses");
        let Command::Send(args) = cli.command else { panic!("not send") };
        assert!(args.common.no_dht);
        let arg = command()
            .find_subcommand("send")
            .and_then(|s| s.get_arguments().find(|a| a.get_id() == "no_dht").cloned())
            .expect("--no-dht exists");
        assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new("PCP_NO_DHT")));
    }

    #[test]
    fn output_flags_go_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from(["pcp", "-v", "--json", "receive", "-v", "-q", "a-b-c"])
            .expect("parses");
        assert!(cli.json && cli.verbose == 1 && !cli.quiet);
        let Command::Receive(args) = cli.command else { panic!("not receive") };
        assert!(args.quiet && args.common.verbose == 1 && !args.common.json);
        let cli = Cli::try_parse_from(["pcp", "-q", "node"]).expect("parses");
        assert!(cli.quiet);
        assert!(Cli::try_parse_from(["pcp", "node", "--json"]).is_err(), "node has no --json");
    }

    /// Issue 15: `recv` is receive; `--text` takes a value or none, and no path.
    #[test]
    fn recv_and_text_parse() {
        let cli = Cli::try_parse_from(["pcp", "recv", "a-b-c"]).expect("recv parses");
        let Command::Receive(args) = cli.command else { panic!("not receive") };
        assert_eq!(args.words, ["a-b-c"]);
        let cli = Cli::try_parse_from(["pcp", "receive"]).expect("no code parses");
        let Command::Receive(args) = cli.command else { panic!("not receive") };
        assert!(args.words.is_empty() && args.code.is_none());
        let text = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Send(a)) => Ok(a.text),
            Ok(_) => panic!("not send"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(text(&["pcp", "send", "--text", "hi there"]), Ok(Some(Some("hi there".into()))));
        assert_eq!(text(&["pcp", "send", "--text"]), Ok(Some(None)));
        assert_eq!(text(&["pcp", "send", "f"]), Ok(None));
        assert_eq!(
            text(&["pcp", "send", "--text", "hi", "f"]),
            Err(clap::error::ErrorKind::ArgumentConflict)
        );
    }

    #[test]
    fn timeouts_read_as_durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2 min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        for bad in ["", "0", "x", "5d", "-1", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let cli =
            Cli::try_parse_from(["pcp", "receive", "--timeout", "30s", "a-b-c"]).expect("parses");
        let Command::Receive(args) = cli.command else { panic!("not receive") };
        assert_eq!(args.timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn words_below_three_are_refused() {
        assert!(Cli::try_parse_from(["pcp", "send", "--words", "2"]).is_err());
    }
}
