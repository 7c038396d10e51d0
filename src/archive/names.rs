//! The rules for a peer's names: entry paths, top-level names and symlink targets.

use std::collections::HashSet;

/// Splits a peer's entry name into components, checking the rules in the module docs.
pub(super) fn entry_parts(
    raw: &[u8],
    allowed_top: &HashSet<String>,
) -> Result<Vec<String>, &'static str> {
    let name = std::str::from_utf8(raw).map_err(|_| "name is not valid UTF-8")?;
    if name.starts_with('/') {
        return Err("absolute path");
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("path has a `..` component"),
            _ => parts.push(part.to_owned()),
        }
    }
    let top = parts.first().ok_or("empty path")?;
    if !allowed_top.contains(top) {
        return Err("not under a top-level name the sender announced");
    }
    Ok(parts)
}

/// `name` if it is one plain path component, safe to create under a target directory:
/// not empty, not `.` or `..`, and no `/`, `\\` or NUL anywhere. This is the one rule
/// for every top-level name a sender announces (a file's name, an archive's entries).
///
/// It works on the string, never through `Path::components`, which normalises `a/`,
/// `a//` and `a/.` to `a` and would let them through. `\\` is refused although it is an
/// ordinary character on Unix, because it is a separator on Windows.
pub(crate) fn plain_name(name: &str) -> Option<&str> {
    let plain =
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    plain.then_some(name)
}

/// Checks a symlink's target against the rules in the module docs; `link` is the link's
/// own name, split into components.
pub(super) fn check_symlink_target<S: AsRef<str>>(
    link: &[S],
    target: &str,
) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("symlink target is empty");
    }
    if target.starts_with('/') {
        return Err("symlink target is absolute");
    }
    // The link's directory: everything but its own name. A top-level symlink has none.
    let depth = link.len().saturating_sub(1);
    if depth == 0 {
        return Err("a top-level entry is a symlink");
    }
    let mut ups = 0;
    let mut seen_name = false;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if seen_name => return Err("symlink target has `..` after a name"),
            ".." => ups += 1,
            _ => seen_name = true,
        }
    }
    // Climbing to the link's directory's `depth`-th ancestor would leave the top-level
    // entry; `depth - 1` levels up is the top-level entry itself.
    if ups >= depth {
        return Err("symlink target escapes its top-level entry");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_must_stay_in_their_top_level_entry() {
        assert_eq!(check_symlink_target(&["d", "l"], "x"), Ok(()));
        assert_eq!(check_symlink_target(&["d", "s", "l"], "../x/y"), Ok(()));
        assert_eq!(check_symlink_target(&["d", "l"], "."), Ok(()));
        assert!(check_symlink_target(&["d", "l"], "../x").is_err());
        assert!(check_symlink_target(&["d", "s", "l"], "../../x").is_err());
        assert!(check_symlink_target(&["d", "l"], "/etc").is_err());
        assert!(check_symlink_target(&["d", "l"], "").is_err());
        assert!(check_symlink_target(&["d", "l"], "a/../x").is_err());
        assert!(check_symlink_target(&["l"], "x").is_err());
    }
}
