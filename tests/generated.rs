//! The man pages and shell completions are generated from the one clap definition,
//! `command()` in `src/cli/args.rs` (the binary's; included here by path), and committed. This test renders each of them and compares it
//! with the committed file, so a flag changed without regenerating them fails here
//! (rust-analyzer's `ensure_file_contents`).
//!
//! `PCP_BLESS=1 cargo test --test generated` rewrites the stale files instead; it never
//! writes when `CI` is set, so CI checks and `git diff --exit-code` backs it up.

use std::fs;
use std::path::Path;

use clap_complete::{Generator, Shell};

#[path = "../src/cli/args.rs"]
#[allow(dead_code, reason = "the test uses only the command definition")]
mod args;
use clap_mangen::Man;

const BLESS_HINT: &str = "run `PCP_BLESS=1 cargo test --test generated`";

/// The command as the generators see it: built (global flags propagated to the
/// subcommands), without clap's `help` subcommand, which gets no page of its own.
fn built_command() -> clap::Command {
    let mut cmd = args::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// clap_mangen's page, with two changes: its synopsis names no values (`[--listen]`), so
/// it is replaced by [`synopsis`]; and it puts the after-help under one `EXTRA` heading,
/// so the after-help is rendered instead as the sections it holds ([`sections`]:
/// `EXAMPLES`, `EXIT STATUS`), before `VERSION`.
fn render_man(cmd: clap::Command) -> String {
    let after = cmd.get_after_long_help().map(ToString::to_string).unwrap_or_default();
    let synopsis = roff_lines(&synopsis(&cmd));
    let sections = roff_lines(&sections(&after));
    let mut out = Vec::new();
    Man::new(cmd.after_long_help(None::<&'static str>))
        .render(&mut out)
        .expect("rendering to a Vec cannot fail");
    let page = String::from_utf8(out).expect("clap_mangen writes UTF-8");

    const SYNOPSIS: &str = ".SH SYNOPSIS\n";
    let start = page.find(SYNOPSIS).expect("a SYNOPSIS section") + SYNOPSIS.len();
    let end = start + page[start..].find('\n').expect("the synopsis is one line") + 1;
    let page = format!("{}{synopsis}{}", &page[..start], &page[end..]);
    match page.find(".SH VERSION\n") {
        Some(at) => format!("{}{sections}{}", &page[..at], &page[at..]),
        None => page + &sections,
    }
}

/// A [`roff::Roff`]'s lines, without the preamble every rendering starts with
/// (clap_mangen's page has it once already).
fn roff_lines(r: &roff::Roff) -> String {
    let preamble = roff::Roff::new().render();
    r.render().strip_prefix(&preamble).expect("rendering starts with the preamble").to_owned()
}

/// `pcp send [--code CODE] … [--listen MULTIADDR]... [PATH]...`: every visible option
/// with its value name, `...` after those that repeat, then the positionals and the
/// subcommand. Options in clap_mangen's order (display order, then short or long name).
fn synopsis(cmd: &clap::Command) -> roff::Roff {
    use roff::{bold, italic, roman};
    let value = |a: &clap::Arg| {
        a.get_value_names().map_or_else(|| a.get_id().as_str().to_uppercase(), |v| v.join(" "))
    };
    let repeats =
        |a: &clap::Arg| matches!(a.get_action(), clap::ArgAction::Count | clap::ArgAction::Append);
    let mut line = vec![bold(cmd.get_bin_name().unwrap_or_else(|| cmd.get_name())), roman(" ")];
    let mut options: Vec<&clap::Arg> =
        cmd.get_arguments().filter(|a| !a.is_hide_set() && !a.is_positional()).collect();
    options.sort_by_key(|a| {
        let key = match (a.get_short(), a.get_long()) {
            (Some(s), _) => {
                format!("{}{}", s.to_ascii_lowercase(), u8::from(!s.is_ascii_lowercase()))
            }
            (None, Some(l)) => l.to_owned(),
            (None, None) => a.get_id().to_string(),
        };
        (a.get_display_order(), key)
    });
    for a in options {
        line.push(roman("["));
        match (a.get_short(), a.get_long()) {
            (Some(s), Some(l)) => {
                line.extend([bold(format!("-{s}")), roman("|"), bold(format!("--{l}"))]);
            }
            (Some(s), None) => line.push(bold(format!("-{s}"))),
            (None, Some(l)) => line.push(bold(format!("--{l}"))),
            (None, None) => continue,
        }
        if a.get_num_args().is_some_and(|n| n.takes_values()) {
            line.extend([roman(" "), italic(value(a))]);
        }
        line.push(roman(if repeats(a) { "]... " } else { "] " }));
    }
    for a in cmd.get_positionals().filter(|a| !a.is_hide_set()) {
        let (open, close) = if a.is_required_set() { ("<", ">") } else { ("[", "]") };
        line.extend([roman(open), italic(value(a)), roman(close)]);
        line.push(roman(if repeats(a) { "... " } else { " " }));
    }
    if cmd.has_subcommands() {
        line.extend([roman("<"), italic("subcommand"), roman(">")]);
    }
    let mut r = roff::Roff::new();
    r.text(line);
    r
}

/// The after-help's sections: a line `HEADING:` at the margin opens one (`.SH HEADING`),
/// and its indented lines follow as they are laid out in `--help` (`.nf`, one space
/// column, the four-space indent dropped: the page indents a section's body itself).
fn sections(after: &str) -> roff::Roff {
    let mut r = roff::Roff::new();
    let mut open = false;
    for line in after.lines() {
        if let Some(heading) = line.strip_suffix(':').filter(|h| !h.starts_with(' ')) {
            if open {
                r.control("fi", []);
            }
            r.control("SH", [heading]);
            r.control("nf", []);
            open = true;
        } else if !line.trim().is_empty() {
            r.text([roff::roman(line.strip_prefix("    ").unwrap_or(line))]);
        }
    }
    if open {
        r.control("fi", []);
    }
    r
}

fn render_completion(shell: Shell) -> String {
    let mut cmd = without_hidden(&built_command());
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "pcp", &mut out);
    let script = String::from_utf8(out).expect("clap_complete writes UTF-8");
    match shell {
        Shell::Bash => bash_completes_paths(&script),
        _ => script,
    }
}

/// `cmd` without its hidden arguments, which clap_complete would otherwise offer
/// (`--chunk-size` is for experiments: hidden from the help, so from Tab too). clap
/// cannot remove an argument, so each command is rebuilt from what the generators read:
/// name, about, version, arguments (help and version included, as `build` made them)
/// and subcommands.
fn without_hidden(cmd: &clap::Command) -> clap::Command {
    // clap's names are `&'static str` without its `string` feature; a test may leak.
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    let mut out = clap::Command::new(leak(cmd.get_name()))
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true)
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(leak(version));
    }
    for sub in cmd.get_subcommands() {
        out = out.subcommand(without_hidden(sub));
    }
    out
}

/// bash: where `pcp send` takes a PATH, clap_complete offers the options, and an empty
/// word matches them all, so `pcp send <Tab>` never lists files (it leaves positionals
/// to `complete -o default`, which runs only when nothing matched). In the send case,
/// only a word starting with `-` gets the options; any other gets no words of ours, and
/// bash completes file names. Panics when clap_complete's script no longer has the
/// shape this edits, rather than let the patch silently stop applying.
fn bash_completes_paths(script: &str) -> String {
    const CASE: &str = "        pcp__subcmd__send)\n";
    const OPTIONS_AT_FIRST_WORD: &str = "if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then";
    const OPTIONS_ONLY_FOR_DASH: &str = "if [[ ${cur} == -* ]] ; then";
    const OPTIONS_ANYWHERE: &str = "            COMPREPLY=( $(compgen -W \"${opts}\" -- \"${cur}\") )\n            return 0\n            ;;";
    const FILES: &str = "            # A PATH: bash completes file names (complete -o default).\n            COMPREPLY=()\n            return 0\n            ;;";
    let start = script.find(CASE).expect("the bash script has a case for pcp send");
    let len = script[start..].find(OPTIONS_ANYWHERE).expect("the send case ends as expected")
        + OPTIONS_ANYWHERE.len();
    let case = &script[start..start + len];
    assert_eq!(case.matches(OPTIONS_AT_FIRST_WORD).count(), 1, "send case changed shape:\n{case}");
    let patched = case.replacen(OPTIONS_AT_FIRST_WORD, OPTIONS_ONLY_FOR_DASH, 1).replacen(
        OPTIONS_ANYWHERE,
        FILES,
        1,
    );
    format!("{}{patched}{}", &script[..start], &script[start + len..])
}

/// Compares `contents` with the committed file at `rel` (relative to the package root).
/// Returns an error message when it is stale; rewrites it instead when blessing.
fn ensure_file_contents(rel: &str, contents: &str) -> Result<(), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let committed = fs::read_to_string(&path).ok();
    if committed.as_deref() == Some(contents) {
        return Ok(());
    }
    let bless = std::env::var_os("PCP_BLESS").is_some_and(|v| v == "1");
    let ci = std::env::var_os("CI").is_some();
    if bless && !ci {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("blessed {rel}");
        return Ok(());
    }
    let state = if committed.is_some() { "stale" } else { "missing" };
    Err(format!("{rel} is {state}: {BLESS_HINT}"))
}

/// Checks every artefact before failing, so one run names all the stale files.
fn ensure_all(artefacts: &[(String, String)]) {
    let errors: Vec<String> = artefacts
        .iter()
        .filter_map(|(rel, contents)| ensure_file_contents(rel, contents).err())
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// One page per subcommand, named as `man` finds it (`man pcp-send`). clap's `name` takes
/// a `&'static str` (no `string` feature), hence the fixed table; the assertion below makes
/// a new subcommand fail here until it is added.
const SUBCOMMAND_PAGES: [(&str, &str); 4] = [
    ("send", "pcp-send"),
    ("receive", "pcp-receive"),
    ("node", "pcp-node"),
    ("clean", "pcp-clean"),
];

#[test]
fn man_pages_are_up_to_date() {
    let cmd = built_command();
    let visible: Vec<&str> =
        cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(clap::Command::get_name).collect();
    let listed: Vec<&str> = SUBCOMMAND_PAGES.iter().map(|(sub, _)| *sub).collect();
    assert_eq!(visible, listed, "add a man page for each subcommand to SUBCOMMAND_PAGES");

    let mut pages = vec![("man/pcp.1".to_owned(), render_man(cmd.clone()))];
    for (sub, page_name) in SUBCOMMAND_PAGES {
        let sub = cmd.find_subcommand(sub).expect("listed subcommands exist").clone();
        pages.push((format!("man/{page_name}.1"), render_man(sub.name(page_name))));
    }
    ensure_all(&pages);
}

#[test]
fn completions_are_up_to_date() {
    let shells = [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::Elvish, Shell::PowerShell];
    let files: Vec<(String, String)> = shells
        .into_iter()
        .map(|shell| (format!("completions/{}", shell.file_name("pcp")), render_completion(shell)))
        .collect();
    let names: Vec<&str> = files.iter().map(|(rel, _)| rel.as_str()).collect();
    assert_eq!(
        names,
        [
            "completions/pcp.bash",
            "completions/_pcp",
            "completions/pcp.fish",
            "completions/pcp.elv",
            "completions/_pcp.ps1"
        ]
    );
    ensure_all(&files);
}
