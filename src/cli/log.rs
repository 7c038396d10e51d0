//! How pcp's log lines (`-v`, `-vv`, `PCP_LOG`) show their fields: every value cleaned
//! by [`pcp::printable`], since logs reach the same terminal as everything else.
//!
//! tracing-subscriber's default field formatter escapes ESC and BEL in an event's
//! message, but writes any other field given with `%` (Display) as it is, and leaves
//! format characters (bidi controls, zero-width characters) everywhere. A peer's string
//! logged as `%name`, an error whose chain quotes a peer's bytes (`error = %e`), or, at
//! `-vv`, what libp2p logs of a peer's identify data, would reach the terminal as the
//! peer wrote it. [`CleanFields`] formats each field like the default one (`name=value`,
//! the message bare, the name in italics on a colour terminal) and cleans the value.
//! Call sites need no care of their own.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// The field formatter of pcp's log lines (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CleanFields;

impl<'writer> FormatFields<'writer> for CleanFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor =
            CleanVisitor { ansi: writer.has_ansi_escapes(), writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes each field of one event or span, cleaned.
struct CleanVisitor<'a> {
    writer: Writer<'a>,
    ansi: bool,
    first: bool,
    result: fmt::Result,
}

impl CleanVisitor<'_> {
    fn field(&mut self, field: &Field, value: &str) {
        let name = field.name();
        // What the `log` bridge records of its own, as the default formatter skips it.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let value = pcp::printable(value);
        let w = &mut self.writer;
        let mut result = if std::mem::take(&mut self.first) { Ok(()) } else { w.write_char(' ') };
        result = result.and_then(|()| match name {
            "message" => w.write_str(&value),
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                if self.ansi {
                    write!(w, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m{value}")
                } else {
                    write!(w, "{name}={value}")
                }
            }
        });
        self.result = result;
    }
}

impl Visit for CleanVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, value);
        } else {
            // Quoted and escaped, as the default formatter shows a string field.
            self.field(field, &format!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, &pcp::error::chain(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex, PoisonError};

    use super::*;

    /// A writer into a shared buffer, for a subscriber under test.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const HOSTILE: &str = "top/\x1b]52;c;cGNw\x07\x1b[2J\u{202E}x\nforged";

    /// Logs what a careless call site could, with or without [`CleanFields`].
    fn logged(ansi: bool, clean: bool) -> String {
        let buf = Buf::default();
        let make = {
            let buf = buf.clone();
            move || buf.clone()
        };
        let builder = tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(make);
        let log = || {
            let e = io::Error::other(HOSTILE);
            let span = tracing::debug_span!("entry", name = %HOSTILE);
            let _in = span.enter();
            tracing::debug!(name = %HOSTILE, quoted = HOSTILE, debug = ?HOSTILE, "got {HOSTILE}");
            tracing::debug!(error = &e as &dyn std::error::Error, "refused");
        };
        if clean {
            tracing::subscriber::with_default(builder.fmt_fields(CleanFields).finish(), log);
        } else {
            tracing::subscriber::with_default(builder.finish(), log);
        }
        let bytes = buf.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    /// Issue 14, item 4: logs reach the terminal too.
    #[test]
    fn peer_text_in_log_fields_is_cleaned() {
        for ansi in [false, true] {
            let out = logged(ansi, true);
            for bad in ["\x07", "\x1b]", "\x1b[2J", "\u{202E}"] {
                assert!(!out.contains(bad), "{bad:?} in {out:?}");
            }
            if !ansi {
                assert!(!out.contains('\x1b'), "{out:?}");
            }
            assert_eq!(out.lines().count(), 2, "{out:?}");
            assert!(out.contains("got top/?]52;c;cGNw??[2J?x?forged"), "{out:?}");
            if !ansi {
                assert!(out.contains("name=top/?]52;c;cGNw??[2J?x?forged"), "{out:?}");
                assert!(out.contains("refused error=top/?]52;"), "{out:?}");
            }
        }
        // Why the formatter exists: the default one writes a `%` field raw.
        let raw = logged(false, false);
        assert!(raw.contains("\x1b]52;") && raw.contains('\u{202E}'), "{raw:?}");
    }

    #[test]
    fn fields_read_as_before() {
        let buf = Buf::default();
        let make = {
            let buf = buf.clone();
            move || buf.clone()
        };
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(make)
            .fmt_fields(CleanFields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(peer = %"12D3", bytes = 5_u64, r#type = "file", ok = true, "done");
        });
        let out = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("UTF-8");
        assert_eq!(out.trim(), r#"INFO done peer=12D3 bytes=5 type="file" ok=true"#);
    }
}
