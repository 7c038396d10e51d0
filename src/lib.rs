//! pcp: peer copy for the Unix shell.
//!
//! ```text
//! cli ── parses flags; the only place that knows clap
//!  │
//!  ├─ code        BIP39 code words: generate, parse, channel, password
//!  ├─ node        owns the libp2p Swarm in one task; a cloneable handle sends it commands
//!  │   └─ dht     Kademlia rendezvous: provider records per code channel and time slot
//!  ├─ server      `pcp node`: DHT server, relay v2 server, AutoNAT server
//!  ├─ session     over one libp2p stream: hello, SPAKE2 + key confirmation, then frames
//!  ├─ framing     ChaCha20-Poly1305 frames: counter nonces, last-frame flag
//!  ├─ message     what the frames carry: offer, chunk, end, …
//!  ├─ pipeline    source → chunk → blake3 → zstd → seal   /   open → unzstd → check → sink
//!  ├─ source/sink stdin, file, tar  /  stdout, file via .pcp-part, staged extraction
//!  ├─ transfer    the two sides, from code to last byte
//!  ├─ archive     tar pack and safe unpack
//!  └─ progress    renders library events; the only place that knows indicatif
//! ```
//!
//! Library code returns typed errors and never prints; `main.rs` maps [`Error`] to exit
//! codes.

pub mod archive;
pub mod cli;
pub mod code;
pub mod error;
pub mod framing;
pub mod message;
pub mod node;
pub mod pipeline;
pub mod progress;
pub mod resume;
pub mod server;
pub mod session;
pub mod sink;
pub mod source;
pub mod term;
pub mod transfer;

pub use error::{Error, Result};

/// Runs one parsed command line to completion.
///
/// # Errors
/// Whatever the subcommand met; [`Error::exit_code`] says how to exit.
pub async fn run(cli: cli::Cli, reporter: &progress::Reporter) -> Result<()> {
    match cli.command {
        cli::Command::Send(args) => transfer::send(&args, reporter).await,
        cli::Command::Receive(args) => transfer::receive(&args, reporter).await,
        cli::Command::Node(args) => server::run(&args, reporter).await,
    }
}
