// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`CapsError`]: every way obtaining a capability set can fail.

/// Why a capability set could not be read, parsed or built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CapsError {
    /// A required MSR (see [`crate::msr::REQUIRED`]) is absent.
    #[error("required MSR {name} ({index:#x}) is missing")]
    MissingMsr {
        /// MSR index.
        index: u32,
        /// Linux name of the MSR.
        name: &'static str,
    },
    /// The dump is not valid JSON or not in the dump format.
    ///
    /// The message is shown escaped with [`str::escape_debug`]: serde_json
    /// quotes the dump's text in it (e.g. an unknown field's key) raw, and a
    /// control character there (ESC, a line break) must not reach the terminal.
    #[error("malformed dump: {}", .message.escape_debug())]
    BadJson {
        /// What the JSON parser reported (as it reported it, unescaped).
        message: String,
    },
    /// A key or value of the dump's `msrs` object is not a `0x`-prefixed hex number
    /// that fits in 64 bits (32 bits for keys).
    #[error("malformed dump: bad hex {what} {text:?}")]
    BadHex {
        /// `"MSR index"` or `"value of MSR 0x…"`.
        what: String,
        /// The offending text (truncated to 40 characters).
        text: String,
    },
    /// An MSR index outside the VMX capability range 0x480..=0x493.
    #[error(
        "malformed dump: unknown MSR index {index:#x} (VMX capability MSRs are 0x480..=0x493)"
    )]
    UnknownMsr {
        /// The index found.
        index: u32,
    },
    /// The same MSR index appears twice.
    #[error("malformed dump: MSR {index:#x} appears more than once")]
    DuplicateMsr {
        /// The repeated index.
        index: u32,
    },
    /// A file is larger than the source accepts (dumps are a few hundred bytes).
    #[error("{path}: file too large (more than {limit} bytes)")]
    TooLarge {
        /// Path of the file.
        path: String,
        /// Bytes read before giving up (at least `limit + 1`).
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The source exists but this CPU or hypervisor offers no VMX: the message says
    /// why (e.g. "this CPU has no VMX (CPUID.1:ECX.VMX = 0)").
    #[error("no VMX: {detail}")]
    NoVmx {
        /// What was observed.
        detail: String,
    },
    /// The source cannot be used on this machine (e.g. `/dev/cpu/0/msr` not present:
    /// the `msr` module is not loaded).
    #[error("source unavailable: {detail}")]
    Unavailable {
        /// What is missing and how to get it.
        detail: String,
    },
    /// An I/O error, with what was being done. The message is the context only; the
    /// I/O error is the [`source`](std::error::Error::source) ([`message_chain`] prints
    /// both, as `context: error`).
    #[error("{context}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `e`'s message followed by the message of each of its causes (the
/// [`source`](std::error::Error::source) chain), joined with `": "`: the one-line form
/// anyhow prints with `{:#}`. The workspace's errors print their own message only and
/// expose the cause through `source()`; a tool printing one line uses this.
///
/// ```
/// use vmx_caps::error::{message_chain, CapsError};
///
/// let e = CapsError::io("dump.json", std::io::Error::other("disk on fire"));
/// assert_eq!(e.to_string(), "dump.json");
/// assert_eq!(message_chain(&e), "dump.json: disk on fire");
/// ```
pub fn message_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

impl CapsError {
    /// Shorthand for [`CapsError::Io`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
