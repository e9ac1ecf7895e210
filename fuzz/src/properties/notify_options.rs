//! `notify_options`: notify-exit option parsing.

use super::common::assert_error_message;

/// `notify_options`: notify option parsing (QEMU `notify-vmexit=...,notify-window=...`
/// and the older `notify_vmexit=on,notify_window=N`).
///
/// Garbage gives a typed error with a message; a parsed configuration prints (QEMU
/// syntax) to text that parses back to itself; its KVM_ENABLE_CAP argument decodes back
/// to the same window and flags, and exists exactly when the mode is not `disable`.
pub fn notify_options(data: &[u8]) {
    use notify_exit::{NotifyCapArg, NotifyConfig, NotifyVmexitFlags};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = NotifyConfig::parse(text);
    assert_eq!(
        text.parse::<NotifyConfig>(),
        parsed,
        "FromStr and parse disagree"
    );
    let config = match parsed {
        Ok(config) => config,
        Err(error) => {
            assert_error_message(&error);
            return;
        }
    };
    let printed = config.to_string();
    assert_eq!(
        NotifyConfig::parse(&printed),
        Ok(config),
        "{config:?} printed as {printed:?} does not parse back"
    );
    match NotifyCapArg::for_config(&config) {
        None => assert!(
            !config.mode.is_enabled(),
            "no cap argument for an enabled mode"
        ),
        Some(arg) => {
            assert!(config.mode.is_enabled(), "cap argument for a disabled mode");
            assert_eq!(arg.window(), config.window, "cap argument window");
            assert_eq!(
                arg.flags(),
                NotifyVmexitFlags::ENABLED | NotifyVmexitFlags::USER,
                "QEMU always asks for ENABLED | USER"
            );
            assert_eq!(
                arg.raw(),
                (u64::from(config.window) << 32) | 3,
                "cap argument layout"
            );
            assert_eq!(
                NotifyCapArg::decode(arg.raw()),
                Ok(arg),
                "cap argument round trip"
            );
        }
    }
}
