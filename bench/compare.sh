#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Side-by-side comparison (issue 9): the `pio-loop` guest under
#   ref   reference-vmm                       (release build)
#   min   the minimal kvm-ioctls loop example (reference-vmm/examples/minimal_loop.rs)
#   qemu  QEMU with KVM, same guest code      (bench/qemu-pio-loop.S, only if installed)
# interleaved round by round, with the median over the rounds of:
#   * exits per second,
#   * start-up to the first guest instruction,
#   * peak RSS,
# the ratios to the minimal loop, and the issue's targets with a met / not met verdict.
# It reports; it never fails because of a time. See BENCHMARKS.md.
#
# Needs: cargo, binutils (as, ld, objcopy), GNU time (/usr/bin/time, Debian package `time`),
# python3 (JSON parsing), /dev/kvm. Optional: qemu-system-x86_64 (Debian package
# `qemu-system-x86`), root + tracefs for the exact start-up measurement.

set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/compare.sh [options]

  --rounds R        rounds, each runs every contender once per measurement (default 5)
  --count N         out instructions (= exits) per throughput run (default 500000)
  --no-build        do not run `cargo build` (use the binaries already built)
  --no-qemu         leave QEMU out even if it is installed
  --qemu PATH       QEMU binary (default: qemu-system-x86_64 from PATH)
  --json FILE       also write every sample and the medians as JSON to FILE
  --no-trace        do not use tracefs for start-up (use the whole-run wall time instead)
  -h, --help        this text

Environment: CARGO_TARGET_DIR is honoured (binaries are looked up in cargo's target dir);
REF_BIN and MIN_BIN, if set, name the reference-vmm and minimal_loop binaries to run.
EOF
}

ROUNDS=5
COUNT=500000
BUILD=1
USE_QEMU=1
QEMU_BIN=${QEMU_BIN:-qemu-system-x86_64}
JSON_OUT=
USE_TRACE=1
# Count for the short runs that measure start-up (the loop then costs microseconds).
SMALL_COUNT=1

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --count) COUNT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-qemu) USE_QEMU=0; shift ;;
        --qemu) QEMU_BIN=$2; shift 2 ;;
        --json) JSON_OUT=$2; shift 2 ;;
        --no-trace) USE_TRACE=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
case "$ROUNDS$COUNT" in *[!0-9]*) echo "compare.sh: --rounds and --count take integers" >&2; exit 2 ;; esac
[ "$ROUNDS" -ge 1 ] && [ "$COUNT" -gt "$SMALL_COUNT" ] || { echo "compare.sh: need --rounds >= 1 and --count > $SMALL_COUNT" >&2; exit 2; }

if [ "$COUNT" -lt 200000 ]; then
    echo "# note: --count $COUNT is small: QEMU's exits/s (a difference of whole-process wall times) gets noisy below ~200000" >&2
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vmm-bench.XXXXXX")
TRACE_INST=
cleanup() {
    if [ -n "$TRACE_INST" ] && [ -d "$TRACE_INST" ]; then
        echo 0 > "$TRACE_INST/tracing_on" 2>/dev/null || true
        echo > "$TRACE_INST/set_event" 2>/dev/null || true
        rmdir "$TRACE_INST" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

die() { echo "compare.sh: $*" >&2; exit 1; }
calc() { awk "BEGIN { $1 }"; }
note() { echo "# $*" >&2; }

# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------
GNU_TIME=/usr/bin/time
"$GNU_TIME" -f %M true >/dev/null 2>&1 || die "GNU time not found at $GNU_TIME (Debian: apt-get install -y time)"
command -v python3 >/dev/null || die "python3 is needed to read the JSON reports"
for t in as ld objcopy; do command -v $t >/dev/null || die "$t not found (Debian: apt-get install -y binutils)"; done
[ -r /dev/kvm ] && [ -w /dev/kvm ] || die "/dev/kvm is not accessible"

if [ "$USE_QEMU" = 1 ] && ! command -v "$QEMU_BIN" >/dev/null; then
    note "$QEMU_BIN not installed: QEMU column skipped (Debian: apt-get install -y qemu-system-x86)"
    USE_QEMU=0
fi

# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------
cd "$ROOT"
if [ "$BUILD" = 1 ]; then
    note "building: cargo build --release -p reference-vmm --examples --bins"
    cargo build --release -p reference-vmm --examples --bins >&2
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
REF_BIN=${REF_BIN:-$TARGET_DIR/release/reference-vmm}
MIN_BIN=${MIN_BIN:-$TARGET_DIR/release/examples/minimal_loop}

# The QEMU images: one per count, from bench/qemu-pio-loop.S.
qemu_image() { # COUNT -> path of the flat image
    local n=$1 img=$WORK/qemu-pio-loop-$1.bin
    if [ ! -f "$img" ]; then
        as --64 --defsym COUNT="$n" -o "$WORK/q-$n.o" "$HERE/qemu-pio-loop.S"
        ld -m elf_x86_64 -Ttext=0xf0000 -e 0xf0000 -o "$WORK/q-$n.elf" "$WORK/q-$n.o"
        objcopy -O binary -j .text "$WORK/q-$n.elf" "$img"
        [ "$(stat -c %s "$img")" = 65536 ] || die "QEMU image is not 64 KiB"
    fi
    echo "$img"
}
QEMU_MEM_MIB=16

# Is the QEMU guest's loop byte for byte reference-vmm's? Compares reference-vmm's built
# pio-loop.bin without its final `hlt; jmp done` (f4 eb fd) with the image at `start`.
same_guest_check() {
    local ref_img img elf off n
    ref_img=$(ls -t "$TARGET_DIR"/release/build/reference-vmm-*/out/pio-loop.bin 2>/dev/null | head -n 1 || true)
    [ -n "$ref_img" ] || { echo "not checked (reference-vmm's built pio-loop.bin not found)"; return; }
    img=$(qemu_image "$COUNT"); elf=$WORK/q-$COUNT.elf
    off=$(( 0x$(nm "$elf" | awk '$3 == "start" { print $1 }') - 0xf0000 ))
    n=$(( $(stat -c %s "$ref_img") - 3 ))
    if [ "$(tail -c 3 "$ref_img" | od -An -tx1 | tr -d ' \n')" = f4ebfd ] &&
        cmp -s -n "$n" "$ref_img" <(tail -c +$((off + 1)) "$img"); then
        echo "identical to reference-vmm's pio-loop.bin up to its final hlt ($n bytes)"
    else
        echo "DIFFERS from $ref_img (update bench/qemu-pio-loop.S)"
    fi
}
QEMU_EXIT_STATUS=33   # (0x10 << 1) | 1, see qemu-pio-loop.S

# ---------------------------------------------------------------------------------------
# The contenders: cmd_<name> COUNT prints the command line, one word per line.
# ---------------------------------------------------------------------------------------
cmd_ref() { printf '%s\n' "$REF_BIN" run --guest pio-loop --count "$1" --format json; }
cmd_min() { printf '%s\n' "$MIN_BIN" --count "$1"; }
cmd_qemu() {
    printf '%s\n' "$QEMU_BIN" -accel kvm -cpu host -machine pc -m "$QEMU_MEM_MIB" \
        -nodefaults -no-user-config -display none -no-reboot \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 -bios "$(qemu_image "$1")"
}
CONTENDERS=()
for c in ref min; do
    b=REF_BIN; [ $c = min ] && b=MIN_BIN
    if [ -x "${!b}" ]; then CONTENDERS+=("$c"); else note "${!b} not built: left out"; fi
done
if [ "$USE_QEMU" = 1 ]; then
    CONTENDERS+=(qemu)
    # Assemble both images here, in the main shell, so that a failure stops the script.
    qemu_image "$COUNT" > /dev/null
    qemu_image "$SMALL_COUNT" > /dev/null
fi
[ ${#CONTENDERS[@]} -gt 0 ] || die "nothing to run"

declare -A LABEL=([ref]="reference-vmm" [min]="minimal kvm-ioctls loop" [qemu]="QEMU -accel kvm")

# Checks a finished run and prints "exits run_seconds own_startup_us" from the contender's
# own report ("-" where it has none). Status 1 if the run failed.
parse_own() { # NAME STATUS STDOUT_FILE
    local name=$1 status=$2 out=$3
    case "$name" in
        qemu)
            [ "$status" = "$QEMU_EXIT_STATUS" ] || return 1
            echo "- - -" ;;
        ref|min)
            [ "$status" = 0 ] || return 1
            python3 - "$out" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
# The whole output is one JSON document (reference-vmm, pretty-printed), or its last
# JSON line is (minimal_loop prints one line).
try:
    obj = json.loads(text)
except ValueError:
    obj = {}
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line); break
            except ValueError:
                pass
if not isinstance(obj, dict):
    obj = {}
def get(*keys):
    for k in keys:
        if isinstance(obj.get(k), (int, float)):
            return obj[k]
    return None
exits = get("exits_total", "exits")
secs = get("run_seconds", "seconds")
start = get("startup_us")
if secs is None and exits is not None and get("exits_per_sec", "exits_per_second"):
    secs = exits / get("exits_per_sec", "exits_per_second")
if exits is None or secs is None:
    # Text fallback: "... N exits ... S s ..." / "R exits/s".
    m = re.search(r"(\d+)\s+exits\b", text)
    r = re.search(r"([\d.]+)\s*exits/s", text)
    if m and r:
        exits = int(m.group(1)); secs = exits / float(r.group(1))
if exits is None or secs is None:
    sys.exit(1)
f = lambda v: "-" if v is None else repr(v)
print(f(exits), f(secs), f(start))
PY
            ;;
    esac
}

# ---------------------------------------------------------------------------------------
# Start-up measurement through tracefs (root): execve() of the contender's binary
# (syscalls:sys_enter_execve, matched by sched:sched_process_exec) -> its first KVM_RUN
# (syscalls:sys_enter_ioctl, cmd 0xae80 = _IO(KVMIO, 0x80)) -> its first PIO exit
# (kvm:kvm_pio, the guest's first `out`).
# Same kernel clock, same definition for every contender. Fallback: wall time of a whole
# SMALL_COUNT run, an upper bound (includes tear-down).
# ---------------------------------------------------------------------------------------
for tr in /sys/kernel/tracing /sys/kernel/debug/tracing; do
    [ "$USE_TRACE" = 1 ] || break
    if [ -d "$tr/instances" ] && [ -w "$tr/instances" ] && [ -d "$tr/events/syscalls/sys_enter_ioctl" ] \
        && [ -d "$tr/events/kvm/kvm_pio" ]; then
        TRACE_INST=$tr/instances/vmm-bench-$$
        break
    fi
done
if [ -n "$TRACE_INST" ]; then
    if mkdir "$TRACE_INST" 2>/dev/null &&
        echo 0 > "$TRACE_INST/tracing_on" &&
        echo mono > "$TRACE_INST/trace_clock" &&
        echo 1 > "$TRACE_INST/options/event-fork" &&
        echo 1 > "$TRACE_INST/options/record-tgid" &&
        echo 2048 > "$TRACE_INST/buffer_size_kb" &&
        echo 'syscalls:sys_enter_execve sched:sched_process_exec syscalls:sys_enter_ioctl kvm:kvm_pio' > "$TRACE_INST/set_event" &&
        echo 'cmd == 0xae80' > "$TRACE_INST/events/syscalls/sys_enter_ioctl/filter"; then
        STARTUP_METHOD="tracefs: execve() -> first KVM_RUN ioctl (and -> first PIO exit)"
    else
        note "tracefs not usable; start-up falls back to the wall time of a count=$SMALL_COUNT run"
        rmdir "$TRACE_INST" 2>/dev/null || true
        TRACE_INST=
    fi
fi
[ -n "$TRACE_INST" ] || STARTUP_METHOD="wall time of a whole count=$SMALL_COUNT run (upper bound)"

# Runs a command under the trace; prints "exec_to_run_us exec_to_pio_us" ("- -" if absent).
traced_startup() { # NAME COUNT
    local name=$1 n=$2 exe
    local -a cmd
    mapfile -t cmd < <("cmd_$name" "$n")
    exe=$(basename "${cmd[0]}")
    # Trace only this subshell and what it forks (event-fork): other processes stay out.
    echo > "$TRACE_INST/trace"
    echo "$BASHPID" > "$TRACE_INST/set_event_pid"
    echo 1 > "$TRACE_INST/tracing_on"
    local status=0
    "${cmd[@]}" > "$WORK/out" 2> "$WORK/err" || status=$?
    echo 0 > "$TRACE_INST/tracing_on"
    echo > "$TRACE_INST/set_event_pid"
    parse_own "$name" "$status" "$WORK/out" > /dev/null || { echo "- -"; return; }
    # Lines: "<comm>-<tid> (<tgid>) [cpu] flags <ts>: <event>: ...". Start = the execve()
    # call of the process whose sched_process_exec names the contender's binary.
    awk -v exe="$exe" '
        /^#/ { next }
        {
            if (!match($0, /[0-9]+\.[0-9]+: /)) next
            ts = substr($0, RSTART, RLENGTH - 2) + 0
            if (!match($0, /\( *[0-9]+\)/)) next
            tgid = substr($0, RSTART + 1, RLENGTH - 2) + 0
        }
        /sys_execve\(/ { execve[tgid] = ts; next }
        /sched_process_exec: / {
            f = $0; sub(/.*filename=/, "", f); sub(/ .*/, "", f); n = split(f, p, "/")
            if (p[n] == exe) { pid = tgid; t0 = (tgid in execve) ? execve[tgid] : ts; trun = ""; tpio = "" }
            next
        }
        pid != "" && tgid == pid && /sys_ioctl\(/ && trun == "" { trun = ts }
        pid != "" && tgid == pid && /kvm_pio: / && tpio == "" { tpio = ts }
        END {
            if (t0 == "" || trun == "") { print "- -"; exit }
            printf "%.1f %s\n", (trun - t0) * 1e6, (tpio == "" ? "-" : sprintf("%.1f", (tpio - t0) * 1e6))
        }' "$TRACE_INST/trace"
}

# Runs a command untraced under GNU time;
# prints "wall_s cpu_s maxrss_kib exits run_s own_startup_us".
timed_run() { # NAME COUNT
    local name=$1 n=$2 t0 t1 status=0
    local -a cmd
    mapfile -t cmd < <("cmd_$name" "$n")
    t0=$EPOCHREALTIME
    # In a subshell of its own so that bash's `times` (children's user and sys CPU time,
    # millisecond resolution, every thread of every waited-for descendant) covers this run only.
    (
        "$GNU_TIME" -o "$WORK/time" -f '%M' "${cmd[@]}" > "$WORK/out" 2> "$WORK/err"
        echo $? > "$WORK/status"
        times > "$WORK/times"
    )
    t1=$EPOCHREALTIME
    status=$(cat "$WORK/status")
    local own
    if ! own=$(parse_own "$name" "$status" "$WORK/out"); then
        note "${LABEL[$name]} failed (status $status); command: ${cmd[*]}"
        sed 's/^/#   /' "$WORK/err" "$WORK/out" | tail -n 8 >&2
        return 1
    fi
    # GNU time prints "Command exited with non-zero status N" first for QEMU: last line.
    local cpu
    cpu=$(awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] } print s }' "$WORK/times")
    echo "$(calc "printf \"%.6f\", $t1 - $t0") $cpu $(tail -n 1 "$WORK/time") $own"
}

# ---------------------------------------------------------------------------------------
# Machine
# ---------------------------------------------------------------------------------------
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
KVM_FLAVOUR=$( (zcat /proc/config.gz 2>/dev/null || cat "/boot/config-$(uname -r)" 2>/dev/null || true) |
    awk -F= '/^CONFIG_KVM_(INTEL|AMD|PVM)=[ym]$/ { sub("CONFIG_", "", $1); printf "%s%s", sep, tolower($1); sep = ", " }')
CPU_VIRT=$(grep -o -w -E 'vmx|svm' /proc/cpuinfo | sort -u | tr '\n' ' ' || true)
echo "## vmx-toolkit side-by-side benchmark (bench/compare.sh)"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty tree)')"
echo "- machine: $(nproc) CPUs, $CPU_MODEL, kernel $(uname -r); KVM back end: ${KVM_FLAVOUR:-unknown}; CPU flags: ${CPU_VIRT:-no vmx/svm}"
echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- rounds: $ROUNDS; $COUNT exits per throughput run; contenders: ${CONTENDERS[*]}"
if [ "$USE_QEMU" = 1 ]; then
    echo "- qemu: $("$QEMU_BIN" --version | head -n 1); guest bench/qemu-pio-loop.S, loop $(same_guest_check)"
fi
echo "- start-up method: $STARTUP_METHOD"
echo

# ---------------------------------------------------------------------------------------
# Rounds
# ---------------------------------------------------------------------------------------
declare -A S   # samples: S[name.metric] = space-separated list
declare -A R   # per round, for paired ratios: R[name.metric.round]
add() { S[$1.$2]="${S[$1.$2]:-} $4"; R[$1.$2.$3]=$4; }

note "warm-up (page cache, lazy binding): one short run each"
for c in "${CONTENDERS[@]}"; do timed_run "$c" "$SMALL_COUNT" > /dev/null || die "${LABEL[$c]} does not run"; done

nc=${#CONTENDERS[@]}
for ((r = 0; r < ROUNDS; r++)); do
    # Rotate the order every round so that no contender always runs first or last.
    order=()
    for ((i = 0; i < nc; i++)); do order+=("${CONTENDERS[$(((i + r) % nc))]}"); done
    load=$(cut -d' ' -f1 /proc/loadavg)
    LOADS="${LOADS:-} $load"
    note "round $((r + 1))/$ROUNDS: ${order[*]}  (load $load)"
    for c in "${order[@]}"; do
        read -r wall cpu rss exits secs own_start < <(timed_run "$c" "$COUNT" || echo fail)
        [ "$wall" != fail ] || continue
        read -r swall scpu _ _ _ _ < <(timed_run "$c" "$SMALL_COUNT" || echo fail)
        add "$c" rss_kib "$r" "$rss"
        # exits/s, own clock: the contender's clock around its KVM_RUN loop (QEMU has none).
        if [ "$exits" != - ] && [ "$secs" != - ]; then
            add "$c" own_eps "$r" "$(calc "printf \"%.0f\", $exits / $secs")"
        fi
        if [ "$swall" != fail ]; then
            add "$c" small_wall_ms "$r" "$(calc "printf \"%.1f\", $swall * 1000")"
            # Whole-process differences between the COUNT and the SMALL_COUNT run: start-up
            # and tear-down cancel out. Wall clock (same for every contender; QEMU's only
            # throughput figure) and CPU time (user + sys, all threads; steadier than wall
            # time when other work competes for the CPUs).
            add "$c" wall_eps "$r" "$(calc "d = $wall - $swall; if (d > 0) printf \"%.0f\", ($COUNT - $SMALL_COUNT) / d; else print \"nan\"")"
            add "$c" cpu_eps "$r" "$(calc "d = $cpu - $scpu; if (d > 0) printf \"%.0f\", ($COUNT - $SMALL_COUNT) / d; else print \"nan\"")"
        fi
        [ "$own_start" != - ] && add "$c" own_startup_us "$r" "$own_start"
        if [ -n "$TRACE_INST" ]; then
            read -r us_run us_pio < <(traced_startup "$c" "$SMALL_COUNT")
            [ "$us_run" != - ] && add "$c" startup_us "$r" "$us_run"
            [ "$us_pio" != - ] && add "$c" startup_pio_us "$r" "$us_pio"
        elif [ "$swall" != fail ]; then
            add "$c" startup_us "$r" "$(calc "printf \"%.1f\", $swall * 1e6")"
        fi
    done
    # The headline exits/s: own clock where there is one, else the wall-clock difference.
    for c in "${CONTENDERS[@]}"; do
        v=${R[$c.own_eps.$r]:-${R[$c.wall_eps.$r]:-}}
        [ -n "$v" ] && add "$c" eps "$r" "$v"
    done
done

# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
median() { # values... -> median ("-" if none)
    printf '%s\n' "$@" | awk '/^[0-9.]+$/' | sort -g | awk '
        { a[NR] = $1 } END {
            if (NR == 0) { print "-"; exit }
            if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
spread() { # values... -> "min..max"
    printf '%s\n' "$@" | awk '/^[0-9.]+$/' | sort -g | awk '
        NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%s..%s", lo, hi; else print "-" }'
}
METRICS="eps own_eps wall_eps cpu_eps startup_us startup_pio_us own_startup_us rss_kib small_wall_ms"
declare -A M
for c in ref min qemu; do
    for m in $METRICS; do
        # shellcheck disable=SC2086
        M[$c.$m]=$(median ${S[$c.$m]:-})
        # Paired ratio to the minimal loop: median over the rounds of (c / min) measured in
        # the same round, so that drift in the machine's load hits both sides alike.
        ratios=()
        for ((r = 0; r < ROUNDS; r++)); do
            a=${R[$c.$m.$r]:-} b=${R[min.$m.$r]:-}
            [ -n "$a" ] && [ -n "$b" ] && [ "$a" != nan ] && [ "$b" != nan ] &&
                ratios+=("$(calc "if ($b > 0) printf \"%.4f\", $a / $b")")
        done
        M[$c.$m.x]=$(median "${ratios[@]}")
        S[$c.$m.x]="${ratios[*]}"
    done
done
fmt() { # number printf-format -> formatted ("-" passes through)
    awk -v v="$1" -v f="$2" 'BEGIN { if (v == "-") print "-"; else printf f, v }'
}
x() { fmt "${M[$1.$2.x]}" '%.3f'; }

# shellcheck disable=SC2086
echo "Load average (1 min) at the start of each round: $(spread $LOADS); at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "(The benchmark itself keeps about one CPU busy.)"
echo
echo "### Exit throughput (median of $ROUNDS rounds)"
echo
echo "| contender | exits/s | x min | exits/s, wall-clock diff | x min | exits per CPU-second | x min |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for c in "${CONTENDERS[@]}"; do
    echo "| ${LABEL[$c]} | $(fmt "${M[$c.eps]}" %.0f) | $(x $c eps) | $(fmt "${M[$c.wall_eps]}" %.0f) | $(x $c wall_eps) | $(fmt "${M[$c.cpu_eps]}" %.0f) | $(x $c cpu_eps) |"
done
echo
echo "### Start-up and memory (median of $ROUNDS rounds)"
echo
echo "| contender | start-up: to 1st KVM_RUN | x min | to 1st PIO exit | own startup_us | whole run, count $SMALL_COUNT | peak RSS | x min |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for c in "${CONTENDERS[@]}"; do
    echo "| ${LABEL[$c]} | $(fmt "${M[$c.startup_us]}" '%.0f us') | $(x $c startup_us) | $(fmt "${M[$c.startup_pio_us]}" '%.0f us') | $(fmt "${M[$c.own_startup_us]}" '%.0f us') | $(fmt "${M[$c.small_wall_ms]}" '%.1f ms') | $(fmt "${M[$c.rss_kib]}" '%.0f KiB') | $(x $c rss_kib) |"
done
echo
echo "Spread over the rounds (min..max):"
echo
for c in "${CONTENDERS[@]}"; do
    # shellcheck disable=SC2086
    echo "- ${LABEL[$c]}: exits/s $(spread ${S[$c.eps]:-}), x min $(spread ${S[$c.eps.x]:-}); exits per CPU-s $(spread ${S[$c.cpu_eps]:-}); start-up us $(spread ${S[$c.startup_us]:-}); peak RSS KiB $(spread ${S[$c.rss_kib]:-})"
done
cat <<EOF2

Definitions. exits/s: the contender's own clock around its KVM_RUN loop (reference-vmm:
exits_total / run_seconds of its JSON report; minimal loop: the same fields of its JSON
line); QEMU reports none, so its exits/s is the wall-clock difference. Wall-clock diff:
(count - $SMALL_COUNT) / (wall(count) - wall($SMALL_COUNT)) over whole processes, start-up and tear-down
cancel out. Exits per CPU-second: the same with user + sys CPU time (all threads; bash times).
x min: median over the rounds of the ratio to the minimal loop of the same round.
Start-up: $STARTUP_METHOD; own startup_us: the
contender's report (its clock from main() to the first KVM_RUN; excludes exec and loading).
Peak RSS: GNU time %M (max resident set size) of the count run.
EOF2
echo

# Targets of issue 9 (reported, never enforced).
verdict() { # awk condition on a and b -> MET / NOT MET / n/a
    awk -v a="$2" -v b="$3" "BEGIN { if (a == \"-\" || b == \"-\") print \"n/a\"; else if ($1) print \"MET\"; else print \"NOT MET\" }"
}
REF_MEM_MIB=-
if [ -x "$REF_BIN" ]; then
    REF_MEM_MIB=$("$REF_BIN" run --help 2>/dev/null |
        awk '/--mem-mib/ { f = 1 } f && /\[default: [0-9]+\]/ { sub(/.*\[default: /, ""); sub(/\].*/, ""); print; exit }')
    [ -n "$REF_MEM_MIB" ] || REF_MEM_MIB=-
fi
RSS_LIMIT_KIB=$(awk -v m="$REF_MEM_MIB" 'BEGIN { if (m == "-") print "-"; else print (8 + m) * 1024 }')
echo "### Targets (issue 9; reported, never enforced)"
echo
echo "| target | measured | verdict |"
echo "|---|---|---|"
echo "| reference-vmm exits/s >= 0.97 x minimal loop | $(x ref eps) x (CPU time: $(x ref cpu_eps) x) | $(verdict 'a >= 0.97' "${M[ref.eps.x]}" 0) |"
if [ -n "${S[qemu.eps]:-}" ]; then
    echo "| reference-vmm exits/s >= QEMU's | $(fmt "${M[ref.eps]}" %.0f) vs $(fmt "${M[qemu.eps]}" %.0f) | $(verdict 'a >= b' "${M[ref.eps]}" "${M[qemu.eps]}") |"
fi
echo "| reference-vmm start-up < 5 ms (to 1st KVM_RUN, see method) | $(fmt "${M[ref.startup_us]}" '%.0f us') (own startup_us: $(fmt "${M[ref.own_startup_us]}" '%.0f us')) | $(verdict 'a < 5000' "${M[ref.startup_us]}" 0) |"
if [ -n "${S[qemu.startup_us]:-}" ]; then
    echo "| reference-vmm start-up < 1/10 of QEMU's | $(fmt "${M[ref.startup_us]}" '%.0f us') vs $(fmt "${M[qemu.startup_us]}" '%.0f us') / 10 | $(verdict 'a < b / 10' "${M[ref.startup_us]}" "${M[qemu.startup_us]}") |"
fi
echo "| reference-vmm peak RSS < 8 MiB + guest memory (--mem-mib default $REF_MEM_MIB) | $(fmt "${M[ref.rss_kib]}" '%.0f KiB') vs $(fmt "$RSS_LIMIT_KIB" '%.0f KiB') | $(verdict 'a < b' "${M[ref.rss_kib]}" "$RSS_LIMIT_KIB") |"
echo
echo "Per-exit decode / policy < 100 ns and VMCS configuration < 1 us: the crates' criterion"
echo "benches (cargo bench -p CRATE), summarised in BENCHMARKS.md."

if [ -n "$JSON_OUT" ]; then
    {
        for c in "${CONTENDERS[@]}"; do
            for m in $METRICS; do
                echo "$c $m median ${M[$c.$m]}"
                echo "$c $m samples ${S[$c.$m]:-}"
                echo "$c $m ratio_to_min ${M[$c.$m.x]}"
            done
        done
    } | python3 -c '
import json, sys
out = {}
for line in sys.stdin:
    c, m, kind, *vals = line.split()
    num = [float(v) for v in vals if v not in ("-", "nan")]
    d = out.setdefault(c, {}).setdefault(m, {})
    d[kind] = num if kind == "samples" else (num[0] if num else None)
json.dump(out, open(sys.argv[1], "w"), indent=1)
' "$JSON_OUT"
    note "samples written to $JSON_OUT"
fi
