// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Printing typed errors: every error type of the crate keeps its cause as a
//! `#[source]`, and [`chain`] renders the whole chain on one line.

#![deny(unsafe_code)]

/// `error: source: source's source ...` on one line, with control characters
/// escaped so no input reaches the terminal raw.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        // thiserror's `{0}` forwarding repeats the source's text: say it once.
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    escape(&s)
}

/// Escapes control characters (`\n`, `\x1b`, ...) so a message stays one line:
/// the one escaping of both command lines, `vmxcap::output::escape`.
pub use vmxcap::output::escape;

/// Characters of an input's string (a trace key, a snapshot's guest name) an error
/// keeps: a 4 KiB key or a 10 MB name would otherwise come back as the error line.
pub const ECHO_CHARS: usize = 64;

/// `s` as an error echoes it: at most [`ECHO_CHARS`] characters, `...` if cut
/// (`vmxcap::output::clip`).
pub fn echo(s: &str) -> String {
    vmxcap::output::clip(s, ECHO_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_is_one_line_with_every_source() {
        let e = Outer(std::io::Error::other("inner\n\x1b[2Jgone"));
        assert_eq!(chain(&e), "outer: inner\\n\\x1b[2Jgone");
    }
}
