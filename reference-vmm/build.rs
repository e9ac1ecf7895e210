// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Assembles the built-in guests (guests/*.S) into flat binaries in OUT_DIR.
//!
//! Each guest is assembled with GNU `as`, linked at the guest load address with
//! `ld` and flattened with `objcopy -O binary`, all from binutils.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest physical address every guest is linked at (src/guests.rs: GUEST_LOAD_ADDR).
const LOAD_ADDR: &str = "0x10000";

/// The built-in guests, one file each in guests/.
const GUESTS: &[&str] = &[
    "pio-loop",
    "halt",
    "irq-storm",
    "exceptions",
    "triple-fault",
    "heki-probe",
    "irq-flood",
    "self-triple-fault",
    "timer",
];

fn run(tool: &str, args: &[&str]) {
    let status = Command::new(tool).args(args).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "reference-vmm build: `{tool} {}` failed with {s}",
            args.join(" ")
        ),
        Err(e) => panic!(
            "reference-vmm build: cannot run `{tool}` ({e}); the built-in guests are assembled \
             with GNU binutils (`as`, `ld`, `objcopy`): install binutils (Debian: apt-get install binutils)"
        ),
    }
}

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let guests = manifest.join("guests");
    println!("cargo:rerun-if-changed=guests/common.inc");
    for g in GUESTS {
        let src = guests.join(format!("{g}.S"));
        println!("cargo:rerun-if-changed=guests/{g}.S");
        let obj = out.join(format!("{g}.o"));
        let elf = out.join(format!("{g}.elf"));
        let bin = out.join(format!("{g}.bin"));
        run("as", &["--64", "-I", s(&guests), "-o", s(&obj), s(&src)]);
        run(
            "ld",
            &[
                "-m",
                "elf_x86_64",
                &format!("-Ttext={LOAD_ADDR}"),
                "-e",
                LOAD_ADDR,
                "-o",
                s(&elf),
                s(&obj),
            ],
        );
        run(
            "objcopy",
            &["-O", "binary", "-j", ".text", s(&elf), s(&bin)],
        );
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("build paths are UTF-8")
}
