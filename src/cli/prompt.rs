//! Asking the user on the terminal, and describing offers in words.
//!
//! Peer names in an offer's description are [`pcp::quote`]d (`'name'`, with `\'` and
//! `\\` inside), so that `a', 'b` reads as one name; the question passes through
//! [`pcp::printable`] on its way to `/dev/tty`.

use std::io::{BufRead, BufReader, Write};
use std::sync::{Mutex, PoisonError, mpsc};

use pcp::{OfferInfo, OfferKind};

pub(crate) use pcp::sanitize;
use pcp::{printable, quote};

/// The question being asked, if one is: [`interrupt`] answers it "no".
static ASKING: Mutex<Option<mpsc::SyncSender<std::io::Result<bool>>>> = Mutex::new(None);

/// Whether a question is on the terminal awaiting its answer, and whether pcp stopped
/// waiting for answers ([`abandon`]), after which none is shown. Apart from
/// [`ASKING`], which a signal handler takes: writing the question under this lock
/// (a terminal stopped with Ctrl-S blocks the write) never holds up [`interrupt`].
static QUESTION: Mutex<Question> = Mutex::new(Question { shown: false, abandoned: false });

struct Question {
    shown: bool,
    abandoned: bool,
}

fn on_screen() -> std::sync::MutexGuard<'static, Question> {
    QUESTION.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Asks a yes/no question on the controlling terminal (`/dev/tty`), not on
/// stdin/stdout, which may carry data. Blocking: the engine calls consent off the
/// reactor.
///
/// Ctrl-C while the question waits is a "no" ([`interrupt`]): a person who stops a
/// prompt declines the offer, and the sender is told so, not that the transfer was
/// cancelled.
///
/// # Errors
/// When there is no controlling terminal.
pub(crate) fn confirm(question: &str) -> std::io::Result<bool> {
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let mut w = &tty;
    // Two answers at most: the reader's and the interrupt's.
    let (tx, rx) = mpsc::sync_channel(2);
    {
        // Under the lock [`abandon`] takes: a question it gave up on before it was
        // shown is never shown, after pcp's last word.
        let mut q = on_screen();
        if q.abandoned {
            return Ok(false);
        }
        write!(w, "{} [y/N] ", printable(question))?;
        w.flush()?;
        q.shown = true;
    }
    *ASKING.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx.clone());
    // The read runs on a thread of its own, which a signal cannot wake: on Ctrl-C the
    // answer comes from `interrupt`, and the thread is left blocked until pcp exits.
    let reader = tty.try_clone()?;
    std::thread::spawn(move || {
        let mut line = String::new();
        let answer = BufReader::new(&reader)
            .read_line(&mut line)
            .map(|_| matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"));
        let _ = tx.send(answer);
    });
    let answer = rx.recv().unwrap_or(Ok(false));
    let interrupted = ASKING.lock().unwrap_or_else(PoisonError::into_inner).take().is_none();
    let mut q = on_screen();
    // Ended already if `abandon` came first.
    if std::mem::replace(&mut q.shown, false) && interrupted {
        // The terminal echoed `^C` after the question: end that line.
        let _ = writeln!(w);
    }
    answer
}

/// Answers the question being asked "no", as Ctrl-C at the prompt means; returns
/// whether one was being asked (otherwise the signal is the caller's to handle).
pub(crate) fn interrupt() -> bool {
    let asking = ASKING.lock().unwrap_or_else(PoisonError::into_inner).take();
    asking.is_some_and(|tx| tx.send(Ok(false)).is_ok())
}

/// Leaves the question being asked, if one is, unanswered: the engine gave up on it
/// (the sender left). Its line on the terminal is ended, so that what pcp says next
/// starts a line of its own; the thread reading the answer stays blocked until pcp
/// exits, and a later Ctrl-C is a signal again, not a "no".
pub(crate) fn abandon() {
    let mut q = on_screen();
    q.abandoned = true;
    ASKING.lock().unwrap_or_else(PoisonError::into_inner).take();
    if std::mem::replace(&mut q.shown, false)
        && let Ok(tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty")
    {
        let _ = writeln!(&tty);
    }
}

/// Whether a controlling terminal can be opened to ask the user.
#[must_use]
pub(crate) fn has_tty() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").is_ok()
}

/// Human-readable byte count (binary units).
#[must_use]
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// Past this many top-level names, only those starting with a dot are listed by name.
const LISTED: usize = 12;

/// An offer in a few words: `file 'x', 1.0 MiB`, `a stream`, `folder 'album', 12 entries,
/// 9.0 MiB`. Every top-level name a folder would create is listed (past a screenful,
/// every dot-name and the count of the rest), with what it is (`folders 'a', 'b'`;
/// `file 'a', folder 'b'` when they differ), and dot-names are flagged: a `.bashrc`
/// received into a home directory must not hide behind "and 3 more". Peer strings are
/// sanitized and quoted.
pub(crate) fn describe_short(offer: &OfferInfo) -> String {
    let size = offer.size.map(|s| format!(", {}", human_bytes(s))).unwrap_or_default();
    match offer.kind {
        OfferKind::Stream => "a stream".to_owned(),
        OfferKind::Text => format!("text{size}"),
        OfferKind::File => format!("file {}{size}", quote(&offer.name)),
        OfferKind::Folder => {
            let count = offer.files.map(|n| format!(", {n} entries")).unwrap_or_default();
            format!("{}{count}{size}", describe_entries(&offer.entries, &offer.kinds))
        }
    }
}

/// A folder offer's top-level names, each with what it is.
fn describe_entries(entries: &[String], kinds: &[pcp::EntryKind]) -> String {
    // The receiver refuses an offer whose kinds are not parallel to its names; a
    // library caller's hand-made OfferInfo is described as plainly as it can be.
    let kind_of = |i: usize| kinds.get(i).copied();
    let uniform = entries.len() == kinds.len() && kinds.windows(2).all(|w| w[0] == w[1]);
    let word = |kind: Option<pcp::EntryKind>, plural: bool| {
        let w = match kind {
            Some(pcp::EntryKind::File) => "file",
            Some(pcp::EntryKind::Folder) => "folder",
            _ => "entry",
        };
        match (plural, w) {
            (false, w) => w.to_owned(),
            (true, "entry") => "entries".to_owned(),
            (true, w) => format!("{w}s"),
        }
    };
    let shown = |i: usize, e: &String| {
        let hidden = if e.starts_with('.') { " (hidden)" } else { "" };
        let prefix = if uniform { String::new() } else { format!("{} ", word(kind_of(i), false)) };
        format!("{prefix}{}{hidden}", quote(e))
    };
    let mut listed: Vec<String> = if entries.len() <= LISTED {
        entries.iter().enumerate().map(|(i, e)| shown(i, e)).collect()
    } else {
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.starts_with('.'))
            .map(|(i, e)| shown(i, e))
            .collect()
    };
    let rest = entries.len() - listed.len();
    if rest > 0 {
        listed.push(format!("{rest} other name{}", if rest == 1 { "" } else { "s" }));
    }
    if uniform {
        let plural = entries.len() > 1;
        format!("{} {}", word(kind_of(0), plural), listed.join(", "))
    } else {
        listed.join(", ")
    }
}

/// Who offers: the address the connection came from and a short peer id (the whole id
/// with `-v`).
pub(crate) fn who(offer: &OfferInfo, verbose: bool) -> String {
    let id = peer_id(&offer.peer, verbose);
    match offer.ip() {
        Some(ip) => format!("{ip} ({id})"),
        None => id,
    }
}

/// A peer id as a person reads it: its first 8 and last 4 characters (`12D3KooW…5p7B`),
/// enough to tell two peers apart and not wrap a line; the whole id with `-v`.
pub(crate) fn peer_id(peer: &libp2p::PeerId, verbose: bool) -> String {
    let id = peer.to_string();
    if verbose || id.len() < 16 { id } else { format!("{}…{}", &id[..8], &id[id.len() - 4..]) }
}

/// The consent question.
pub(crate) fn question(offer: &OfferInfo, verbose: bool) -> String {
    format!("Accept {} from {}?", describe_short(offer), who(offer, verbose))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(entries: &[&str]) -> OfferInfo {
        OfferInfo {
            kind: OfferKind::Folder,
            name: "x".into(),
            size: Some(9 << 20),
            entries: entries.iter().map(|e| (*e).to_owned()).collect(),
            kinds: vec![pcp::EntryKind::Folder; entries.len()],
            files: Some(12),
            peer: libp2p::identity::Keypair::generate_ed25519().public().to_peer_id(),
            addr: Some("/ip4/198.18.0.1/tcp/4001".parse().expect("multiaddr")),
        }
    }

    /// Issue 9, item 11: no top-level name hides behind "and N more".
    #[test]
    fn every_top_level_name_is_listed_and_dot_names_are_flagged() {
        let d = describe_short(&folder(&["album", "notes", "x", ".bashrc"]));
        assert_eq!(d, "folders 'album', 'notes', 'x', '.bashrc' (hidden), 12 entries, 9.0 MiB");
        let many: Vec<String> = (0..40).map(|i| format!("f{i}")).collect();
        let mut names: Vec<&str> = many.iter().map(String::as_str).collect();
        names.push(".ssh");
        let d = describe_short(&folder(&names));
        assert!(d.starts_with("folders '.ssh' (hidden), 40 other names"), "{d}");
    }

    /// Issue 14, item 4: a name holding `', '` is one quoted name, not two.
    #[test]
    fn a_name_cannot_read_as_two() {
        let d = describe_short(&folder(&["a', 'b", "c\\"]));
        assert_eq!(d, r"folders 'a\', \'b', 'c\\', 12 entries, 9.0 MiB");
        let mut file = folder(&[]);
        file.kind = OfferKind::File;
        file.name = "x', 'y.txt".into();
        assert_eq!(describe_short(&file), r"file 'x\', \'y.txt', 9.0 MiB");
    }

    /// Issue 14, item 8: the prompt says what each top-level entry is.
    #[test]
    fn each_top_level_entry_says_what_it_is() {
        let mut o = folder(&["notes.txt", "album"]);
        o.kinds = vec![pcp::EntryKind::File, pcp::EntryKind::Folder];
        assert_eq!(describe_short(&o), "file 'notes.txt', folder 'album', 12 entries, 9.0 MiB");
        let mut one = folder(&["a.txt"]);
        one.kinds = vec![pcp::EntryKind::File];
        assert_eq!(describe_short(&one), "file 'a.txt', 12 entries, 9.0 MiB");
        let mut files = folder(&["a", "b"]);
        files.kinds = vec![pcp::EntryKind::File; 2];
        assert_eq!(describe_short(&files), "files 'a', 'b', 12 entries, 9.0 MiB");
        assert_eq!(describe_short(&folder(&["album"])), "folder 'album', 12 entries, 9.0 MiB");
    }

    /// Issue 10, item 8: the address and a short id, the whole id with -v.
    #[test]
    fn the_offer_says_where_it_comes_from() {
        let o = folder(&["a"]);
        let id = o.peer.to_string();
        let short = who(&o, false);
        assert!(
            short.starts_with("198.18.0.1 (12D3KooW")
                && short.ends_with(&format!("{})", &id[id.len() - 4..])),
            "{short}"
        );
        assert!(short.len() < 40, "{short}");
        assert_eq!(who(&o, true), format!("198.18.0.1 ({id})"));
    }

    #[test]
    fn byte_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1 << 20), "1.0 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
