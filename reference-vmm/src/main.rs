// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The reference VMM (under construction).

fn main() {
    println!("reference-vmm: under construction");
}
