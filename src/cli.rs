//! The command line: the only module that knows clap.
//!
//! `pcp::cli::command()` is the single definition that `main`, the man pages and the
//! shell completions (see `tests/generated.rs`) are all made from.

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
    3    authentication failed: wrong code, or the sender saw too many wrong codes
    4    the receiver declined the offer
    130  interrupted (SIGINT)"
    };
}

const SEND_AFTER: &str = concat!(
    "\
EXAMPLES:
    pcp send report.pdf              send a file; prints the code to give the receiver
    pcp send photos/                 send a directory as a tar stream
    tar c dir | pcp send -           stream stdin of unknown length
    pcp send --code CODE backup.img  use a code agreed beforehand (or PCP_CODE)

",
    exit_status!()
);

const RECEIVE_AFTER: &str = concat!(
    "\
EXAMPLES:
    pcp receive bubble-enemy-result-increase          save under the announced name
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
/// other on the local network (mDNS) or at a known address, authenticate each other with
/// SPAKE2 over the code, and move the data encrypted (ChaCha20-Poly1305), compressed
/// (zstd) and verified chunk by chunk (blake3). No server is involved.
#[derive(Debug, Parser)]
#[command(name = "pcp", version, propagate_version = true, after_long_help = exit_status!())]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a stream, a file or a directory.
    ///
    /// With no PATH, or with `-`, pcp sends its standard input, of any length, without a
    /// temporary file. One file is sent as itself; a directory, or several paths, as a tar
    /// stream (modes, mtimes, symlinks as links, empty directories). The code and the
    /// matching receive command are printed on standard error.
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
    /// of verified chunks beside it (NAME.pcp-part.manifest); a directory's tar stream is
    /// first staged whole in DIR/.pcp-ID.tar.pcp-part, then extracted once verified. Both
    /// stay when a run fails or is killed, and a later `pcp receive` of the same offer,
    /// with any code, resumes from them: the sender, rerun on the same data, reads and
    /// checks what the receiver holds and sends only the rest. A sender whose data changed
    /// is refused.
    #[command(after_long_help = RECEIVE_AFTER)]
    Receive(ReceiveArgs),
}

/// Flags both sides share.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Print nothing on standard error but errors (and the code, when pcp made it up).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// More logging on standard error: -v for pcp's own, -vv for the network stack too.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Do not look for peers on the local network (mDNS).
    #[arg(long, env = "PCP_NO_MDNS", global = true)]
    pub no_mdns: bool,

    /// After a lost connection, how long to look for the peer again before giving up
    /// (seconds). With -o the part file is kept, and a later run resumes from it.
    #[arg(long, value_name = "SECS", default_value_t = 600, global = true)]
    pub reconnect_timeout: u64,

    /// Listen on this address instead of all interfaces on a random port (repeatable).
    ///
    /// For example /ip4/0.0.0.0/tcp/4001 or /ip4/0.0.0.0/udp/4001/quic-v1.
    #[arg(long, value_name = "MULTIADDR", global = true)]
    pub listen: Vec<Multiaddr>,
}

/// `pcp send`.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// Files or directories to send; none, or `-`, sends standard input.
    #[arg(value_name = "PATH", value_hint = ValueHint::AnyPath)]
    pub paths: Vec<PathBuf>,

    /// Use this code instead of making one up (word-word-word-word).
    #[arg(long, env = "PCP_CODE", hide_env_values = true)]
    pub code: Option<String>,

    /// How many words a new code has (at least 3; more words, more security).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(3..=24))]
    pub words: u8,

    /// zstd compression level (1 fastest … 19 smallest).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,

    /// Do not compress: for data known not to compress, or a very fast link.
    #[arg(long)]
    pub no_compress: bool,

    /// Chunk size in bytes (a power of two from 64 KiB to 8 MiB).
    #[arg(long, hide = true, default_value_t = crate::pipeline::DEFAULT_CHUNK_SIZE)]
    pub chunk_size: u32,

    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `pcp receive`.
#[derive(Debug, Clone, Args)]
pub struct ReceiveArgs {
    /// The code, as word-word-word-word or as separate words.
    #[arg(value_name = "CODE", required_unless_present = "code")]
    pub words: Vec<String>,

    /// The code, from a flag or the environment instead of the command line.
    #[arg(long, env = "PCP_CODE", hide_env_values = true, conflicts_with = "words")]
    pub code: Option<String>,

    /// Dial the sender at this address instead of (or as well as) searching for it.
    ///
    /// The sender prints its addresses with -v. With /p2p/PEER-ID at the end, only that
    /// peer is accepted.
    #[arg(long, value_name = "MULTIADDR")]
    pub peer: Vec<Multiaddr>,

    /// Write what is received to FILE (a directory's tar stream, too), through
    /// FILE.pcp-part, renamed into place only once everything verified.
    #[arg(short, long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub output: Option<PathBuf>,

    /// Save or extract into DIR instead of the current directory.
    #[arg(short = 'C', long = "directory", value_name = "DIR", value_hint = ValueHint::DirPath, conflicts_with = "output")]
    pub directory: Option<PathBuf>,

    /// Accept the offer without asking.
    #[arg(short, long)]
    pub yes: bool,

    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,

    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The clap command, for `main`, the man pages and the completions.
#[must_use]
pub fn command() -> clap::Command {
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
    fn words_below_three_are_refused() {
        assert!(Cli::try_parse_from(["pcp", "send", "--words", "2"]).is_err());
    }
}
