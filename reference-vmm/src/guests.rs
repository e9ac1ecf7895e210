// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The built-in guests and the port protocol they use to talk to the VMM.
//!
//! Each guest is one GNU assembler file in `guests/`, assembled at build time by
//! `build.rs` into a flat binary that is linked at [`GUEST_LOAD_ADDR`]. The numbers
//! below mirror `guests/common.inc` (a unit test reads that file and compares).

#![deny(unsafe_code)]

use serde::Serialize;

/// Guest physical address every guest image is linked at and loaded to.
pub const GUEST_LOAD_ADDR: u64 = 0x1_0000;
/// Port of the "tick" channel: one `out` is one counted exit, the value is ignored.
pub const PORT_TICK: u16 = 0xe0;
/// Port of the "sync" channel: the guest asks the VMM to do its next step now.
pub const PORT_SYNC: u16 = 0xe1;
/// First port of the report channel: `out PORT_REPORT + k, eax` reports field `k`.
pub const PORT_REPORT: u16 = 0xf0;
/// Number of report fields (ports `PORT_REPORT .. PORT_REPORT + REPORT_FIELDS`).
pub const REPORT_FIELDS: usize = 16;
/// Sync value: inject #GP with an error code (exceptions guest).
pub const SYNC_INJECT_GP: u8 = 1;
/// Sync value: inject #PF with a CR2 payload (exceptions guest).
pub const SYNC_INJECT_PF: u8 = 2;
/// Sync value: inject an NMI (exceptions guest).
pub const SYNC_INJECT_NMI: u8 = 3;
/// Sync value: synthesize a triple fault (triple-fault guest).
pub const SYNC_TRIPLE_FAULT: u8 = 4;
/// Vector the VMM raises for the irq-storm guest.
pub const IRQ_VECTOR: u8 = 0x20;
/// Port of the status channel: an `in` reads 1 once the VMM has raised every
/// interrupt of the scenario and has nothing left to deliver (irq-flood), else 0.
pub const PORT_STATUS: u16 = 0xe2;
/// First vector the VMM raises for the irq-flood guest.
pub const FLOOD_FIRST: u8 = 0x20;
/// Distinct vectors the irq-flood guest has handlers for (`FLOOD_FIRST ..`):
/// twice the injector's queue bound, so the queue can fill up.
pub const FLOOD_VECTORS: u8 = 64;
/// Vector the host timer thread raises on every vCPU of the timer guest.
pub const TIMER_VECTOR: u8 = 0x30;
/// Port the timer guest's handler writes the vector to, once per interrupt.
pub const PORT_TIMER_ACK: u16 = 0xe3;
/// Port the timer guest's handler writes the vector to when the interrupt
/// arrived inside an interrupts-masked stretch (must never happen).
pub const PORT_TIMER_ACK_MASKED: u16 = 0xe4;
/// Port a timer-guest vCPU writes once it is done (after [`PORT_STATUS`] read 1).
pub const PORT_TIMER_DONE: u16 = 0xe5;
/// Guest physical address of the xAPIC MMIO page (SDM Vol. 3A 11.4.1).
pub const APIC_BASE: u64 = 0xfee0_0000;
/// xAPIC EOI register offset (SDM Vol. 3A 11.8.5).
pub const APIC_EOI: u64 = 0xb0;
/// xAPIC spurious-interrupt vector register offset (SDM Vol. 3A 11.9).
pub const APIC_SVR: u64 = 0xf0;

/// A built-in guest program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Guest {
    /// N `out` instructions then `hlt` (exit throughput).
    PioLoop,
    /// Interrupt flood against long interrupts-masked stretches.
    IrqStorm,
    /// Injected #GP (error code), #PF (CR2 payload) and NMI, checked by the guest.
    Exceptions,
    /// A triple fault synthesized through vcpu-events; the run ends in shutdown.
    TripleFault,
    /// The Heki hypercalls, showing what this host's KVM answers.
    HekiProbe,
    /// Enter and halt (start-up time).
    Halt,
    /// Interrupt flood on many vectors, raised straight into the injector
    /// faster than it can deliver, against long masked stretches.
    IrqFlood,
    /// The guest triple-faults on its own (empty IDT, then `ud2`).
    SelfTripleFault,
    /// A host timer thread raises a vector on every vCPU at a fixed rate;
    /// the guest acknowledges each one, EOIs its xAPIC, and spends long
    /// stretches with interrupts masked (runs through [`crate::timer`]).
    Timer,
}

impl Guest {
    /// Every built-in guest, in the order `guests` lists them.
    pub const ALL: [Guest; 9] = [
        Guest::PioLoop,
        Guest::IrqStorm,
        Guest::Exceptions,
        Guest::TripleFault,
        Guest::HekiProbe,
        Guest::Halt,
        Guest::IrqFlood,
        Guest::SelfTripleFault,
        Guest::Timer,
    ];

    /// The guest's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Guest::PioLoop => "pio-loop",
            Guest::IrqStorm => "irq-storm",
            Guest::Exceptions => "exceptions",
            Guest::TripleFault => "triple-fault",
            Guest::HekiProbe => "heki-probe",
            Guest::Halt => "halt",
            Guest::IrqFlood => "irq-flood",
            Guest::SelfTripleFault => "self-triple-fault",
            Guest::Timer => "timer",
        }
    }

    /// One line saying what the guest does.
    pub fn description(self) -> &'static str {
        match self {
            Guest::PioLoop => "N `out` instructions then `hlt`: exit throughput (--count N)",
            Guest::IrqStorm => {
                "N interrupts raised at arbitrary exits against long cli..sti stretches; \
                 guest counts deliveries and deliveries while masked (--count N)"
            }
            Guest::Exceptions => {
                "VMM injects #GP(error code), #PF(CR2 payload) and an NMI; guest reports what it got"
            }
            Guest::TripleFault => {
                "VMM synthesizes a triple fault through vcpu-events; run ends in shutdown"
            }
            Guest::HekiProbe => {
                "guest issues the Heki version query and CR4 lock hypercalls; shows the host's answer"
            }
            Guest::Halt => "enter and halt: start-up time to the first guest instruction",
            Guest::IrqFlood => {
                "N interrupts on 64 vectors raised straight into the injector, faster than it \
                 delivers, against long cli..sti stretches; every raise delivered, coalesced or \
                 refused (QueueFull) (--count N)"
            }
            Guest::SelfTripleFault => {
                "guest loads an empty IDT and executes ud2 (#UD -> #GP -> #DF -> triple fault); \
                 run ends in shutdown"
            }
            Guest::Timer => {
                "a host timer thread raises a vector on every vCPU at --rate HZ for --seconds S \
                 (--irqchip user: vcpu-events raise + kick; kernel: KVM_SIGNAL_MSI to the \
                 in-kernel LAPIC); guest acks each one, EOIs, masks interrupts for long stretches"
            }
        }
    }

    /// True if several vCPUs can run the guest at once (it keeps no state in memory).
    pub fn reentrant(self) -> bool {
        matches!(self, Guest::PioLoop | Guest::Halt | Guest::Timer)
    }

    /// The default `--count` for the guest.
    pub fn default_count(self) -> u64 {
        match self {
            Guest::PioLoop => 100_000,
            Guest::IrqStorm => 10_000,
            Guest::IrqFlood => 20_000,
            _ => 0,
        }
    }

    /// The flat binary image, assembled from `guests/<name>.S` at build time.
    pub fn image(self) -> &'static [u8] {
        match self {
            Guest::PioLoop => include_bytes!(concat!(env!("OUT_DIR"), "/pio-loop.bin")),
            Guest::IrqStorm => include_bytes!(concat!(env!("OUT_DIR"), "/irq-storm.bin")),
            Guest::Exceptions => include_bytes!(concat!(env!("OUT_DIR"), "/exceptions.bin")),
            Guest::TripleFault => include_bytes!(concat!(env!("OUT_DIR"), "/triple-fault.bin")),
            Guest::HekiProbe => include_bytes!(concat!(env!("OUT_DIR"), "/heki-probe.bin")),
            Guest::Halt => include_bytes!(concat!(env!("OUT_DIR"), "/halt.bin")),
            Guest::IrqFlood => include_bytes!(concat!(env!("OUT_DIR"), "/irq-flood.bin")),
            Guest::SelfTripleFault => {
                include_bytes!(concat!(env!("OUT_DIR"), "/self-triple-fault.bin"))
            }
            Guest::Timer => include_bytes!(concat!(env!("OUT_DIR"), "/timer.bin")),
        }
    }

    /// The assembler source the image was built from (for `guests --source`).
    pub fn source(self) -> &'static str {
        match self {
            Guest::PioLoop => include_str!("../guests/pio-loop.S"),
            Guest::IrqStorm => include_str!("../guests/irq-storm.S"),
            Guest::Exceptions => include_str!("../guests/exceptions.S"),
            Guest::TripleFault => include_str!("../guests/triple-fault.S"),
            Guest::HekiProbe => include_str!("../guests/heki-probe.S"),
            Guest::Halt => include_str!("../guests/halt.S"),
            Guest::IrqFlood => include_str!("../guests/irq-flood.S"),
            Guest::SelfTripleFault => include_str!("../guests/self-triple-fault.S"),
            Guest::Timer => include_str!("../guests/timer.S"),
        }
    }
}

impl std::fmt::Display for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `.equ NAME, VALUE` from guests/common.inc.
    fn equ(name: &str) -> u64 {
        let inc = include_str!("../guests/common.inc");
        for line in inc.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix(".equ ") {
                let mut parts = rest.splitn(2, ',');
                let n = parts.next().unwrap_or("").trim();
                let v = parts
                    .next()
                    .unwrap_or("")
                    .split('#')
                    .next()
                    .unwrap_or("")
                    .trim();
                if n == name {
                    return match v.strip_prefix("0x") {
                        Some(h) => u64::from_str_radix(h, 16).unwrap(),
                        None => v.parse().unwrap(),
                    };
                }
            }
        }
        panic!("{name} not in common.inc");
    }

    #[test]
    fn port_protocol_matches_the_assembler_include() {
        assert_eq!(equ("PORT_TICK"), u64::from(PORT_TICK));
        assert_eq!(equ("PORT_SYNC"), u64::from(PORT_SYNC));
        assert_eq!(equ("PORT_REPORT"), u64::from(PORT_REPORT));
        assert_eq!(equ("SYNC_INJECT_GP"), u64::from(SYNC_INJECT_GP));
        assert_eq!(equ("SYNC_INJECT_PF"), u64::from(SYNC_INJECT_PF));
        assert_eq!(equ("SYNC_INJECT_NMI"), u64::from(SYNC_INJECT_NMI));
        assert_eq!(equ("SYNC_TRIPLE_FAULT"), u64::from(SYNC_TRIPLE_FAULT));
        assert_eq!(equ("IRQ_VECTOR"), u64::from(IRQ_VECTOR));
        assert_eq!(equ("PORT_STATUS"), u64::from(PORT_STATUS));
        assert_eq!(equ("FLOOD_FIRST"), u64::from(FLOOD_FIRST));
        assert_eq!(equ("FLOOD_VECTORS"), u64::from(FLOOD_VECTORS));
        assert_eq!(equ("TIMER_VECTOR"), u64::from(TIMER_VECTOR));
        assert_eq!(equ("PORT_TIMER_ACK"), u64::from(PORT_TIMER_ACK));
        assert_eq!(
            equ("PORT_TIMER_ACK_MASKED"),
            u64::from(PORT_TIMER_ACK_MASKED)
        );
        assert_eq!(equ("PORT_TIMER_DONE"), u64::from(PORT_TIMER_DONE));
        assert_eq!(equ("APIC_BASE"), APIC_BASE);
        assert_eq!(equ("APIC_EOI"), APIC_EOI);
        assert_eq!(equ("APIC_SVR"), APIC_SVR);
        // The flood needs more distinct vectors than the injector's queue holds.
        assert!(usize::from(FLOOD_VECTORS) > vcpu_events::injector::DEFAULT_CAPACITY);
    }

    #[test]
    fn every_guest_is_assembled_and_small() {
        for g in Guest::ALL {
            let img = g.image();
            assert!(!img.is_empty(), "{g} image is empty");
            assert!(img.len() < 64 * 1024, "{g} image too large");
        }
        // pio-loop ends with `hlt; jmp hlt` (f4 eb fd).
        assert!(Guest::PioLoop.image().ends_with(&[0xf4, 0xeb, 0xfd]));
    }
}
