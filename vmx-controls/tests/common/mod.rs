// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shared helpers: fixture loading and synthetic capability sets derived from fixtures.

#![allow(dead_code)]

use std::path::PathBuf;

use vmx_caps::{Dump, RawMsrs, VmxCaps};

pub const SKX: &str = "skylake-x-i7-7800x.json";
pub const ICL: &str = "icelake-u-i7-1065g7.json";
pub const TGL: &str = "tigerlake-i5-1135g7.json";
pub const ARL: &str = "arrowlake-core-ultra-5-245k.json";
pub const BDW: &str = "broadwell-core-m-5y70.json";
pub const CFL: &str = "coffeelake-906ea.json";
pub const PENRYN: &str = "penryn-core2-t9600.json";

pub const ALL: [&str; 7] = [SKX, ICL, TGL, ARL, BDW, CFL, PENRYN];

pub fn path(name: &str) -> PathBuf {
    test_support::vmx_fixture(name)
}

pub fn raw(name: &str) -> RawMsrs {
    Dump::read(&path(name)).expect("fixture parses").msrs
}

pub fn caps(name: &str) -> VmxCaps {
    VmxCaps::from_raw(raw(name)).expect("fixture is a valid capability set")
}

/// A fixture with some MSRs replaced (`Some`) or removed (`None`).
pub fn caps_with(name: &str, changes: &[(u32, Option<u64>)]) -> VmxCaps {
    let mut r = raw(name);
    for &(index, value) in changes {
        match value {
            Some(v) => {
                r.insert(index, v);
            }
            None => {
                r.remove(index);
            }
        }
    }
    VmxCaps::from_raw(r).expect("synthetic capability set is valid")
}

fn true_of(index: u32) -> Option<u32> {
    match index {
        0x481..=0x484 => Some(index + 0xC),
        _ => None,
    }
}

fn edit_allowed1(name: &str, index: u32, f: impl Fn(u64) -> u64) -> VmxCaps {
    let mut r = raw(name);
    for i in [Some(index), true_of(index)].into_iter().flatten() {
        if let Some(v) = r.get(i) {
            r.insert(i, f(v));
        }
    }
    VmxCaps::from_raw(r).expect("synthetic capability set is valid")
}

/// Clear bits of the allowed-1 half (bits 63:32) of a 32-bit control capability MSR
/// (and of its TRUE twin, keeping the set self-consistent).
pub fn without_allowed1(name: &str, index: u32, bits: u32) -> VmxCaps {
    edit_allowed1(name, index, |v| v & !(u64::from(bits) << 32))
}

/// Set bits in the allowed-1 half of a 32-bit control capability MSR (and its TRUE twin).
pub fn with_allowed1(name: &str, index: u32, bits: u32) -> VmxCaps {
    edit_allowed1(name, index, |v| v | (u64::from(bits) << 32))
}
