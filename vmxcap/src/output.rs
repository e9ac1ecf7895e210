// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Writing to the terminal: exit statuses, one-line escaped errors, and writes whose
//! failure is never lost. The one home of this contract for the workspace's command
//! lines (`vmxcap`, and `reference-vmm` through this library):
//!
//! - a failed write to stdout gives status [`EXIT_FAILED`] and one line on stderr;
//! - a failed write to stderr puts that one line on stdout instead;
//! - a closed pipe (EPIPE) gives [`EXIT_FAILED`] quietly;
//! - every error is one line, `{prefix}{message}`, with control characters escaped
//!   ([`escape`]), so text from input cannot move the cursor, recolour or hide a line,
//!   and input echoed in it clipped ([`clip`]) so a huge name is not a huge line;
//! - clap's usage errors are one line naming what is wrong (a missing argument
//!   included), status [`EXIT_USAGE`]; `--help` and `--version` go to stdout.
//!
//! ```
//! use vmxcap::output::{escape, Terminal, EXIT_USAGE};
//!
//! assert_eq!(escape("cpu\x1b[2J\nname"), "cpu\\x1b[2J\\nname");
//! let term = Terminal::new("tool: error: ");
//! assert_eq!(term.error_prefix(), "tool: error: ");
//! # let _ = EXIT_USAGE;
//! ```

/// Success (check: no violation; diff: no difference).
pub const EXIT_OK: u8 = 0;
/// A run, check or write that failed: violations, differences, KVM refusing to load,
/// inconsistent CPUs, output that could not be written.
pub const EXIT_FAILED: u8 = 1;
/// Bad usage or input: unknown flags, unreadable or malformed input.
pub const EXIT_USAGE: u8 = 2;

/// A write failed and has already been reported (or was a closed pipe): status
/// [`EXIT_FAILED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteFailed;

/// Escapes control characters (`\n`, `\r`, `\t`, others as `\xNN`) so text from input
/// cannot move the cursor, recolour or hide a line, and a message stays one line.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Text from input as an error or report echoes it: at most `max_chars` characters,
/// `...` marking a cut, so a 10 MB name does not come back as a 10 MB line.
pub fn clip(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_owned(),
    }
}

/// `write_all` then `flush`: a write is complete only once flushed.
fn write_all_flush(w: &mut impl std::io::Write, text: &str) -> std::io::Result<()> {
    w.write_all(text.as_bytes())?;
    w.flush()
}

/// One program's terminal: the contract of the module docs, with the program's error
/// prefix (`"vmxcap: error: "`, `"error: "`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal {
    prefix: &'static str,
}

impl Terminal {
    /// A terminal whose error lines start with `error_prefix`.
    pub const fn new(error_prefix: &'static str) -> Self {
        Terminal {
            prefix: error_prefix,
        }
    }

    /// The error prefix.
    pub const fn error_prefix(&self) -> &'static str {
        self.prefix
    }

    /// Writes `text` to stdout. A closed pipe fails quietly; any other failure is
    /// reported as one line ([`Terminal::fail`]).
    pub fn emit(&self, text: &str) -> Result<(), WriteFailed> {
        // The stdout lock is released before a failure is reported.
        write_all_flush(&mut std::io::stdout().lock(), text)
            .map_err(|e| self.write_failed("to stdout", &e))
    }

    /// Reports a failed write of `what` (`"to stdout"`, `"the trace"`) as one line
    /// `writing {what}: {error}`, except a closed pipe, which stays quiet. For writers
    /// that stream rather than go through [`Terminal::emit`].
    pub fn write_failed(&self, what: &str, e: &std::io::Error) -> WriteFailed {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            self.fail(&format!("writing {what}: {e}"), EXIT_FAILED);
        }
        WriteFailed
    }

    /// Writes `text` (already escaped lines) to stderr. If stderr cannot be written
    /// (and is not a closed pipe), one line saying so, with the first line of `text`,
    /// goes to stdout.
    pub fn emit_err(&self, text: &str) -> Result<(), WriteFailed> {
        let Err(e) = write_all_flush(&mut std::io::stderr().lock(), text) else {
            return Ok(());
        };
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let first = text.lines().next().unwrap_or_default();
            let line = format!("{}writing to stderr: {e}; {first}\n", self.prefix);
            // Nothing is left to report a failure on.
            let _ = write_all_flush(&mut std::io::stdout().lock(), &line);
        }
        Err(WriteFailed)
    }

    /// Prints `{prefix}{msg}` (escaped) as one line on stderr and returns `status`, or
    /// at least [`EXIT_FAILED`] when stderr cannot be written.
    pub fn fail(&self, msg: &str, status: u8) -> u8 {
        match self.emit_err(&format!("{}{}\n", self.prefix, escape(msg))) {
            Ok(()) => status,
            Err(WriteFailed) => status.max(EXIT_FAILED),
        }
    }

    /// clap's error as one line (the one naming what is wrong), status
    /// [`EXIT_USAGE`]; help and version go to stdout with status [`EXIT_OK`]
    /// ([`EXIT_FAILED`] when they cannot be written).
    pub fn usage_error(&self, e: &clap::Error) -> u8 {
        use clap::error::ErrorKind;
        match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => self
                .emit(&e.render().to_string())
                .map_or(EXIT_FAILED, |()| EXIT_OK),
            _ => {
                let text = e.render().to_string();
                let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
                let first = lines.next().unwrap_or("error: invalid usage");
                // "the following required arguments were not provided:" names them on
                // the next line: keep it on the same line.
                let msg = match lines.next() {
                    Some(next) if first.ends_with(':') && !next.starts_with("Usage:") => {
                        format!("{first} {next}")
                    }
                    _ => first.to_owned(),
                };
                self.fail(msg.strip_prefix("error: ").unwrap_or(&msg), EXIT_USAGE)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_one_line_and_no_raw_control_character() {
        let s = escape("a\nb\r\tc\x1b[2J\x07\u{7f}\u{85}é");
        assert_eq!(s, "a\\nb\\r\\tc\\x1b[2J\\x07\\x7f\\x85é");
        assert!(!s.chars().any(char::is_control));
    }

    #[test]
    fn clip_keeps_max_chars_and_marks_the_cut() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc...");
        // Characters, not bytes: a multi-byte character is never split.
        assert_eq!(clip("ééé", 2), "éé...");
        assert_eq!(clip("", 0), "");
        assert_eq!(clip("a", 0), "...");
    }
}
