//! pcp: peer copy for the Unix shell.
//!
//! ```text
//! cli ── parses flags; the only place that knows clap
//!  │
//!  ├─ code        BIP39 code words: generate, parse, channel, password
//!  ├─ node        owns the libp2p Swarm in one task; a cloneable handle sends it commands
//!  ├─ session     over one libp2p stream: hello, SPAKE2 + key confirmation, then frames
//!  ├─ framing     ChaCha20-Poly1305 frames: counter nonces, last-frame flag
//!  ├─ pipeline    source → chunk → blake3 → zstd → seal   /   open → unzstd → check → sink
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
pub mod pipeline;

pub use error::{Error, Result};
