//! What the cases send: offers (at the limits, with hostile names) and tar streams
//! generated as they are read, never held whole.

use super::*;

/// A top-level name with escape sequences, for [`AsSender::EscapeTarNames`].
pub(super) const ESCAPE_TOP: &str = "\u{1b}[31mtop\u{1b}]0;title\u{7}";

pub(super) fn folder(name: &str, files: Option<u64>) -> Offer {
    Offer {
        kind: Kind::Archive,
        name: name.into(),
        size: None,
        entries: vec![name.into()],
        chunk_size: DEFAULT_CHUNK_SIZE,
        files,
        kinds: vec![TopKind::Folder],
    }
}

/// `offer` with the length of `tar` as its size: the receiver refuses a folder offer
/// without a size (issue 14, item 3), and the cases not about the size tell the truth.
pub(super) fn sized(offer: Offer, tar: &TarGen) -> Offer {
    Offer { size: Some(tar.len()), ..offer }
}

/// An archive Offer of exactly [`MAX_OFFER_LEN`] bytes announcing [`MAX_ENTRIES`]
/// names, all distinct.
pub(super) fn offer_at_limit() -> Offer {
    let mut offer = folder("limit", Some(MAX_ENTRIES as u64));
    // 14-byte names: with their length byte and their kind, 16 bytes an entry, 1 MiB in
    // all; the rest of the Offer is taken back from the first few names.
    offer.entries = (0..MAX_ENTRIES).map(|i| format!("e{i:013}")).collect();
    offer.kinds = vec![TopKind::Folder; MAX_ENTRIES];
    // The length of the tar it sends (one directory: the same for any of the names),
    // before the names are shortened to bring the Offer to the limit.
    offer.size = Some(TarGen::one_dir(&offer.entries[0]).len());
    let body = |o: &Offer| Control::Offer(o.clone()).encode().len() - 1;
    let over = body(&offer) - MAX_OFFER_LEN;
    for name in offer.entries.iter_mut().take(over) {
        // Dropping the first zero keeps the names distinct: they differ in length.
        name.remove(1);
    }
    debug_assert_eq!(body(&offer), MAX_OFFER_LEN);
    offer
}

/// An archive Offer's plaintext (tag included) announcing `entries` empty names,
/// written as bytes: 16 million entries must not cost 16 million strings here.
pub(super) fn raw_offer(entries: u64) -> Vec<u8> {
    let mut b = vec![message::tag::OFFER];
    varint(&mut b, 2); // Kind::Archive
    varint(&mut b, 1);
    b.push(b'x'); // name
    b.push(0); // size: None
    varint(&mut b, entries);
    b.resize(b.len() + entries as usize, 0); // each entry: the empty string
    varint(&mut b, u64::from(DEFAULT_CHUNK_SIZE));
    b.push(0); // files: None
    // kinds: a folder for each entry, as decoding requires; over the limit the entries
    // are refused before the kinds are read, so none are written and the Offer stays
    // one plaintext long.
    let kinds = if entries <= MAX_ENTRIES as u64 { entries } else { 0 };
    varint(&mut b, kinds);
    b.resize(b.len() + kinds as usize, 1); // TopKind::Folder
    b
}

/// postcard's unsigned varint (LEB128).
pub(super) fn varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

// ---------------------------------------------------------------------------------------
// Tar streams, generated as they are read.

pub(super) const BLOCK: usize = 512;

/// A tar header block for `name` (raw bytes, at most 100, `..` and escapes allowed).
pub(super) fn tar_header(kind: tar::EntryType, name: &[u8], size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
    h.set_mtime(0);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// A header for `name`, after a GNU long-name entry when it does not fit in 100 bytes.
pub(super) fn long_header(kind: tar::EntryType, name: &str) -> Vec<u8> {
    if name.len() <= 100 {
        return tar_header(kind, name.as_bytes(), 0);
    }
    let mut out = tar_header(tar::EntryType::GNULongName, b"././@LongLink", name.len() as u64 + 1);
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
    out.extend_from_slice(&tar_header(kind, &name.as_bytes()[..100], 0));
    out
}

/// The header(s) of level `level` of chain `chain` in [`Piece::Deep`]: a directory for
/// levels below [`DEEP_LEVELS`], the file `f` at the bottom.
pub(super) fn deep_header(chain: u64, level: u64) -> Vec<u8> {
    let mut name = format!("deep/c{chain:03}");
    for _ in 0..level.min(DEEP_LEVELS - 1) {
        name.push_str("/d");
    }
    let kind = if level < DEEP_LEVELS {
        name.push('/');
        tar::EntryType::Directory
    } else {
        name.push_str("/f");
        tar::EntryType::Regular
    };
    long_header(kind, &name)
}

pub(super) enum Piece {
    Bytes(Vec<u8>),
    Zeros(u64),
    /// `deep/c000/d/…` chains of directories with a file `f` at the bottom of each,
    /// made one header at a time: chain `chain`, at `level` (`levels` is the file).
    Deep {
        chain: u64,
        level: u64,
    },
    /// Empty files `dir/f000000`, … made one header at a time.
    Files {
        dir: String,
        next: u64,
        count: u64,
    },
}

/// A tar stream made piece by piece as it is read, so that a 1 GiB entry or 100,000
/// headers are never in memory at once.
pub(crate) struct TarGen {
    pieces: VecDeque<Piece>,
    /// The bytes of the current piece, and how many of them were read.
    pending: Vec<u8>,
    at: usize,
}

impl TarGen {
    pub(super) fn new(pieces: Vec<Piece>) -> TarGen {
        TarGen { pieces: pieces.into(), pending: Vec::new(), at: 0 }
    }

    pub(super) fn end() -> Piece {
        Piece::Bytes(vec![0; 2 * BLOCK])
    }

    /// The bytes still to be read.
    pub(super) fn len(&self) -> u64 {
        let pieces: u64 = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Bytes(b) => b.len() as u64,
                Piece::Zeros(n) => *n,
                Piece::Files { next, count, .. } => (count - next) * BLOCK as u64,
                Piece::Deep { chain, level } => (*chain..DEEP_CHAINS)
                    .flat_map(|c| {
                        let from = if c == *chain { *level } else { 0 };
                        (from..=DEEP_LEVELS).map(move |l| deep_header(c, l).len() as u64)
                    })
                    .sum(),
            })
            .sum();
        pieces + (self.pending.len() - self.at) as u64
    }

    /// The folder `top`: its directory, then `top/zeros` of [`OVERSIZE_LEN`] zeros.
    pub(super) fn oversize() -> TarGen {
        use tar::EntryType;
        let pad = OVERSIZE_LEN.next_multiple_of(BLOCK as u64) - OVERSIZE_LEN;
        TarGen::new(vec![
            Piece::Bytes(tar_header(EntryType::Directory, b"top/", 0)),
            Piece::Bytes(tar_header(EntryType::Regular, b"top/zeros", OVERSIZE_LEN)),
            Piece::Zeros(OVERSIZE_LEN + pad),
            TarGen::end(),
        ])
    }

    /// A GNU long-name entry of [`LONG_NAME_LEN`] zeros, then the empty file `x`.
    pub(super) fn long_name() -> TarGen {
        use tar::EntryType;
        TarGen::new(vec![
            Piece::Bytes(tar_header(EntryType::GNULongName, b"././@LongLink", LONG_NAME_LEN)),
            Piece::Zeros(LONG_NAME_LEN),
            Piece::Bytes(tar_header(EntryType::Regular, b"x", 0)),
            TarGen::end(),
        ])
    }

    pub(super) fn one_dir(name: &str) -> TarGen {
        TarGen::new(vec![
            Piece::Bytes(tar_header(tar::EntryType::Directory, format!("{name}/").as_bytes(), 0)),
            TarGen::end(),
        ])
    }

    pub(super) fn many() -> TarGen {
        use tar::EntryType;
        let mut escape = tar_header(EntryType::Regular, b"../escape", 5);
        escape.extend_from_slice(b"pwned");
        escape.resize(2 * BLOCK, 0);
        TarGen::new(vec![
            Piece::Bytes(tar_header(EntryType::Directory, b"many/", 0)),
            Piece::Files { dir: "many".into(), next: 0, count: MANY_ENTRIES },
            Piece::Bytes(escape),
            TarGen::end(),
        ])
    }

    pub(super) fn deep() -> TarGen {
        TarGen::new(vec![
            Piece::Bytes(tar_header(tar::EntryType::Directory, b"deep/", 0)),
            Piece::Deep { chain: 0, level: 0 },
            TarGen::end(),
        ])
    }

    pub(super) fn escapes() -> TarGen {
        use tar::EntryType;
        let top = ESCAPE_TOP.as_bytes();
        let inside = [top, b"/\x1b]0;inside\x07\x1b[2Jfile"].concat();
        let climb = [top, b"/../\x1b]52;c;cGNw\x07\x1b[1Aclimb"].concat();
        TarGen::new(vec![
            Piece::Bytes(tar_header(EntryType::Directory, &[top, b"/"].concat(), 0)),
            Piece::Bytes(tar_header(EntryType::Regular, &inside, 0)),
            Piece::Bytes(tar_header(EntryType::Regular, &climb, 0)),
            TarGen::end(),
        ])
    }

    /// `top/`, then a header the `tar` crate refuses for its checksum field, whose name
    /// and field carry escape sequences.
    pub(super) fn hostile_header() -> TarGen {
        use tar::EntryType;
        let mut bad = tar_header(EntryType::Regular, HOSTILE_TAR_NAME, 0);
        // Offset 148: the checksum field, which the crate parses before anything else.
        bad[148..156].copy_from_slice(HOSTILE_CKSUM);
        TarGen::new(vec![
            Piece::Bytes(tar_header(EntryType::Directory, b"top/", 0)),
            Piece::Bytes(bad),
            TarGen::end(),
        ])
    }
}

impl Read for TarGen {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.at < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.at);
                buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            let Some(piece) = self.pieces.front_mut() else { return Ok(0) };
            self.pending.clear();
            self.at = 0;
            match piece {
                Piece::Bytes(b) => {
                    self.pending = std::mem::take(b);
                    self.pieces.pop_front();
                }
                Piece::Zeros(left) => {
                    // Straight into the caller's buffer: a GiB of zeros costs nothing here.
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    buf[..n].fill(0);
                    *left -= n as u64;
                    if *left == 0 {
                        self.pieces.pop_front();
                    }
                    return Ok(n);
                }
                Piece::Deep { chain, level } => {
                    self.pending = deep_header(*chain, *level);
                    *level += 1;
                    if *level > DEEP_LEVELS {
                        (*chain, *level) = (*chain + 1, 0);
                        if *chain == DEEP_CHAINS {
                            self.pieces.pop_front();
                        }
                    }
                }
                Piece::Files { dir, next, count } => {
                    let name = format!("{dir}/f{next:06}");
                    self.pending = tar_header(tar::EntryType::Regular, name.as_bytes(), 0);
                    *next += 1;
                    if next == count {
                        self.pieces.pop_front();
                    }
                }
            }
        }
    }
}

/// Fills `buf` from `r` unless it ends first; returns how much was read.
pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}
