#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Timer side by side (issue 16): `reference-vmm run --guest timer` with the
# userspace irqchip (vcpu-events' raise handle + kick, `--irqchip user`) and
# KVM's in-kernel irqchip (KVM_SIGNAL_MSI, `--irqchip kernel`), on 1 and 2
# vCPUs, at a rate the kernel path keeps up with and at one it cannot,
# interleaved round by round. Prints, per cell, the median over the rounds of
# delivered/s and the raise -> acknowledgement latency p50 / p99 / max, with the
# ratios of the user path to the kernel path, plus the accounting (coalesced,
# lost, delivered while masked) of the median round. It reports; it never
# fails because of a figure. See BENCHMARKS.md.
#
# Needs: cargo, binutils, python3, /dev/kvm.

set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: bench/timer.sh [options]

  --rounds R        rounds (default 3)
  --seconds S       seconds each run raises (default 1)
  --rates "A B"     rates in Hz (default "100 5000")
  --vcpus "A B"     vCPU counts (default "1 2")
  --no-build        do not run `cargo build --release`
  --json FILE       also write every sample as JSON to FILE
  -h, --help        this text

Environment: REF_BIN, if set, names the reference-vmm binary.
USAGE
}

ROUNDS=3
SECONDS_PER_RUN=1
RATES="100 5000"
VCPUS="1 2"
BUILD=1
JSON_OUT=
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
        --rates) RATES=$2; shift 2 ;;
        --vcpus) VCPUS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --json) JSON_OUT=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "timer.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
case "$ROUNDS" in ''|*[!0-9]*) echo "timer.sh: --rounds takes an integer" >&2; exit 2 ;; esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vmm-timer.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -q -p reference-vmm)
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
REF_BIN=${REF_BIN:-$TARGET/release/reference-vmm}
[ -x "$REF_BIN" ] || { echo "timer.sh: no binary at $REF_BIN" >&2; exit 2; }

for r in $(seq 1 "$ROUNDS"); do
    for v in $VCPUS; do
        for hz in $RATES; do
            for mode in kernel user; do
                out="$WORK/$mode-$v-$hz-$r.json"
                # Status 1 (accounting failed) is still a sample to report.
                "$REF_BIN" run --guest timer --vcpus "$v" --rate "$hz" \
                    --seconds "$SECONDS_PER_RUN" --irqchip "$mode" --format json \
                    > "$out" || true
            done
        done
    done
done

python3 - "$WORK" "$ROUNDS" "$JSON_OUT" <<'PY'
import glob, json, os, statistics, sys
work, rounds, json_out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cells = {}
for f in sorted(glob.glob(os.path.join(work, "*.json"))):
    mode, v, hz, r = os.path.basename(f)[:-5].split("-")
    try:
        rep = json.load(open(f))
    except ValueError:
        continue
    cells.setdefault((int(v), int(hz)), {}).setdefault(mode, []).append(rep)

def med(reps, f):
    return statistics.median(f(x) for x in reps)

def ratio(a, b):
    return f"{a / b:.2f}x" if b else "n/a"

print(f"| vCPUs | rate Hz | path | requested/s | delivered/s | (vs kernel) | coalesced | lost | masked | p50 us | (vs kernel) | p99 us | (vs kernel) | max us |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (v, hz) in sorted(cells):
    c = cells[(v, hz)]
    k = c.get("kernel", [])
    for mode in ("kernel", "user"):
        reps = c.get(mode, [])
        if not reps:
            print(f"| {v} | {hz} | {mode} | (no run) |")
            continue
        t = lambda x: x["total"]
        dps = med(reps, lambda x: x["delivered_per_s"])
        rps = med(reps, lambda x: t(x)["requested"] / x["elapsed_s"])
        p50 = med(reps, lambda x: t(x)["latency"]["p50_us"])
        p99 = med(reps, lambda x: t(x)["latency"]["p99_us"])
        mx = med(reps, lambda x: t(x)["latency"]["max_us"])
        co = med(reps, lambda x: t(x)["coalesced"])
        lost = max(t(x)["lost"] for x in reps)
        masked = max(t(x)["delivered_while_masked"] for x in reps)
        if k and mode == "user":
            kd = med(k, lambda x: x["delivered_per_s"])
            k50 = med(k, lambda x: t(x)["latency"]["p50_us"])
            k99 = med(k, lambda x: t(x)["latency"]["p99_us"])
            rd, r50, r99 = ratio(dps, kd), ratio(p50, k50), ratio(p99, k99)
        else:
            rd = r50 = r99 = "1.00x" if mode == "kernel" else "n/a"
        print(f"| {v} | {hz} | {mode} | {rps:.0f} | {dps:.0f} | {rd} | {co:.0f} | {lost} | {masked} | {p50:.1f} | {r50} | {p99:.1f} | {r99} | {mx:.1f} |")
print(f"\nmedian of {rounds} round(s); lost and masked are the worst round; "
      "ratios are user / kernel (delivered/s: higher is better; latency: lower is better)")
if json_out:
    json.dump({f"{v}-{hz}": c for (v, hz), c in cells.items()}, open(json_out, "w"), indent=1)
PY
