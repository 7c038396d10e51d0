//! `pcp clean [DIR]`: lists what interrupted receives left in DIR ([`pcp::leftovers()`]),
//! asks on the terminal, and removes it.
//!
//! The list goes to standard output, one leftover a line (size, then path); the
//! question to `/dev/tty` ([`prompt::confirm`]). Without `-y` and without a terminal
//! nothing is removed and the exit status is 2 (usage), with a hint: a script MUST say
//! `-y` to remove anything. Names pass through [`pcp::printable`] before they are shown.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::args::CleanArgs;
use super::{Failure, exit, prompt, render};

/// Runs `pcp clean`.
///
/// # Errors
/// DIR cannot be read; no terminal to ask on without `-y` (usage); something could
/// not be removed.
pub(crate) fn run(args: &CleanArgs) -> Result<(), Failure> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let found = pcp::leftovers(&dir).map_err(|e| io_failure(&dir, &e))?;
    let out = &mut std::io::stdout().lock();
    if found.is_empty() {
        render::write_line(out, &format!("nothing to clean in {}", dir.display()));
        return Ok(());
    }
    for l in &found {
        render::write_line(
            out,
            &format!("{:>10}  {}", prompt::human_bytes(l.bytes), l.path.display()),
        );
    }
    let _ = out.flush();
    let total: u64 = found.iter().map(|l| l.bytes).sum();
    let what = format!(
        "{} left by interrupted runs, {}",
        entries(found.len()),
        prompt::human_bytes(total)
    );
    if !args.yes {
        if !prompt::has_tty() {
            return Err(Failure::usage(
                format!("{what}: no terminal to ask whether to remove them"),
                Some("run pcp clean -y to remove them without asking".into()),
            ));
        }
        let yes = prompt::confirm(&format!("{what}: remove them?")).map_err(|e| Failure {
            message: format!("cannot ask on the terminal: {e}"),
            hint: Some("run pcp clean -y to remove them without asking".into()),
            code: exit::USAGE,
            kind: pcp::ErrorKind::Usage.as_str(),
        })?;
        if !yes {
            render::write_line(out, "kept them");
            return Ok(());
        }
    }
    let mut failed = None;
    let mut removed = 0;
    for l in &found {
        match pcp::leftovers::remove(l) {
            Ok(()) => removed += 1,
            Err(e) => {
                let f = io_failure(&l.path, &e);
                render::eprint_line(&format!("pcp: error: {}", f.message));
                failed = Some(f);
            }
        }
    }
    render::write_line(out, &format!("removed {}", entries(removed)));
    failed.map_or(Ok(()), Err)
}

/// `1 entry`, `3 entries`.
fn entries(n: usize) -> String {
    if n == 1 { "1 entry".into() } else { format!("{n} entries") }
}

/// A local I/O failure naming `path`.
fn io_failure(path: &Path, e: &std::io::Error) -> Failure {
    Failure {
        message: format!("{}: {e}", path.display()),
        hint: None,
        code: exit::FAILURE,
        kind: pcp::ErrorKind::Io.as_str(),
    }
}
