// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! JSON capability dumps, in the format of the workspace fixtures:
//!
//! ```json
//! {
//!   "cpu": "Intel Coffee Lake (CPUID 906EA, 6C/12T)",
//!   "source": "VirtualBox VBox.log host VMX MSR dump of a real CPU",
//!   "msrs": {
//!     "0x480": "0x00da040000000004",
//!     "0x481": "0x0000007f00000016"
//!   }
//! }
//! ```
//!
//! `cpu` and `source` are free text (optional on input, empty when absent). `msrs` maps
//! `0x`-prefixed hex MSR indices (0x480..=0x493 only) to `0x`-prefixed hex 64-bit values.
//!
//! Accepted on input: either case (`0X48A`, `0xFF`), leading zeros up to 16 digits
//! (`"0x0480"` is MSR 0x480), a leading UTF-8 byte-order mark, any JSON whitespace.
//! Rejected with a typed [`CapsError`], never a panic: text that is not JSON or not an
//! object of this shape ([`CapsError::BadJson`]: also non-string values such as
//! `"0x480": 5` or `null`, duplicate top-level fields, unknown top-level fields, more
//! than 20 entries); an index or value that is not `0x` + 1-16 hex digits
//! ([`CapsError::BadHex`]: signs, spaces, non-ASCII digits, values above 2^64 - 1);
//! an index outside 0x480..=0x493 ([`CapsError::UnknownMsr`]); the same MSR twice,
//! however spelled (`"0x480"` and `"0x0480"`: [`CapsError::DuplicateMsr`]); a file
//! over [`MAX_DUMP_BYTES`] ([`CapsError::TooLarge`]) or not UTF-8.
//!
//! Output is canonical: two-space indentation, lowercase indices in ascending order,
//! 16-digit lowercase values, trailing newline.
//!
//! The reader and writer (`Dump::from_json`, `Dump::read`, `Dump::to_json`,
//! `Dump::write`) need the crate's `json` feature (serde + serde_json); [`Dump`] itself,
//! [`Dump::caps`] and [`parse_hex`] are always there.

#[cfg(feature = "json")]
use std::fmt::{self, Write as _};
#[cfg(feature = "json")]
use std::path::Path;

#[cfg(feature = "json")]
use serde::de::{MapAccess, Visitor};
#[cfg(feature = "json")]
use serde::{Deserialize, Deserializer};

use crate::caps::VmxCaps;
use crate::error::CapsError;
#[cfg(feature = "json")]
use crate::msr;
use crate::raw::RawMsrs;

/// Largest dump file `Dump::read` accepts (real dumps are below 1 KiB).
pub const MAX_DUMP_BYTES: u64 = 1 << 20;

/// A capability dump: free-text provenance plus raw MSR values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    /// The CPU the values come from.
    pub cpu: String,
    /// How the values were obtained.
    pub source: String,
    /// The MSR values (indices all in 0x480..=0x493).
    pub msrs: RawMsrs,
}

#[cfg(feature = "json")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DumpFile {
    #[serde(default)]
    cpu: String,
    #[serde(default)]
    source: String,
    msrs: Entries,
}

// The `msrs` object as written, in order and with duplicates, so they can be reported.
#[cfg(feature = "json")]
struct Entries(Vec<(String, String)>);

#[cfg(feature = "json")]
impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object mapping hex MSR indices to hex values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, String>()? {
                    // Bounded: at most 20 distinct indices are valid; stop early on junk.
                    if v.len() >= msr::ALL.len() {
                        return Err(serde::de::Error::custom(
                            "more entries than there are VMX capability MSRs",
                        ));
                    }
                    v.push((k, val));
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(feature = "json")]
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parses `0x`-prefixed hex (1-16 digits, either case) into a u64.
pub fn parse_hex(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

impl Dump {
    /// Wraps raw values with provenance.
    pub fn new(cpu: impl Into<String>, source: impl Into<String>, msrs: RawMsrs) -> Self {
        Self {
            cpu: cpu.into(),
            source: source.into(),
            msrs,
        }
    }

    /// Parses a dump from JSON text.
    ///
    /// ```
    /// use vmx_caps::{CapsError, Dump};
    ///
    /// let dump = Dump::from_json(r#"{"cpu": "example", "msrs": {"0x480": "0xda040000000004"}}"#)?;
    /// assert_eq!(dump.cpu, "example");
    /// assert_eq!(dump.msrs.get(0x480), Some(0x00da_0400_0000_0004));
    /// // Typed errors, never a panic.
    /// assert!(matches!(
    ///     Dump::from_json(r#"{"msrs": {"0x4a0": "0x1"}}"#),
    ///     Err(CapsError::UnknownMsr { index: 0x4a0 })
    /// ));
    /// # Ok::<(), CapsError>(())
    /// ```
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn from_json(text: &str) -> Result<Self, CapsError> {
        // Editors on some systems prepend a byte-order mark; JSON parsers reject it.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let file: DumpFile = serde_json::from_str(text).map_err(|e| CapsError::BadJson {
            message: e.to_string(),
        })?;
        let mut msrs = RawMsrs::new();
        for (k, v) in file.msrs.0 {
            let index = parse_hex(&k)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| CapsError::BadHex {
                    what: "MSR index".into(),
                    text: clip(&k),
                })?;
            if !msr::is_vmx_msr(index) {
                return Err(CapsError::UnknownMsr { index });
            }
            let value = parse_hex(&v).ok_or_else(|| CapsError::BadHex {
                what: format!("value of MSR {index:#x}"),
                text: clip(&v),
            })?;
            if msrs.insert(index, value).is_some() {
                return Err(CapsError::DuplicateMsr { index });
            }
        }
        Ok(Self {
            cpu: file.cpu,
            source: file.source,
            msrs,
        })
    }

    /// Reads and parses a dump file (at most [`MAX_DUMP_BYTES`]).
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn read(path: &Path) -> Result<Self, CapsError> {
        use std::io::Read as _;
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| CapsError::io(&shown, e))?;
        // Bounded even for files whose size metadata lies (FIFOs, /dev/zero, procfs).
        let mut bytes = Vec::new();
        file.take(MAX_DUMP_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| CapsError::io(&shown, e))?;
        let len = bytes.len() as u64;
        if len > MAX_DUMP_BYTES {
            return Err(CapsError::TooLarge {
                path: shown,
                len,
                limit: MAX_DUMP_BYTES,
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| CapsError::BadJson {
            message: format!("{shown}: not UTF-8"),
        })?;
        Self::from_json(&text)
    }

    /// The canonical JSON text (see the module docs), ending in a newline.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64 + 40 * self.msrs.len());
        // serde_json escapes the free-text fields; writing to a String cannot fail.
        let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        let _ = write!(
            out,
            "{{\n  \"cpu\": {},\n  \"source\": {},\n  \"msrs\": {{",
            q(&self.cpu),
            q(&self.source)
        );
        let mut first = true;
        for (index, value) in self.msrs.iter() {
            let sep = if first { "" } else { "," };
            first = false;
            let _ = write!(out, "{sep}\n    \"{index:#x}\": \"{value:#018x}\"");
        }
        out.push_str(if first { "}\n}\n" } else { "\n  }\n}\n" });
        out
    }

    /// Writes the canonical JSON to `path`.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn write(&self, path: &Path) -> Result<(), CapsError> {
        std::fs::write(path, self.to_json())
            .map_err(|e| CapsError::io(path.display().to_string(), e))
    }

    /// Decodes the MSRs ([`VmxCaps::from_raw`]).
    pub fn caps(&self) -> Result<VmxCaps, CapsError> {
        VmxCaps::from_raw(self.msrs.clone())
    }

    /// A dump of a capability set.
    pub fn from_caps(caps: &VmxCaps, cpu: impl Into<String>, source: impl Into<String>) -> Self {
        Self::new(cpu, source, caps.raw().clone())
    }
}

#[cfg(all(test, feature = "json"))]
mod tests {
    use super::*;

    const SMALL: &str = r#"{
  "cpu": "x",
  "source": "y",
  "msrs": {
    "0x480": "0x00da040000000004",
    "0x48a": "0x000000000000002e"
  }
}
"#;

    #[test]
    fn parse_and_write_canonical() {
        let d = Dump::from_json(SMALL).unwrap();
        assert_eq!(d.cpu, "x");
        assert_eq!(d.source, "y");
        assert_eq!(d.msrs.get(0x480), Some(0x00DA_0400_0000_0004));
        assert_eq!(d.msrs.get(0x48A), Some(0x2E));
        assert_eq!(d.to_json(), SMALL);
    }

    #[test]
    fn case_insensitive_and_short_hex() {
        let d = Dump::from_json(r#"{"msrs":{"0X48A":"0x2E","0x48b":"0XfF"}}"#).unwrap();
        assert_eq!(d.msrs.get(0x48A), Some(0x2E));
        assert_eq!(d.msrs.get(0x48B), Some(0xFF));
        assert_eq!(d.cpu, "");
    }

    #[test]
    fn leading_zeros_bom_and_whitespace_are_accepted() {
        let d = Dump::from_json(
            "\u{feff} {\"msrs\" : {\"0x0000000000000480\":\"0x0000000000000000001\"}}\n",
        );
        assert!(
            matches!(d, Err(CapsError::BadHex { .. })),
            "17 digits: {d:?}"
        );
        let d =
            Dump::from_json("\u{feff}\t{\"msrs\" : {\"0x0000000000000480\":\"0x1\"}}\n").unwrap();
        assert_eq!(d.msrs.get(0x480), Some(1));
        // A BOM anywhere else is not whitespace.
        assert!(Dump::from_json("{\u{feff}\"msrs\":{}}").is_err());
    }

    #[test]
    fn empty_msrs_round_trip() {
        let d = Dump::new("a\"b", "", RawMsrs::new());
        assert_eq!(Dump::from_json(&d.to_json()).unwrap(), d);
    }

    #[test]
    fn malformed_inputs_are_typed() {
        type Pred = fn(&CapsError) -> bool;
        let cases: &[(&str, Pred)] = &[
            ("not json", |e| matches!(e, CapsError::BadJson { .. })),
            (r#"{"msrs": 5}"#, |e| matches!(e, CapsError::BadJson { .. })),
            (r#"{"cpu":"a"}"#, |e| matches!(e, CapsError::BadJson { .. })),
            (r#"{"msrs":{},"extra":1}"#, |e| {
                matches!(e, CapsError::BadJson { .. })
            }),
            (r#"{"msrs":{"0x480":5}}"#, |e| {
                matches!(e, CapsError::BadJson { .. })
            }),
            (r#"{"msrs":{"480":"0x1"}}"#, |e| {
                matches!(e, CapsError::BadHex { .. })
            }),
            (r#"{"msrs":{"0x480":"12"}}"#, |e| {
                matches!(e, CapsError::BadHex { .. })
            }),
            (r#"{"msrs":{"0x480":"0x"}}"#, |e| {
                matches!(e, CapsError::BadHex { .. })
            }),
            (r#"{"msrs":{"0x480":"0xg"}}"#, |e| {
                matches!(e, CapsError::BadHex { .. })
            }),
            (r#"{"msrs":{"0x480":"0x+1"}}"#, |e| {
                matches!(e, CapsError::BadHex { .. })
            }),
            (r#"{"msrs":{"0x480":"0x10000000000000000"}}"#, |e| {
                matches!(e, CapsError::BadHex { .. })
            }),
            (r#"{"msrs":{"0x100000480":"0x1"}}"#, |e| {
                matches!(e, CapsError::BadHex { .. })
            }),
            (r#"{"msrs":{"0x494":"0x1"}}"#, |e| {
                matches!(e, CapsError::UnknownMsr { index: 0x494 })
            }),
            (r#"{"msrs":{"0x10":"0x1"}}"#, |e| {
                matches!(e, CapsError::UnknownMsr { index: 0x10 })
            }),
            (r#"{"msrs":{"0x480":"0x1","0x0480":"0x2"}}"#, |e| {
                matches!(e, CapsError::DuplicateMsr { index: 0x480 })
            }),
            (r#"{"msrs":{"0x48a":"0x1","0X48A":"0x2"}}"#, |e| {
                matches!(e, CapsError::DuplicateMsr { index: 0x48A })
            }),
            (r#"{"msrs":{},"msrs":{}}"#, |e| {
                matches!(e, CapsError::BadJson { .. })
            }),
            (r#"{"cpu":"a","cpu":"b","msrs":{}}"#, |e| {
                matches!(e, CapsError::BadJson { .. })
            }),
            (r#"{"cpu":null,"msrs":{}}"#, |e| {
                matches!(e, CapsError::BadJson { .. })
            }),
            (r#"{"msrs":{"0x480":null}}"#, |e| {
                matches!(e, CapsError::BadJson { .. })
            }),
            (
                r#"{"msrs":{"0x480":123456789012345678901234567890}}"#,
                |e| matches!(e, CapsError::BadJson { .. }),
            ),
            (r#"{"msrs":{"0x480":["0x1"]}}"#, |e| {
                matches!(e, CapsError::BadJson { .. })
            }),
            (r#"{"msrs":{"0x480":"0x1 "}}"#, |e| {
                matches!(e, CapsError::BadHex { .. })
            }),
            (r#"{"msrs":{"0x480":"0x١"}}"#, |e| {
                matches!(e, CapsError::BadHex { .. })
            }),
            (r#"[["x"]]"#, |e| matches!(e, CapsError::BadJson { .. })),
            ("", |e| matches!(e, CapsError::BadJson { .. })),
        ];
        for (text, ok) in cases {
            let e = Dump::from_json(text).unwrap_err();
            assert!(ok(&e), "{text}: {e:?}");
            assert!(!e.to_string().contains('\n'), "one-line message: {e}");
        }
    }

    /// Found by the `msr_dump_json` fuzz target (seed `unknown-field-esc.json`):
    /// serde_json's "unknown field" message quotes the key raw (ESC [2J clears a
    /// terminal); the error shows it escaped, on one line.
    #[test]
    fn json_errors_escape_the_dump_text() {
        for (text, shown) in [
            (r#"{"cpu\u001b[2J": "x"}"#, r"cpu\u{1b}[2J"),
            (r#"{"a\r\nb": 1}"#, r"a\r\nb"),
            (r#"{"\u009b2J": 1}"#, r"\u{9b}2J"),
        ] {
            let e = Dump::from_json(text).unwrap_err();
            assert!(matches!(e, CapsError::BadJson { .. }), "{e:?}");
            let m = e.to_string();
            assert!(m.starts_with("malformed dump: unknown field"), "{m}");
            assert!(!m.chars().any(char::is_control), "{m:?}");
            assert!(m.contains(shown), "{text}: {m}");
        }
    }

    #[test]
    fn too_many_entries_rejected_early() {
        // 21 entries: more than the 20 MSRs, whatever their keys.
        let mut s = String::from(r#"{"msrs":{"#);
        for i in 0..21 {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("\"k{i}\":\"0x0\""));
        }
        s.push_str("}}");
        assert!(matches!(
            Dump::from_json(&s),
            Err(CapsError::BadJson { .. })
        ));
    }

    #[test]
    fn read_is_bounded_and_typed() {
        let e = Dump::read(Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(e, CapsError::TooLarge { .. }), "{e}");
        let e = Dump::read(Path::new("/nonexistent/dump.json")).unwrap_err();
        assert!(matches!(e, CapsError::Io { .. }), "{e}");
        // The path is the message, the OS error its source.
        assert_eq!(e.to_string(), "/nonexistent/dump.json");
        assert!(std::error::Error::source(&e).is_some());
        let e = Dump::read(Path::new("/")).unwrap_err();
        assert!(matches!(e, CapsError::Io { .. }), "{e}");
    }

    #[test]
    fn parse_hex_bounds() {
        assert_eq!(parse_hex("0xffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex("0x0000000000000000"), Some(0));
        assert_eq!(parse_hex("0x00000000000000000"), None);
        assert_eq!(parse_hex(""), None);
        assert_eq!(parse_hex("0x-1"), None);
    }
}
