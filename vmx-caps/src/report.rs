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
///
/// ```
/// use vmx_caps::report::{render, Format};
/// use vmx_caps::VmxCaps;
///
/// # // Intel Coffee Lake (CPUID 906EA): IA32_VMX_BASIC..IA32_VMX_VMFUNC of a real CPU.
/// # let coffee_lake: vmx_caps::RawMsrs = [
/// #     (0x480, 0x00da_0400_0000_0004), (0x481, 0x0000_007f_0000_0016),
/// #     (0x482, 0xfff9_fffe_0401_e172), (0x483, 0x01ff_ffff_0003_6dff),
/// #     (0x484, 0x0003_ffff_0000_11ff), (0x485, 0x0000_0000_7004_c1e7),
/// #     (0x486, 0x0000_0000_8000_0021), (0x487, 0x0000_0000_ffff_ffff),
/// #     (0x488, 0x0000_0000_0000_2000), (0x489, 0x0000_0000_0037_27ff),
/// #     (0x48a, 0x0000_0000_0000_002e), (0x48b, 0x005f_bcff_0000_0000),
/// #     (0x48c, 0x0000_0f01_0673_4141), (0x48d, 0x0000_007f_0000_0016),
/// #     (0x48e, 0xfff9_fffe_0400_6172), (0x48f, 0x01ff_ffff_0003_6dfb),
/// #     (0x490, 0x0003_ffff_0000_11fb), (0x491, 0x0000_0000_0000_0001),
/// # ].into_iter().collect();
/// let caps = VmxCaps::from_raw(coffee_lake)?;
/// // QEMU's scripts/kvm/vmxcap layout, byte for byte.
/// let qemu = render(&caps, Format::Qemu);
/// assert!(qemu.starts_with("Basic VMX Information\n  Hex: 0xda040000000004\n"));
/// assert!(qemu.contains("  HLT exiting                              yes\n"));
/// # Ok::<(), vmx_caps::CapsError>(())
/// ```
pub fn render(caps: &VmxCaps, format: Format) -> String {
    match format {
        Format::Text => text::render(caps),
        Format::Qemu => qemu::render(caps),
        Format::Qemu2024 => qemu::render_2024(caps),
        #[cfg(feature = "json")]
        Format::Json => json::render(caps),
    }
}
