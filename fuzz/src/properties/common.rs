//! Helpers shared by several targets: the error-message check and input readers
//! that more than one target uses.

use super::input::Input;
use vmx_caps::RawMsrs;

/// Asserts that an error renders what a CLI prints on one line: a non-empty message
/// with no line break and no raw control character (text from the input must come
/// out escaped, e.g. `\x1b` or `\n`, so it cannot rewrite a terminal).
pub(super) fn assert_error_message(error: &dyn std::fmt::Display) {
    let message = error.to_string();
    assert!(!message.trim().is_empty(), "error with an empty message");
    assert_one_clean_line(&message, "error message");
}

/// Asserts that `text` is one line without raw control characters (`char::is_control`:
/// C0 including `\n`, `\r`, `\t` and ESC, DEL, C1).
pub(super) fn assert_one_clean_line(text: &str, what: &str) {
    assert!(
        !text.chars().any(char::is_control),
        "{what} is not one clean line: {text:?}"
    );
}

/// Layout of a `vmx_caps_raw` input: 3 bytes of presence bits (bit i = MSR 0x480 + i
/// present), 1 byte of options, the 20 MSR values as little-endian u64 (0x480 first),
/// then probe values for the per-word checks.
pub(super) fn raw_msrs_from(input: &mut Input<'_>) -> (RawMsrs, u8) {
    let present = u32::from_le_bytes([input.u8(), input.u8(), input.u8(), 0]);
    let options = input.u8();
    let mut raw = RawMsrs::new();
    for (i, index) in vmx_caps::msr::ALL.iter().enumerate() {
        let value = input.u64();
        if present & (1 << i) != 0 {
            raw.insert(*index, value);
        }
    }
    (raw, options)
}

/// Capability MSRs of three real CPUs (the dumps in vmx-caps/tests/data: Skylake-X, Ice Lake-U,
/// Penryn without TRUE MSRs), so `sdm_controls` can spend its input on the controls.
pub(super) const BUILTIN_CAPS: [&[(u32, u64)]; 3] = [
    &[
        (0x480, 0x00da_0400_0000_0004),
        (0x481, 0x0000_00ff_0000_0016),
        (0x482, 0xfff9_fffe_0401_e172),
        (0x483, 0x01ff_ffff_0003_6dff),
        (0x484, 0x0003_ffff_0000_11ff),
        (0x485, 0x7004_c1e7),
        (0x486, 0x8000_0021),
        (0x487, 0xffff_ffff),
        (0x488, 0x2000),
        (0x489, 0x0037_27ff),
        (0x48a, 0x2e),
        (0x48b, 0x025d_3fff_0000_0000),
        (0x48c, 0x0000_0f01_0673_4141),
        (0x48d, 0x0000_00ff_0000_0016),
        (0x48e, 0xfff9_fffe_0400_6172),
        (0x48f, 0x01ff_ffff_0003_6dfb),
        (0x490, 0x0003_ffff_0000_11fb),
    ],
    &[
        (0x480, 0x00da_0500_0000_0013),
        (0x481, 0x0000_00ff_0000_0016),
        (0x482, 0xfff9_fffe_0401_e172),
        (0x483, 0x037f_ffff_0003_6dff),
        (0x484, 0x0006_ffff_0000_11ff),
        (0x485, 0x7004_c1e7),
        (0x486, 0x8000_0021),
        (0x487, 0xffff_ffff),
        (0x488, 0x2000),
        (0x489, 0x0077_2fff),
        (0x48a, 0x2e),
        (0x48b, 0x335f_bfff_0000_0000),
        (0x48c, 0x0000_0f01_0673_4141),
        (0x48d, 0x0000_00ff_0000_0016),
        (0x48e, 0xfff9_fffe_0400_6172),
        (0x48f, 0x037f_ffff_0003_6dfb),
        (0x490, 0x0006_ffff_0000_11fb),
    ],
    &[
        (0x480, 0x005a_0800_0000_000d),
        (0x481, 0x0000_003f_0000_0016),
        (0x482, 0xf7f9_fffe_0401_e172),
        (0x483, 0x0003_ffff_0003_6dff),
        (0x484, 0x0000_3fff_0000_11ff),
        (0x485, 0x0004_03c0),
        (0x486, 0x8000_0021),
        (0x487, 0xffff_ffff),
        (0x488, 0x2000),
        (0x489, 0x0004_67ff),
        (0x48a, 0x2c),
        (0x48b, 0x0000_0041_0000_0000),
    ],
];

/// A Heki ABI from a byte: one of the RFC revisions, or none selected.
pub(super) fn heki_abi_from(byte: u8) -> Option<heki_policy::HekiAbi> {
    let all = heki_policy::HekiAbi::ALL;
    all.get(usize::from(byte) % (all.len() + 1)).copied()
}

/// A typed event read from the input: kind byte, vector byte, then a u32 used as the
/// error code or instruction length and a u64 used as the payload.
pub(super) fn event_from(input: &mut Input<'_>) -> vcpu_events::Event {
    use vcpu_events::{Event, ExceptionPayload, HardwareException};
    let kind = input.u8();
    let vector = input.u8();
    let value = input.u32();
    let payload = input.u64();
    match kind % 9 {
        0 => Event::ExternalInterrupt { vector },
        1 => Event::Nmi,
        2 => {
            let mut e = HardwareException::new(vector);
            if kind & 0x10 != 0 {
                e = e.with_error_code(value);
            }
            if kind & 0x20 != 0 {
                e.payload = ExceptionPayload::for_vector(vector, payload);
            }
            Event::HardwareException(e)
        }
        3 => Event::SoftwareInterrupt {
            vector,
            instruction_len: value,
        },
        4 => Event::PrivilegedSoftwareException {
            vector,
            instruction_len: value,
        },
        5 => Event::SoftwareException {
            vector,
            instruction_len: value,
        },
        6 => Event::Smi,
        7 => Event::TripleFault,
        _ => Event::Sipi { vector },
    }
}
