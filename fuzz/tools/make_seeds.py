#!/usr/bin/env python3
"""Writes the binary seed files of fuzz/seeds/ that are derived from other data.

Run from the repository root: `python3 fuzz/tools/make_seeds.py`. Text seeds (JSON
dumps, option strings, traces) are committed as they are; this script only builds the
byte layouts that `fuzz/src/properties/` reads with its `Input` cursor, from the real
CPU dumps in fixtures/vmx/ and from real kvm_run / kvm_vcpu_events values.
The script is deterministic; rerunning it rewrites the same files.
"""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "fixtures", "vmx")
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
MSRS = list(range(0x480, 0x494))


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fixtures():
    for name in sorted(os.listdir(FIXTURES)):
        if name.endswith(".json"):
            with open(os.path.join(FIXTURES, name)) as f:
                yield name[: -len(".json")], json.load(f)


def raw_caps(dump, options=0):
    """3 bytes of presence bits, 1 option byte, 20 u64 values (vmx_caps_raw layout)."""
    msrs = {int(k, 16): int(v, 16) for k, v in dump["msrs"].items()}
    present = 0
    values = b""
    for i, index in enumerate(MSRS):
        if index in msrs:
            present |= 1 << i
        values += struct.pack("<Q", msrs.get(index, 0))
    return struct.pack("<I", present)[:3] + bytes([options]) + values


def vmx_caps_raw():
    # Probes after the values: CR0/CR4 values, then per 32-bit word (min, opt, other).
    probes = struct.pack("<QQ", 0x80000031, 0x2000)
    kvm_min_opt = [
        (0x1 | 0x8, 0x20 | 0x80 | 0x40),  # pin-based
        (0x80 | 0x8000 | 0x10000 | 0x1000000 | 0x800000, 0x80000000 | 0x200000),  # primary
        (0, 0x2 | 0x20 | 0x80 | 0x1000),  # secondary
        (0x200 | 0x4, 0x1000 | 0x8000 | 0x200000),  # exit
        (0x4 | 0x200, 0x2000 | 0x4000 | 0x8000),  # entry
    ]
    for lo, hi in kvm_min_opt:
        probes += struct.pack("<IIQ", lo, hi, 0xFFFFFFFF00000016)
    probes += struct.pack("<QQ", 0x10, 0xFFFFFFFFFFFFFFFF)
    for name, dump in fixtures():
        write("vmx_caps_raw", name + ".bin", raw_caps(dump) + probes)


def notify_options():
    for name, text in [
        ("qemu-run", "notify-vmexit=run,notify-window=128"),
        ("qemu-internal-error", "notify-vmexit=internal-error,notify-window=0"),
        ("qemu-disable", "notify-vmexit=disable"),
        ("qemu-window-max", "notify-window=4294967295,notify-vmexit=run"),
        ("qemu-window-hex", "notify-window=0x4000"),
        ("machine-on", "notify_vmexit=on,notify_window=0"),
        ("machine-off", "notify_vmexit=off"),
        ("libvirt-window", "notify-vmexit=run,notify-window=16384"),
        ("empty", ""),
        ("overflow", "notify-window=4294967296"),
        ("octal", "notify-window=010"),
        ("bad-mode", "notify-vmexit=panic"),
        ("unknown-key", "notify-vmexit=run,bus-lock=on"),
        ("duplicate", "notify-vmexit=run,notify_vmexit=off"),
        ("empty-item", "notify-vmexit=run,,notify-window=1"),
        ("no-value", "notify-window"),
    ]:
        write("notify_options", name + ".txt", text.encode())


def notify_exit_seed(cap_arg, policy, window_ns, threshold, burst, records):
    """cap arg, policy byte, storm window, threshold, burst, then exit records."""
    out = struct.pack("<QBQHB", cap_arg, policy, window_ns, threshold, burst)
    for control, flags, step, extra in records:
        out += bytes([control])
        if control & 1:
            out += struct.pack("<I", extra)
        out += struct.pack("<II", flags, step)
        if (control >> 1) & 3 == 1:
            out += bytes([extra & 3])
        elif (control >> 1) & 3 == 3:
            out += struct.pack("<H", extra)
    return out


def notify_exit():
    qemu_arg = (128 << 32) | 3
    # run mode, triple-fault event enabled: valid exits resume, an invalid one shuts down.
    write("notify_exit", "run-valid-then-invalid.bin", notify_exit_seed(
        qemu_arg, 0x4, 1_000_000_000, 100, 10,
        [(0, 0, 1000, 0), (0, 0, 1000, 0), (0, 1, 1000, 0)]))
    # internal-error mode, QEMU semantics: every exit stops.
    write("notify_exit", "internal-error-qemu.bin", notify_exit_seed(
        (0 << 32) | 3, 0x1 | 0x8, 1_000_000_000, 100, 10, [(0, 0, 5, 0), (0, 1, 5, 0)]))
    # A storm: threshold 4 in a 1 ms window, exits 10 us apart, then a poll after 1 s.
    storm = [(0, 0, 10_000, 0)] * 8 + [(0x8, 0, 1_000_000_000, 0)] + [(0, 0, 10_000, 0)] * 3
    write("notify_exit", "storm.bin", notify_exit_seed(qemu_arg, 0x4, 1_000_000, 4, 2, storm))
    # Garbage: unknown cap flags, unknown exit flags, wrong exit reason, truncated unions,
    # a whole 256-byte union, time going backwards, disable mode.
    write("notify_exit", "garbage.bin", notify_exit_seed(
        0xFFFF_FFFF_FFFF_FFFC, 0x2, 0, 0, 0,
        [(0, 0xFFFF_FFFE, 1, 0), (1, 1, 1, 39), (2, 1, 1, 2), (4, 1, 1, 0), (6, 7, 1, 299),
         (0x10, 1, 5, 0), (0, 1, 0xFFFF_FFFF, 0)]))
    # NotEnabled cap argument (USER only), tiny window.
    write("notify_exit", "user-only.bin", notify_exit_seed(
        (1 << 32) | 2, 0x0, 1, 1, 1, [(0, 1, 1, 0), (0, 0, 1, 0)]))


def event(kind, vector, value=0, payload=0, status=0):
    """A typed event for event_from(): kind byte, vector, u32 value, u64 payload."""
    return struct.pack("<BBIQ", kind, vector, value, payload) + bytes([status])


SKX_BASIC = 0x00DA040000000004
SKX_MISC = 0x7004C1E7
ICL_MISC = 0x000000007004C1E7 | (1 << 30)


def vcpu_interruption():
    def seed(name, info, err, length, rflags, intr=0, activity=0, guest=1, caps=0, controls=0,
             basic=SKX_BASIC, misc=SKX_MISC, idt=(0, 0, 0), ev=event(0, 0x20)):
        data = struct.pack("<III", info, err, length)
        data += struct.pack("<QQBB", basic, misc, caps, controls)
        data += struct.pack("<QIBB", rflags, intr, activity, guest)
        data += struct.pack("<III", *idt)
        write("vcpu_interruption", name + ".bin", data + ev)

    # #GP(0) into a protected-mode guest; an external interrupt was being delivered.
    seed("gp-error-code", 0x80000B0D, 0, 0, 0x202, idt=(0x80000030, 0, 0),
         ev=event(0x12, 14, 6, 0xDEADB000))
    # The seed lesson: external interrupt with IF = 0 inside an STI shadow.
    seed("extint-if-clear", 0x80000020, 0, 0, 0x2, intr=1, ev=event(0, 0x30))
    # NMI under MOV-SS blocking with virtual NMIs and NMI blocking.
    seed("nmi-blocked", 0x80000202, 0, 0, 0x202, intr=0xA, controls=2, ev=event(1, 2))
    # INT3 (software exception, length 1); a #PF with error code 6 was interrupted.
    seed("int3-reinject-pf", 0x80000603, 0, 1, 0x202, idt=(0x80000B0E, 6, 0),
         ev=event(5, 3, 1))
    # Reserved type and bit 12 (IDT-vectoring NMI unblocking) copied by mistake.
    seed("reserved-type-bit12", 0x80001100, 0xFFFF0000, 20, 0x302, intr=0x21, activity=1,
         guest=0x6, idt=(0x80001202, 0, 0), ev=event(3, 0x80, 0))
    # HLT activity, #DB with pending BS and TF; INT n of length 2 re-injected.
    seed("hlt-debug", 0x80000301, 0, 0, 0x302, activity=1, guest=0x5, misc=ICL_MISC,
         idt=(0x80000480, 0, 2), ev=event(3, 0x80, 2))
    # Shutdown activity, #MC; other event (MTF) with monitor trap flag.
    seed("mtf-shutdown", 0x80000700, 0, 0, 0x2, activity=2, caps=1, controls=1, guest=0,
         idt=(0x80000712, 0, 0), ev=event(7, 0))


def kvm_vcpu_events(exc=(0, 0, 0, 0, 0), intr=(0, 0, 0, 0), nmi=(0, 0, 0, 0), sipi=0,
                    flags=0, smi=(0, 0, 0, 0), tf=0, has_payload=0, payload=0, reserved=b""):
    data = struct.pack("<BBBBI", *exc) + bytes(intr) + bytes(nmi)
    data += struct.pack("<II", sipi, flags) + bytes(smi) + bytes([tf])
    data += (reserved + bytes(26))[:26] + bytes([has_payload]) + struct.pack("<Q", payload)
    assert len(data) == 64
    return data


def vcpu_events():
    def seed(name, struct_bytes, context=0x07, guest=0x07, rflags=0x202, ev=event(0, 0x20)):
        data = struct_bytes + bytes([context, guest]) + struct.pack("<Q", rflags) + ev
        write("vcpu_events", name + ".bin", data)

    # What KVM_GET_VCPU_EVENTS returns for an idle vCPU with both caps enabled.
    seed("get-idle", kvm_vcpu_events(flags=0x3F))
    # A pending #PF with its CR2 payload (KVM_CAP_EXCEPTION_PAYLOAD).
    seed("pending-pf-payload", kvm_vcpu_events(exc=(0, 14, 1, 1, 2), flags=0x10, has_payload=1,
                                               payload=0xDEADB000),
         ev=event(0x32, 14, 2, 0xDEADB000, status=1))
    # An injected interrupt while the guest has IF = 0 and an STI shadow.
    seed("interrupt-if-clear", kvm_vcpu_events(intr=(1, 0x20, 0, 2), flags=0x04), rflags=0x2)
    # The triple fault a notify handler synthesizes.
    seed("triple-fault", kvm_vcpu_events(flags=0x20, tf=1), ev=event(7, 0, status=1))
    # NMI injected while masked, three pending, SMM state.
    seed("nmi-smm", kvm_vcpu_events(nmi=(1, 3, 1, 0), flags=0x09, smi=(1, 1, 0, 1)),
         context=0x1C, ev=event(1, 2, status=1))
    # Garbage: unknown flags, NMI vector as exception, non-canonical bools, reserved bytes.
    seed("garbage", kvm_vcpu_events(exc=(7, 2, 9, 5, 0xFFFFFFFF), intr=(3, 0xFF, 2, 0xFF),
                                    nmi=(9, 200, 4, 1), sipi=0xFFFF, flags=0xFFFFFFFF,
                                    smi=(2, 3, 4, 5), tf=6, has_payload=7,
                                    payload=0xFFFFFFFFFFFFFFFF, reserved=b"\x01" * 26),
         context=0, guest=0, rflags=0, ev=event(2, 40, 0, 0))
    # Too short: the size error.
    write("vcpu_events", "short.bin", kvm_vcpu_events(flags=0x3F)[:20])


def vcpu_injector():
    RAISE, RUN, EXIT, DELIVER, STALE = 0, 2, 3, 4, 5

    def run(ready, if_flag, shadow=None, idt=None):
        bits = (1 if ready else 0) | (2 if if_flag else 0)
        out = b""
        if shadow is not None:
            bits |= 4
            out += bytes([shadow])
        if idt is not None:
            bits |= 8
            out += struct.pack("<III", *idt)
        return bytes([RUN, bits]) + out

    # irq-storm: interrupts raised while the guest keeps IF = 0, then an open stretch.
    ops = b""
    for v in range(0x20, 0x28):
        ops += bytes([RAISE, v])
        ops += run(True, False) + bytes([EXIT, 0])
    ops += bytes([RAISE, 0x20, RAISE, 0x20])  # coalesced
    for _ in range(10):
        ops += run(True, True) + bytes([EXIT, 1]) + bytes([DELIVER, 0x20])
    write("vcpu_injector", "irq-storm.bin", bytes([31]) + ops)
    # A full queue of capacity 2, shadows, a re-injection first, stale decisions.
    ops = bytes([RAISE, 1, RAISE, 2, RAISE, 3])
    ops += run(True, True, shadow=1) + bytes([EXIT, 0])
    ops += run(True, True, idt=(0x80000030, 0, 0)) + bytes([EXIT, 0])
    ops += run(True, True) + run(True, True) + bytes([STALE, 9, EXIT, 1, DELIVER, 1, DELIVER, 1])
    write("vcpu_injector", "full-shadow-reinject.bin", bytes([1]) + ops)
    # Not ready (event pending in KVM), then ready.
    ops = bytes([RAISE, 0xEC]) + run(False, True) + bytes([EXIT, 0]) + run(True, True)
    write("vcpu_injector", "not-ready.bin", bytes([255]) + ops)


def sdm_controls():
    def seed(name, selector, masks=(0, 0, 0, 0, 0, 0, 0), raw=b"", fields=b""):
        data = bytes([selector]) + raw
        data += struct.pack("<IIIQIQI", *masks) + fields
        write("sdm_controls", name + ".bin", data)

    # KVM's configuration of each built-in CPU, untouched (passes but for x2APIC).
    seed("skylake-x-kvm-config", 0)
    seed("icelake-kvm-config", 1)
    seed("penryn-kvm-config", 2)
    # Virtual NMIs without NMI exiting; NMI-window exiting toggled.
    seed("virtual-nmis-without-nmi-exiting", 0, masks=(1 << 3, 1 << 22, 0, 0, 0, 0, 0))
    # Entry to SMM and deactivate dual-monitor treatment outside SMM; PAT pair broken.
    seed("smm-entry-and-pat-pair", 1, masks=(0, 0, 0, 0, 1 << 18, 0, (3 << 10) | (1 << 14)))
    # VPID 0 with enable VPID, a misaligned I/O bitmap, a bad EPTP, no TSC multiplier.
    fields = struct.pack("<IQQQQIB", 0, 0x1001, 0, 0x10, 0, 0x10, 0)
    fields += struct.pack("<QHQHQ", 0, 0, 0, 1, 0x7 | (7 << 3))
    seed("vpid-zero-bad-addresses", 0, masks=(0, 1 << 25, 1 << 25, 0, 0, 0, 0), fields=fields)
    # Raw capabilities (Tiger Lake) through the raw path.
    dumps = dict(fixtures())
    seed("raw-tigerlake", 0xC0, raw=raw_caps(dumps["tigerlake-i5-1135g7"]))


HOST_CR0 = 0x80050033  # PE MP ET NE WP AM PG
HOST_CR4 = 0x00350EF0  # ... UMIP FSGSBASE SMEP SMAP (a typical Linux host)
SMEP, SMAP, UMIP, FSGSBASE, FRED, WP = 1 << 20, 1 << 21, 1 << 11, 1 << 16, 1 << 32, 1 << 16


def heki_hypercall():
    def enable(cap_configure, arg):
        return bytes([1, 0, 1 if cap_configure else 0, arg])

    def call(a0_sel, a1, a2_sel=0, a0=None, nr=None, cpl=None, compat=False, a2=None):
        sel = (a0_sel << 1) | (a2_sel << 3) | (0x20 if cpl is not None else 0)
        sel |= 0x40 if compat else 0
        sel |= 1 if nr is not None else 0
        out = bytes([1, 1, sel])
        if nr is not None:
            out += struct.pack("<Q", nr)
        if a0_sel == 2:
            out += bytes([a0])
        elif a0_sel == 3:
            out += struct.pack("<Q", a0)
        out += struct.pack("<Q", a1)
        if a2_sel >= 2:
            out += struct.pack("<Q", a2)
        if cpl is not None:
            out += bytes([cpl])
        return out

    def write_cr(cr_sel, value, extra=0):
        return bytes([1, 3, cr_sel]) + struct.pack("<QQ", value, extra)

    def reboot(reset):
        return bytes([1, 4, 1 if reset else 0])

    head = lambda abi, policy: bytes([abi]) + struct.pack("<QQ", HOST_CR0, HOST_CR4) + bytes([policy])
    # RFC v2 as a hardened guest kernel uses it: version query, pin CR4 and CR0, then an
    # attacker clears SMEP (denial exit) and a benign CR0 write.
    ops = enable(True, 3) + enable(False, 3)
    ops += call(0, 0, a2_sel=1)
    ops += call(1, SMEP | SMAP | UMIP)
    ops += call(0, WP)
    ops += write_cr(1, HOST_CR4 & ~SMEP) + write_cr(0, HOST_CR0)
    write("heki_hypercall", "rfc-v2-pin-then-denial.bin", head(1, 0) + ops)
    # RFC v3: FRED is pinnable (but absent on this host: dropped); denial shuts down;
    # a user-mode caller gets -KVM_EPERM; a 32-bit caller's registers are truncated.
    ops = enable(True, 1) + enable(False, 2)
    ops += call(1, SMEP | FRED) + call(1, SMAP, cpl=3) + call(1, (1 << 32) | SMAP, compat=True)
    ops += write_cr(1, 0) + reboot(False) + write_cr(1, HOST_CR4)
    write("heki_hypercall", "rfc-v3-fred-user-compat.bin", head(2, 1) + ops)
    # Refusals: pin 0, CR0 without WP, CR0 bits clear on the host, CR4 outside the mask,
    # CR3, a0 above 32 bits, unknown flags, version query with arguments, bad cap argument.
    ops = call(1, 0) + call(0, 1) + call(0, WP | (1 << 30)) + call(1, 1 << 5)
    ops += call(2, WP, a0=3) + call(3, WP, a0=1 << 32) + call(0, WP, a2_sel=2, a2=2)
    ops += call(1, SMEP, a2_sel=1) + enable(True, 7) + reboot(True)
    write("heki_hypercall", "refusals-and-reset.bin", head(1, 2) + ops)
    # RFC v1: hypercall 14, no flags, no exits; another hypercall number is ignored.
    ops = call(1, SMEP) + call(1, SMEP, nr=13) + enable(True, 3) + write_cr(1, 0)
    write("heki_hypercall", "rfc-v1.bin", head(0, 0) + ops)


def heki_exit():
    def exit_(abi, sel, payload, length=64, reason=None, dt=100):
        out = bytes([abi, sel])
        if sel % 5 >= 3:
            out += struct.pack("<I", reason)
        return out + bytes([length]) + payload[: min(length, 64)] + struct.pack("<H", dt)

    def body(reason, value, reserved=(0,) * 6):
        return struct.pack("<QQ6Q", reason, value, *reserved)

    tail = struct.pack("<IQ", 235, 3)
    # RFC v2 (handler too): configure CR4 SMEP|SMAP, configure CR0 WP, denial CR4.
    exits = exit_(1, 0, body(2, SMEP | SMAP)) + exit_(1, 0, body(1, WP))
    exits += exit_(1, 1, body(2, HOST_CR4 & ~SMEP))
    write("heki_exit", "rfc-v2-configure-denial.bin", bytes([1]) + exits + tail)
    # RFC v3 numbers (40/41) with the handler on v3, cumulative semantics, shutdown policy.
    exits = exit_(2, 0, body(2, SMEP)) + exit_(2, 0, body(2, 0)) + exit_(2, 1, body(1, 0))
    write("heki_exit", "rfc-v3-cumulative.bin", bytes([2 | (1 << 2) | 0x10]) + exits
          + struct.pack("<IQ", 237, 2))
    # Collisions: 39 (KVM_EXIT_MEMORY_FAULT) and 40 (KVM_EXIT_TDX) without an ABI, with
    # RFC v1, and 41 under v2; unknown reason and reserved words; truncated unions.
    exits = exit_(3, 0, body(1, WP)) + exit_(0, 1, body(1, WP)) + exit_(1, 17, body(0, 0))
    exits += exit_(1, 0, body(4, 7, (1, 0, 0, 0, 0, 9))) + exit_(1, 1, body(2, 0), length=20)
    exits += exit_(2, 3, body(1, 1), reason=41, length=71)
    write("heki_exit", "collisions-garbage.bin", bytes([1 | (2 << 2)]) + exits
          + struct.pack("<IQ", 236, 0xFFFF))


def vmm_exits():
    PORTS = {"tick": 0, "sync": 1, "status": 2, "report": 3, "report15": 4}

    def out(port, value, size=4, dt=10):
        return bytes([PORTS[port] << 5, [1, 2, 4].index(size)]) + struct.pack("<QH", value, dt)

    def raw(selector, union=b"", reason=None, io=0, dt=10):
        data = bytes([selector])
        if selector % 16 >= 14:
            data += struct.pack("<I", reason)
        return data + bytes([len(union)]) + union + struct.pack("<QH", io, dt)

    hlt = raw(5)
    guests = ["pio-loop", "irq-storm", "exceptions", "triple-fault", "heki-probe", "halt",
              "irq-flood", "self-triple-fault"]

    def seed(name, guest, policy, exits):
        g = 0xFF if guest is None else guests.index(guest)
        write("vmm_exits", name + ".bin", bytes([g, policy]) + exits)

    # The exceptions guest asks for #GP, #PF and an NMI, then reports what it saw.
    exits = out("sync", 1) + out("sync", 2) + out("sync", 3)
    exits += b"".join(out("report", v) for v in (13, 0x1230, 14)) + out("report15", 2) + hlt
    seed("exceptions-guest", "exceptions", 0, exits)
    # The triple-fault guest asks for the synthesized triple fault.
    seed("triple-fault-guest", "triple-fault", 0, out("sync", 4) + hlt)
    # irq-storm: ticks, window exits, the report and hlt.
    exits = b"".join(out("tick", i, 1) + raw(7) for i in range(8)) + out("report", 10000)
    seed("irq-storm-guest", "irq-storm", 0, exits + out("status", 0) + hlt)
    # Replay state with RFC v2: a Heki configure (CR4 SMEP), a denial, notify exits.
    heki_cfg = struct.pack("<QQ", 2, 1 << 20)
    heki_den = struct.pack("<QQ", 2, 0)
    exits = raw(13, heki_cfg) + raw(13 | 0x10, heki_den) + raw(12, b"\x00\x00\x00\x00")
    exits += raw(12, b"\x01\x00\x00\x00") + hlt
    seed("replay-heki-notify", None, 0x40 | 0x10, exits)
    # Garbage: bad I/O size and direction, MMIO, fail-entry, internal error, system
    # event, unknown reasons, a self-triple-faulting guest's shutdown.
    exits = raw(0x10, bytes([7, 3, 0xE1, 0, 1, 0, 0, 0])) + raw(0x10, bytes([1, 8]))
    exits += raw(6, struct.pack("<Q", 0xFEE00000) + bytes(12) + b"\x01")
    exits += raw(9, struct.pack("<QI", 0x80000021, 1)) + raw(10, struct.pack("<I", 3))
    exits += raw(11, struct.pack("<I", 1)) + raw(14, reason=0xFFFFFFFF) + raw(15, reason=100)
    seed("garbage", "self-triple-fault", 0x81, exits + raw(8))
    # One seed per notify row of the restated decision table (vmm_table.rs), after the
    # exits that resume (KVM_EXIT_INTR, an irq window, an unknown sync code, an `in`).
    resumes = raw(13 | 0x30) + raw(7) + out("sync", 9, 1) + raw(0x10, bytes([0, 1, 0xE2, 0]))
    notify = raw(12, b"\x00\x00\x00\x00") + raw(12, b"\x01\x00\x00\x00") + hlt
    seed("notify-run-invalid-triple-fault", None, 0, resumes + notify)
    seed("notify-internal-error-invalid-stops", None, 1, resumes + notify)
    seed("notify-disable-invalid-stops", None, 2, resumes + notify)
    # A system event, then exits nobody handles: the first stops as unhandled.
    seed("unhandled-system-event", "halt", 0, raw(11, struct.pack("<I", 2)) + raw(14, reason=77))


def kvm_regs(rip=0x10000, rsp=0x80000, rflags=0x202):
    """struct kvm_regs: rax..r15 (rsp is the 8th), rip, rflags, 18 x u64."""
    regs = [0] * 18
    regs[7] = rsp
    regs[16] = rip
    regs[17] = rflags
    return struct.pack("<18Q", *regs)


def kvm_sregs(interrupt_vector=None, cr0=0x80000031, cr2=0):
    """struct kvm_sregs of the 64-bit test guest (vcpu-events tests/common/long_mode.rs):
    8 kvm_segment (cs ds es fs gs ss tr ldt), gdt, idt, cr0 cr2 cr3 cr4 cr8 efer
    apic_base, interrupt_bitmap[4]; 312 bytes."""
    def seg(selector, type_, l, db):
        # base, limit, selector, type, present, dpl, db, s, l, g, avl, unusable, padding
        return struct.pack("<QIHBBBBBBBBBB", 0, 0xFFFFFFFF, selector, type_, 1, 0, db, 1, l, 1, 0, 0, 0)
    code = seg(0x08, 0xB, 1, 0)
    data = seg(0x10, 0x3, 0, 1)
    tr = struct.pack("<QIHBBBBBBBBBB", 0, 0xFFFF, 0, 0xB, 1, 0, 0, 0, 0, 0, 0, 0, 0)
    ldt = struct.pack("<QIHBBBBBBBBBB", 0, 0xFFFF, 0, 0x2, 1, 0, 0, 0, 0, 0, 0, 0, 0)
    out = code + data * 5 + tr + ldt
    out += struct.pack("<QH3H", 0x1000, 23, 0, 0, 0) + struct.pack("<QH3H", 0x2000, 0xFFF, 0, 0, 0)
    bitmap = [0, 0, 0, 0]
    if interrupt_vector is not None:
        bitmap[interrupt_vector // 64] |= 1 << (interrupt_vector % 64)
    out += struct.pack("<7Q", cr0, cr2, 0x3000, 1 << 5, 0, 0x500, 0xFEE00900)
    out += struct.pack("<4Q", *bitmap)
    assert len(out) == 312, len(out)
    return out


def snapshot_events(flags=0x3D, exception=None, interrupt=None, nmi=None, triple_fault=0):
    """VcpuEvents in its serde form (what KVM_GET_VCPU_EVENTS reports with both caps:
    flags NMI_PENDING | SHADOW | SMM | PAYLOAD | TRIPLE_FAULT)."""
    exc = dict(injected=0, nr=0, has_error_code=0, pending=0, error_code=0, has_payload=0, payload=0)
    exc.update(exception or {})
    intr = dict(injected=0, nr=0, soft=0, shadow=0)
    intr.update(interrupt or {})
    n = dict(injected=0, pending=0, masked=0, pad=0)
    n.update(nmi or {})
    return dict(flags=flags, exception=exc, interrupt=intr, nmi=n, sipi_vector=0,
                smi=dict(smm=0, pending=0, smm_inside_nmi=0, latched_init=0),
                triple_fault_pending=triple_fault, reserved=[0] * 26)


def injector_state(queued=(), in_flight=(), slot_busy=False, capacity=32, **stats):
    counters = dict(requested=0, coalesced=0, rejected=0, injected=0, delivered=0, reinjected=0,
                    window_requests=0, window_exits=0)
    counters.update(stats)
    return dict(capacity=capacity, queued=list(queued), in_flight=[list(e) for e in in_flight],
                slot_busy=slot_busy, stats=counters)


def vcpu_snapshot():
    """JSON snapshot files (`VcpuSnapshot::to_json` layout, SNAPSHOT_VERSION 1)."""
    def snap(events, regs=None, sregs=None, injector=None, version=1):
        return dict(version=version, regs=list(regs or kvm_regs()), sregs=list(sregs or kvm_sregs()),
                    events=events, injector=injector)

    def seed(name, value):
        # Compact JSON: small seeds suit libFuzzer's length limit (to_json writes
        # the same layout pretty-printed).
        text = value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode() + b"\n"
        write("vcpu_snapshot", name, text)

    # Captured right after KVM_INTERRUPT(0x20): 0x20 in KVM's slot (and in
    # interrupt_bitmap), 0x21 and 0x22 still queued in the injector.
    mid = snap(snapshot_events(interrupt=dict(injected=1, nr=0x20)),
               sregs=kvm_sregs(interrupt_vector=0x20),
               injector=injector_state([0x21, 0x22], [(0x20, 1)], True, requested=3, injected=1,
                                       window_requests=1, window_exits=1))
    seed("mid-injection.json", mid)
    seed("pending-pf-payload.json", snap(snapshot_events(exception=dict(
        pending=1, nr=14, has_error_code=1, error_code=6, has_payload=1, payload=0x7FFFDEADB000)),
        regs=kvm_regs(rflags=0x2)))
    seed("injected-gp.json", snap(snapshot_events(exception=dict(
        injected=1, nr=13, has_error_code=1, error_code=0x1234)), regs=kvm_regs(rflags=0x2)))
    seed("nmi-masked-pending.json", snap(snapshot_events(nmi=dict(pending=1, masked=1)),
                                         regs=kvm_regs(rflags=0x2)))
    seed("sti-shadow-queued.json", snap(snapshot_events(interrupt=dict(shadow=1)),
                                        injector=injector_state([0x20], requested=1)))
    seed("triple-fault.json", snap(snapshot_events(triple_fault=1), regs=kvm_regs(rflags=0x2)))
    # Hostile: another version, truncated, an unknown field, an injected interrupt
    # with IF = 0, an unknown flag bit, a duplicate queued vector, capacity 257, in-flight
    # counts that do not add up, a register block of the wrong size.
    seed("version-2.json", dict(mid, version=2))
    text = json.dumps(mid, separators=(",", ":")).encode()
    seed("truncated.json", text[: len(text) // 2])
    seed("unknown-field.json", dict(mid, checksum=0))
    # A field name with an ESC sequence: the error shows it escaped.
    seed("unknown-field-esc.json", b'{"version": 1, "x\\u001b[2J": 0}\n')
    seed("if-clear-injected.json", dict(mid, regs=list(kvm_regs(rflags=0x2))))
    seed("unknown-flag.json", dict(mid, events=snapshot_events(
        flags=0x3D | 0x80, interrupt=dict(injected=1, nr=0x20))))
    seed("duplicate-queued.json", dict(mid, injector=injector_state(
        [0x21, 0x21], [(0x20, 1)], True, requested=3, injected=1)))
    seed("capacity-257.json", dict(mid, injector=injector_state(
        [0x21, 0x22], [(0x20, 1)], True, capacity=257, requested=3, injected=1)))
    seed("in-flight-inconsistent.json", dict(mid, injector=injector_state(
        [0x21, 0x22], [(0x20, 2)], True, requested=3, injected=1)))
    seed("regs-short.json", dict(mid, regs=list(kvm_regs())[:100]))


def main():
    vmx_caps_raw()
    notify_options()
    notify_exit()
    vcpu_interruption()
    vcpu_events()
    vcpu_injector()
    vcpu_snapshot()
    sdm_controls()
    heki_hypercall()
    heki_exit()
    vmm_exits()


if __name__ == "__main__":
    sys.exit(main())
