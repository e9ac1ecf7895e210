// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Reports of a capability set: [`qemu`] (byte-for-byte QEMU vmxcap), [`text`] (the
//! same layout naming every known bit) and `json` (the documented decoded model; feature
//! `json`).

#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub mod json;
pub mod qemu;
pub mod text;

use crate::caps::VmxCaps;

/// Output format of a capability report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// See [`text`].
    Text,
    /// See [`qemu::render`].
    Qemu,
    /// See [`qemu::render_2024`].
    Qemu2024,
    /// See [`json`] (feature `json`).
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    Json,
}

/// Renders `caps` in `format`.
pub fn render(caps: &VmxCaps, format: Format) -> String {
    match format {
        Format::Text => text::render(caps),
        Format::Qemu => qemu::render(caps),
        Format::Qemu2024 => qemu::render_2024(caps),
        #[cfg(feature = "json")]
        Format::Json => json::render(caps),
    }
}
