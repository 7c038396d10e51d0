//! Helpers for process-level tests of the real `pcp` binary.
//!
//! - [`netns`]: [`Lan`] builds a virtual LAN out of network namespaces (`ip netns`):
//!   each [`Host`] gets `eth0` with an address in 198.18.0.0/24 (RFC 2544 benchmarking
//!   space, never routed), joined by a veth pair (two hosts) or a bridge in a hub
//!   namespace (more). No namespace of a `Lan` has a default route, so nothing a test
//!   runs can leave the host. [`Netns`] is one namespace, for tests that build other
//!   topologies (`tests/nat.rs`). Faults on a host's `eth0`: [`Host::rate_limit`] (a
//!   token bucket on its egress, so a transfer lasts long enough to be interrupted),
//!   [`Host::link_down`] / [`Host::link_up`] / [`Host::pull_cable`], and
//!   [`Host::change_addr`].
//! - [`wan`]: [`Wan`] joins two hosts through a router namespace whose [`DelayLine`]
//!   (`delay`) forwards every Ethernet frame a set time later, per direction, with an
//!   optional deterministic loss: a round trip of hundreds of milliseconds without
//!   netem. [`in_netns`] runs a closure on a thread inside a namespace.
//! - [`process`]: [`Host::cmd`] runs `pcp` inside a host with a clean environment
//!   ([`clean_env`]) and no terminal. [`ChildGuard`] kills and reaps its child on drop;
//!   [`StderrLines`] reads a child's stderr on a thread; [`Proc`] is both; every wait
//!   has a deadline ([`TIMEOUT`], [`wait_with_timeout`], [`finish_all`], …). To act at
//!   some point of a transfer, [`wait_for_len`] polls the size of what the receiver has
//!   written.
//! - [`pcp`]: pcp's exit statuses, the `.pcp-part` files, and starting a sender
//!   ([`start_sender`]) and a receiver ([`start_receiver`]) on a host.
//! - [`pty`]: [`Pty`] runs `pcp` on a terminal of its own (script(1)), for what only a
//!   terminal shows: the consent prompt, the status spinner and the progress bar.
//! - [`data`]: [`random_bytes`], [`make_sample_tree`] and [`assert_trees_eq`] make and
//!   check data.
//!
//! The namespace helpers need root and `ip` (iproute2), and refuse to run in a network
//! namespace with a default route. So the tests come in two tiers: those that make
//! namespaces are `#[ignore]`d, and plain `cargo test` runs only the others; the whole
//! set runs as root under `tests/isolated cargo test --locked -- --include-ignored`.
#![allow(dead_code)] // each test binary uses a different subset
#![allow(unreachable_pub)] // a test crate has no public API; `pub` shares helpers across its modules

mod data;
mod delay;
mod netns;
mod pcp;
mod process;
mod pty;
mod wan;

// Flat re-exports keep call sites short (`util::Lan`); like the dead code above, the
// ones a test binary does not use would warn.
#[allow(unused_imports)]
pub use data::{
    MIB, assert_bytes_eq, assert_trees_eq, chmod, data_len, file_bytes_under, list_dir,
    make_sample_tree, random_bytes, read, tree_diff, write_random_file, write_random_tree,
};
#[allow(unused_imports)]
pub use delay::{Counters, DelayLine, Link, in_netns};
#[allow(unused_imports)]
pub use netns::{Host, Lan, Netns, require_isolated};
#[allow(unused_imports)]
pub use pcp::{
    CODE, arg, exit, key_path, manifest_path, part_path, spawn_sender, start_receiver, start_sender,
};
#[allow(unused_imports)]
pub use process::{
    ChildGuard, Proc, StderrLines, TIMEOUT, clean_env, finish_all, pcp_bin, spawn_endless_writer,
    stdin_from, stdout_to, try_wait_timeout, wait_for_code, wait_for_len, wait_until,
    wait_with_timeout,
};
#[allow(unused_imports)]
pub use pty::{Pty, plain};
#[allow(unused_imports)]
pub use wan::Wan;
