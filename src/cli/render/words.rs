//! The words of the terminal's lines that take more than a format string: totals,
//! notices, the wrong-code line, the offline line, and which addresses to print.

use indicatif::ProgressStyle;
use libp2p::Multiaddr;
use pcp::{OfferKind, Report, Role};

use super::Discovery;
use crate::cli::prompt::{human_bytes, peer_id};

/// A transfer's totals: `2.9 MiB in 1.2 s (2.4 MiB/s, 3.0 MiB on the wire)`.
pub(super) fn totals(r: &Report) -> String {
    let secs = r.elapsed.as_secs_f64().max(1e-6);
    // The rate of what moved in this run: bytes already held from an earlier one
    // (a resumed part file) took no time here.
    let moved = r.bytes.saturating_sub(r.stats.skipped);
    format!(
        "{} in {:.1} s ({}/s, {} on the wire)",
        human_bytes(r.bytes),
        secs,
        human_bytes((moved as f64 / secs) as u64),
        human_bytes(r.wire)
    )
}

/// What a sender sends, in words (`'report.pdf'`, `stdin`, `3 items`), from its
/// [`Event::Sending`](pcp::Event::Sending).
pub(super) fn sending_label(kind: OfferKind, name: &str, items: usize) -> String {
    match kind {
        OfferKind::Stream | OfferKind::Text => name.to_owned(),
        _ if items > 1 => format!("{items} items"),
        OfferKind::File | OfferKind::Folder => pcp::quote(name),
    }
}

/// What the receiver says when it writes an offer of `kind` to standard output.
pub(super) fn stdout_notice(kind: OfferKind) -> &'static str {
    match kind {
        OfferKind::Stream => "writing the stream to standard output; use -o FILE to save it",
        OfferKind::File => "writing the file's bytes to standard output; use -o or -C to save it",
        OfferKind::Text => "writing the text to standard output",
        OfferKind::Folder => {
            "writing the folder's tar stream to standard output; use -C DIR to extract it, \
             or -o FILE to save it"
        }
    }
}

/// The sender's line for a wrong code: where it came from (the count is per IPv4
/// address, IPv6 /64 or relay) and what is left of the budget.
pub(super) fn failed_attempt_line(
    peer: &libp2p::PeerId,
    from: &pcp::Origin,
    from_there: u32,
    left: u32,
    verbose: bool,
) -> String {
    let origin = match from {
        // The peer id is all there is; it is said below anyway.
        pcp::Origin::Peer(_) => "an unknown address".to_owned(),
        other => other.to_string(),
    };
    format!(
        "a wrong code was tried from {origin} by {} ({from_there} from there so far; the \
         code burns after {left} more)",
        peer_id(peer, verbose)
    )
}

/// The progress bar's look, with a total or without.
pub(super) fn bar_style(total: Option<u64>) -> ProgressStyle {
    let template = match total {
        Some(_) => "{bar:30} {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        None => "{spinner} {bytes} {bytes_per_sec} {elapsed}",
    };
    ProgressStyle::with_template(template).expect("static template is valid")
}

/// What a side says when no DHT bootstrap node could be reached: where it still looks,
/// as it is (nothing but `--peer` under `--no-mdns`).
pub(super) fn offline_line(total: usize, d: Option<Discovery>) -> String {
    let head = format!("could not reach any of the {total} DHT bootstrap node(s)");
    match d {
        Some(Discovery { mdns: true, peers: true, .. }) => {
            format!("{head}; looking on the local network and at the --peer address(es) only")
        }
        Some(Discovery { mdns: false, peers: true, .. }) => {
            format!("{head}, and mDNS is off: only the --peer address(es) are left to try")
        }
        Some(Discovery { mdns: false, role: Role::Sender, .. }) => format!(
            "{head}, and mDNS is off: nothing else can find this sender; a receiver can \
             reach it only with --peer and an address of this computer"
        ),
        Some(Discovery { mdns: false, .. }) => format!(
            "{head}, and mDNS is off: there is nothing else to look on; give the sender's \
             address with --peer"
        ),
        _ => format!("{head}; looking on the local network only"),
    }
}

/// `listening on ADDR: give it to pcp receive --peer`.
pub(super) fn listening_line(addr: &Multiaddr) -> String {
    format!("listening on {addr}: give it to pcp receive --peer")
}

/// Whether another host could dial `addr`: not a loopback, unspecified or IPv6
/// link-local address (that one needs a zone a multiaddr cannot carry), nor libp2p's
/// in-process memory transport. Names (`/dns/…`) count as reachable.
pub(super) fn reachable_from_elsewhere(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        Protocol::Ip6(ip) => {
            !ip.is_loopback() && !ip.is_unspecified() && (ip.segments()[0] & 0xffc0) != 0xfe80
        }
        Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_) => true,
        _ => false,
    })
}

/// The resume accounting of one side: the counters that side keeps.
pub(super) fn stats_fields(r: &Report) -> Vec<(&'static str, u64)> {
    let s = &r.stats;
    match r.role {
        Role::Sender => vec![
            ("sent", s.sent),
            ("resent", s.resent),
            ("skipped", s.skipped),
            ("reconnects", s.reconnects),
        ],
        Role::Receiver => {
            vec![("received", s.received), ("skipped", s.skipped), ("reconnects", s.reconnects)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_names_what_it_sent() {
        assert_eq!(sending_label(OfferKind::Stream, "stdin", 1), "stdin");
        assert_eq!(sending_label(OfferKind::Text, "text", 1), "text");
        assert_eq!(sending_label(OfferKind::File, "report.pdf", 1), "'report.pdf'");
        assert_eq!(sending_label(OfferKind::Folder, "photos", 1), "'photos'");
        assert_eq!(sending_label(OfferKind::Folder, "2 items", 2), "2 items");
        assert_eq!(sending_label(OfferKind::File, "a\x1b[2Jb", 1), "'a?[2Jb'");
        assert_eq!(sending_label(OfferKind::File, "a', 'b", 1), r"'a\', \'b'");
    }

    #[test]
    fn a_stream_is_not_told_to_use_a_directory() {
        // A stream has no name to save under -C DIR.
        assert!(stdout_notice(OfferKind::Stream).starts_with("writing the stream "));
        assert!(!stdout_notice(OfferKind::Stream).contains("-C"));
    }

    #[test]
    fn addresses_another_host_can_dial() {
        let yes =
            ["/ip4/198.18.0.1/tcp/1", "/ip6/2001:db8::1/udp/1/quic-v1", "/dns/a.example/tcp/1"];
        let no = [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/0.0.0.0/tcp/1",
            "/ip6/::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/memory/1",
        ];
        for a in yes {
            assert!(reachable_from_elsewhere(&a.parse().expect("multiaddr")), "{a}");
        }
        for a in no {
            assert!(!reachable_from_elsewhere(&a.parse().expect("multiaddr")), "{a}");
        }
    }
}
