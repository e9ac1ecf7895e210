// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Typed Notify VM exit configuration and its option-string parser.
//!
//! Two spellings are accepted, the same ones QEMU used:
//!
//! * QEMU ≥ 7.2 accelerator properties: `notify-vmexit=run|internal-error|disable`
//!   and `notify-window=N` (e.g. `-accel kvm,notify-vmexit=run,notify-window=128`).
//! * The older machine-property form of the v4 QEMU series:
//!   `notify_vmexit=on|off` and `notify_window=N`
//!   (e.g. `-machine notify_vmexit=on,notify_window=0`). `on` maps to
//!   [`NotifyVmexitMode::Run`], `off` to [`NotifyVmexitMode::Disable`].
//!
//! Parsing starts from QEMU 7.2's defaults ([`NotifyConfig::default`]: `run`, window 0) and
//! applies each `key=value` item in order. Keys of the two forms may be mixed, but one
//! setting (mode or window) given twice is an error rather than "last one wins", so a typo
//! cannot silently override a value.
//!
//! The window is a `u32` in crystal clock cycles, written in decimal or as `0x`-prefixed
//! hexadecimal. A decimal number with a leading zero (`010`) is refused: QEMU parses numbers
//! with C's base-0 rules and would read it as octal, so accepting it as decimal would make
//! the same string mean two things.
//!
//! Where this parser is stricter than QEMU (each case is an error here, never a different
//! value):
//! * a key given twice: QEMU's option parser lets the last one win;
//! * a bare key (`notify_vmexit`, which QEMU reads as `notify_vmexit=on` for the boolean
//!   machine property) or the `no` prefix (`nonotify_vmexit`): write `=on` / `=off`;
//! * a window with leading whitespace, a sign (`-1`, which QEMU's `strtoull`-based parser
//!   wraps before its range check) or a leading zero (octal in QEMU);
//! * anything but `key=value` items: pass the part after `-accel kvm,` (QEMU's `kvm`
//!   accelerator name is not an option here and gives [`ConfigError::MissingValue`]).
//!
//! Mode values are case-sensitive, like QEMU's QAPI enum and boolean parsers.

#![deny(unsafe_code)]

use std::fmt;
use std::str::FromStr;

/// What the VMM does with Notify VM exits (QEMU's `NotifyVmexitOption`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum NotifyVmexitMode {
    /// Do not enable `KVM_CAP_X86_NOTIFY_VMEXIT`: the guest can hold the CPU without an
    /// event window for as long as it likes (the CVE-2015-5307 class of hang).
    Disable,
    /// Enable the exit; a valid-context exit resumes the guest, an invalid-context exit
    /// shuts the vCPU down (synthesized triple fault). QEMU's default.
    #[default]
    Run,
    /// Enable the exit; an invalid-context exit stops the VM with an internal error.
    InternalError,
}

impl NotifyVmexitMode {
    /// Every mode, in QEMU's documentation order.
    pub const ALL: [NotifyVmexitMode; 3] = [
        NotifyVmexitMode::Run,
        NotifyVmexitMode::InternalError,
        NotifyVmexitMode::Disable,
    ];

    /// QEMU's spelling of the mode (`run`, `internal-error`, `disable`).
    pub const fn as_str(self) -> &'static str {
        match self {
            NotifyVmexitMode::Disable => "disable",
            NotifyVmexitMode::Run => "run",
            NotifyVmexitMode::InternalError => "internal-error",
        }
    }

    /// Whether this mode enables `KVM_CAP_X86_NOTIFY_VMEXIT` on the VM.
    pub const fn is_enabled(self) -> bool {
        !matches!(self, NotifyVmexitMode::Disable)
    }

    /// Parses QEMU's spelling (case-sensitive, as QEMU's QAPI enum parser is).
    pub fn from_qemu_str(s: &str) -> Option<Self> {
        match s {
            "disable" => Some(NotifyVmexitMode::Disable),
            "run" => Some(NotifyVmexitMode::Run),
            "internal-error" => Some(NotifyVmexitMode::InternalError),
            _ => None,
        }
    }
}

impl fmt::Display for NotifyVmexitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotifyVmexitMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_qemu_str(s).ok_or_else(|| ConfigError::BadMode {
            key: KEY_MODE.to_owned(),
            value: s.to_owned(),
            expected: "run, internal-error or disable",
        })
    }
}

/// Key of the mode in QEMU ≥ 7.2 syntax.
pub const KEY_MODE: &str = "notify-vmexit";
/// Key of the window in QEMU ≥ 7.2 syntax.
pub const KEY_WINDOW: &str = "notify-window";
/// Key of the on/off switch in the older machine-property syntax.
pub const KEY_MODE_LEGACY: &str = "notify_vmexit";
/// Key of the window in the older machine-property syntax.
pub const KEY_WINDOW_LEGACY: &str = "notify_window";

/// Notify VM exit configuration of one VM: the mode and the notify window.
///
/// `window` is the VMCS `NOTIFY_WINDOW` field (0x4024): how many crystal clock cycles the
/// CPU may run guest code without an event window before a Notify VM exit. The hardware
/// adds its own internal threshold, so 0 is safe and is QEMU's default.
///
/// ```
/// use notify_exit::{NotifyConfig, NotifyVmexitMode};
///
/// // QEMU's `-accel kvm,notify-vmexit=run,notify-window=128` (the `-accel kvm,` part is
/// // the VMM's own syntax), or the older `notify_vmexit=on`.
/// let c: NotifyConfig = "notify-vmexit=run,notify-window=128".parse()?;
/// assert_eq!(c, NotifyConfig::new(NotifyVmexitMode::Run, 128));
/// let old: NotifyConfig = "notify_vmexit=on".parse()?;
/// assert_eq!(old.mode, NotifyVmexitMode::Run);
/// assert_eq!(old.window, 0); // QEMU's default window
/// assert!("notify-vmexit=sometimes".parse::<NotifyConfig>().is_err());
/// # Ok::<(), notify_exit::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NotifyConfig {
    /// What to do with notify exits.
    pub mode: NotifyVmexitMode,
    /// Notify window in crystal clock cycles (bits 63:32 of the `KVM_ENABLE_CAP` argument).
    pub window: u32,
}

impl NotifyConfig {
    /// A configuration with the given mode and window.
    pub const fn new(mode: NotifyVmexitMode, window: u32) -> Self {
        NotifyConfig { mode, window }
    }

    /// Parses a comma-separated `key=value` list in either syntax (see the module docs).
    /// The empty string gives the defaults.
    pub fn parse(options: &str) -> Result<Self, ConfigError> {
        let mut config = NotifyConfig::default();
        if options.is_empty() {
            return Ok(config);
        }
        let mut mode_key: Option<&str> = None;
        let mut window_key: Option<&str> = None;
        for (index, item) in options.split(',').enumerate() {
            if item.is_empty() {
                return Err(ConfigError::EmptyItem { index });
            }
            let Some((key, value)) = item.split_once('=') else {
                return Err(ConfigError::MissingValue {
                    key: item.to_owned(),
                });
            };
            let slot = match key {
                KEY_MODE | KEY_MODE_LEGACY => &mut mode_key,
                KEY_WINDOW | KEY_WINDOW_LEGACY => &mut window_key,
                _ => {
                    return Err(ConfigError::UnknownKey {
                        key: key.to_owned(),
                    })
                }
            };
            if let Some(first) = *slot {
                return Err(ConfigError::DuplicateSetting {
                    first: first.to_owned(),
                    second: key.to_owned(),
                });
            }
            *slot = Some(key);
            config.apply(key, value)?;
        }
        Ok(config)
    }

    /// Applies one `key=value` option (either syntax) on top of `self`.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            KEY_MODE => self.mode = value.parse()?,
            KEY_MODE_LEGACY => {
                self.mode = match parse_qemu_bool(value) {
                    Some(true) => NotifyVmexitMode::Run,
                    Some(false) => NotifyVmexitMode::Disable,
                    None => {
                        return Err(ConfigError::BadMode {
                            key: key.to_owned(),
                            value: value.to_owned(),
                            expected: "on or off",
                        })
                    }
                }
            }
            KEY_WINDOW | KEY_WINDOW_LEGACY => self.window = parse_window(value)?,
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: key.to_owned(),
                })
            }
        }
        Ok(())
    }
}

impl FromStr for NotifyConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NotifyConfig::parse(s)
    }
}

/// Formats in QEMU ≥ 7.2 syntax, e.g. `notify-vmexit=run,notify-window=128`; parsing the
/// output gives the same configuration back.
impl fmt::Display for NotifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_MODE}={},{KEY_WINDOW}={}", self.mode, self.window)
    }
}

/// QEMU's boolean spellings (`qapi_bool_parse`).
fn parse_qemu_bool(value: &str) -> Option<bool> {
    match value {
        "on" | "yes" | "true" | "y" => Some(true),
        "off" | "no" | "false" | "n" => Some(false),
        _ => None,
    }
}

fn parse_window(value: &str) -> Result<u32, ConfigError> {
    let bad = |reason| ConfigError::BadWindow {
        value: value.to_owned(),
        reason,
    };
    let (digits, radix) = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => (hex, 16),
        None => (value, 10),
    };
    if digits.is_empty() {
        return Err(bad("no digits"));
    }
    if radix == 10 && digits.len() > 1 && digits.starts_with('0') {
        return Err(bad(
            "leading zero: QEMU would read it as octal; write it in decimal or 0x hex",
        ));
    }
    let mut acc: u64 = 0;
    let mut overflow = false;
    for c in digits.chars() {
        let Some(d) = c.to_digit(radix) else {
            return Err(bad(if radix == 16 {
                "not a hexadecimal number"
            } else {
                "not a decimal number"
            }));
        };
        // Keep scanning after an overflow so "99999999999x" still reports the bad digit.
        match acc
            .checked_mul(u64::from(radix))
            .and_then(|a| a.checked_add(u64::from(d)))
        {
            Some(a) if a <= u64::from(u32::MAX) => acc = a,
            _ => overflow = true,
        }
    }
    if overflow {
        return Err(ConfigError::WindowOverflow {
            value: value.to_owned(),
        });
    }
    u32::try_from(acc).map_err(|_| ConfigError::WindowOverflow {
        value: value.to_owned(),
    })
}

/// Why an option string was refused.
///
/// Every message is one line: text from the options (keys, values) is shown
/// escaped with [`str::escape_debug`] (`\n`, `\u{1b}`), so an option string
/// cannot add lines to, or rewrite, the terminal or log that prints the error.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key that is neither `notify-vmexit`/`notify-window` nor the older
    /// `notify_vmexit`/`notify_window`.
    #[error(
        "unknown notify option `{}` (expected notify-vmexit, notify-window, notify_vmexit or notify_window)",
        .key.escape_debug()
    )]
    UnknownKey {
        /// The key as written.
        key: String,
    },
    /// An item without `=`.
    #[error("notify option `{0}` has no value (expected `{0}=...`)", .key.escape_debug())]
    MissingValue {
        /// The item as written.
        key: String,
    },
    /// An empty item (`a=b,,c=d`, leading or trailing comma).
    #[error("empty item at position {index} in the notify options")]
    EmptyItem {
        /// Zero-based position of the empty item.
        index: usize,
    },
    /// The mode or the window was given twice (possibly in both spellings).
    #[error(
        "notify option `{}` sets the same thing as `{}` given earlier",
        .second.escape_debug(),
        .first.escape_debug()
    )]
    DuplicateSetting {
        /// The key that set it first.
        first: String,
        /// The key that tried to set it again.
        second: String,
    },
    /// The mode value is not one of the accepted words.
    #[error(
        "bad value `{}` for `{}`: expected {expected}",
        .value.escape_debug(),
        .key.escape_debug()
    )]
    BadMode {
        /// The key as written.
        key: String,
        /// The value as written.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
    /// The window is not a number.
    #[error("bad notify window `{}`: {reason}", .value.escape_debug())]
    BadWindow {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The window is a number that does not fit the 32-bit VMCS field.
    #[error(
        "notify window `{}` does not fit in 32 bits (maximum {})",
        .value.escape_debug(),
        u32::MAX
    )]
    WindowOverflow {
        /// The value as written.
        value: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: NotifyVmexitMode, window: u32) -> NotifyConfig {
        NotifyConfig::new(mode, window)
    }

    #[test]
    fn defaults_are_qemu_7_2_defaults() {
        assert_eq!(
            NotifyConfig::parse("").unwrap(),
            cfg(NotifyVmexitMode::Run, 0)
        );
        assert_eq!(NotifyConfig::default(), cfg(NotifyVmexitMode::Run, 0));
    }

    #[test]
    fn parses_qemu_syntax() {
        use NotifyVmexitMode::*;
        let cases = [
            ("notify-vmexit=run,notify-window=128", cfg(Run, 128)),
            ("notify-vmexit=internal-error", cfg(InternalError, 0)),
            ("notify-vmexit=disable,notify-window=7", cfg(Disable, 7)),
            ("notify-window=4294967295", cfg(Run, u32::MAX)),
            ("notify-window=0x10,notify-vmexit=run", cfg(Run, 16)),
            ("notify-window=0XFFFFFFFF", cfg(Run, u32::MAX)),
            ("notify-window=1", cfg(Run, 1)),
        ];
        for (input, want) in cases {
            assert_eq!(NotifyConfig::parse(input), Ok(want), "{input}");
            assert_eq!(input.parse::<NotifyConfig>(), Ok(want), "{input}");
        }
    }

    #[test]
    fn parses_older_machine_property_syntax() {
        use NotifyVmexitMode::*;
        let cases = [
            ("notify_vmexit=on,notify_window=0", cfg(Run, 0)),
            ("notify_vmexit=off", cfg(Disable, 0)),
            ("notify_vmexit=yes,notify_window=16384", cfg(Run, 16384)),
            ("notify_vmexit=false", cfg(Disable, 0)),
            // Mixed spellings are fine as long as nothing is set twice.
            ("notify_vmexit=on,notify-window=5", cfg(Run, 5)),
        ];
        for (input, want) in cases {
            assert_eq!(NotifyConfig::parse(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_unknown_keys_and_malformed_items() {
        assert!(matches!(
            NotifyConfig::parse("notify-vmexit=run,notify-windwo=1"),
            Err(ConfigError::UnknownKey { key }) if key == "notify-windwo"
        ));
        assert!(matches!(
            NotifyConfig::parse("kvm,notify-vmexit=run"),
            Err(ConfigError::MissingValue { key }) if key == "kvm"
        ));
        // QEMU's bare-boolean and `no`-prefix shorthands are not accepted.
        assert!(matches!(
            NotifyConfig::parse("notify_vmexit"),
            Err(ConfigError::MissingValue { key }) if key == "notify_vmexit"
        ));
        assert!(matches!(
            NotifyConfig::parse("nonotify_vmexit"),
            Err(ConfigError::MissingValue { .. })
        ));
        assert!(matches!(
            NotifyConfig::parse("nonotify_vmexit=on"),
            Err(ConfigError::UnknownKey { .. })
        ));
        assert_eq!(
            NotifyConfig::parse("notify-vmexit=run,"),
            Err(ConfigError::EmptyItem { index: 1 })
        );
        assert_eq!(
            NotifyConfig::parse(",notify-vmexit=run"),
            Err(ConfigError::EmptyItem { index: 0 })
        );
        assert!(matches!(
            NotifyConfig::parse("notify-vmexit=run,notify_vmexit=off"),
            Err(ConfigError::DuplicateSetting { first, second })
                if first == "notify-vmexit" && second == "notify_vmexit"
        ));
        assert!(matches!(
            NotifyConfig::parse("notify-window=1,notify-window=2"),
            Err(ConfigError::DuplicateSetting { .. })
        ));
    }

    #[test]
    fn rejects_bad_modes() {
        for input in [
            "notify-vmexit=on",
            "notify-vmexit=Run",
            "notify-vmexit=",
            "notify-vmexit= run",
            "notify_vmexit=run",
            "notify_vmexit=2",
        ] {
            assert!(
                matches!(NotifyConfig::parse(input), Err(ConfigError::BadMode { .. })),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_bad_windows() {
        for input in [
            "notify-window=",
            "notify-window=-1",
            "notify-window=+1",
            "notify-window=12a",
            "notify-window=0x",
            "notify-window=0xg",
            "notify-window=010",
            "notify-window=1.5",
            "notify-window= 1",
        ] {
            assert!(
                matches!(
                    NotifyConfig::parse(input),
                    Err(ConfigError::BadWindow { .. })
                ),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_windows_that_overflow_32_bits() {
        for input in [
            "notify-window=4294967296",
            "notify-window=0x100000000",
            "notify_window=99999999999999999999999999",
        ] {
            assert!(
                matches!(
                    NotifyConfig::parse(input),
                    Err(ConfigError::WindowOverflow { .. })
                ),
                "{input}"
            );
        }
        // A bad digit after the overflow point is reported as a bad number, not overflow.
        assert!(matches!(
            NotifyConfig::parse("notify-window=99999999999x"),
            Err(ConfigError::BadWindow { .. })
        ));
    }

    #[test]
    fn display_round_trips() {
        for mode in NotifyVmexitMode::ALL {
            for window in [0, 1, 128, u32::MAX] {
                let c = cfg(mode, window);
                assert_eq!(c.to_string().parse::<NotifyConfig>(), Ok(c));
            }
        }
        assert_eq!(
            cfg(NotifyVmexitMode::InternalError, 128).to_string(),
            "notify-vmexit=internal-error,notify-window=128"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_uses_qemu_spellings() {
        let c = cfg(NotifyVmexitMode::InternalError, 128);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"mode":"internal-error","window":128}"#);
        assert_eq!(serde_json::from_str::<NotifyConfig>(&json).unwrap(), c);
        assert!(serde_json::from_str::<NotifyConfig>(r#"{"mode":"run","window":-1}"#).is_err());
    }

    /// Found by the `notify_options` fuzz target (seeds `run-esc.txt`, `newline.txt`):
    /// the option text is echoed escaped, so every message is one clean line.
    #[test]
    fn errors_escape_the_option_text() {
        for (input, shown) in [
            ("notify-vmexit=run\u{1b}", "`run\\u{1b}`"),
            ("notify-vmexit=r\nun", "`r\\nun`"),
            ("notify-window=1\u{1b}[2J", "`1\\u{1b}[2J`"),
            ("notify-window=99999999999\r", "`99999999999\\r`"),
            ("\u{1b}]0;x\u{7}=1", "`\\u{1b}]0;x\\u{7}`"),
            ("\u{9b}2J", "`\\u{9b}2J`"),
        ] {
            let e = NotifyConfig::parse(input).unwrap_err().to_string();
            assert!(!e.chars().any(char::is_control), "{input:?}: {e:?}");
            assert!(e.contains(shown), "{input:?}: {e}");
        }
        // Plain text is shown as written.
        let e = NotifyConfig::parse("notify-vmexit=sometimes").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("bad value `sometimes` for `notify-vmexit`"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = NotifyConfig::parse("notify-window=4294967296").unwrap_err();
        assert!(e.to_string().contains("32 bits"), "{e}");
        let e = NotifyConfig::parse("bogus=1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn arbitrary_input_never_panics_and_round_trips_when_accepted() {
        arbtest::arbtest(|u| {
            let s: String = u.arbitrary()?;
            if let Ok(c) = NotifyConfig::parse(&s) {
                assert_eq!(c.to_string().parse::<NotifyConfig>(), Ok(c));
            }
            let window: u32 = u.arbitrary()?;
            let c = cfg(*u.choose(&NotifyVmexitMode::ALL)?, window);
            assert_eq!(c.to_string().parse::<NotifyConfig>(), Ok(c));
            assert_eq!(
                NotifyConfig::parse(&format!("notify_window={window}")).map(|c| c.window),
                Ok(window)
            );
            Ok(())
        });
    }
}
