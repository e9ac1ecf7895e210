#!/usr/bin/env bash
# Long fuzzing run of every target (or the ones named), for FUZZING.md's figures.
#
# Usage (from the repository root):
#   fuzz/tools/long_run.sh [-j JOBS] [-t SECONDS] [-n RUNS] [TARGET...]
# Each target runs until RUNS executions (default 10 million) or SECONDS (default
# 1800), JOBS targets at a time (default 1), on stable Rust (--sanitizer none). The
# corpus grows in fuzz/corpus/<target> (seeded from fuzz/seeds/<target>), logs go to
# fuzz/long-run/<target>.log (both git-ignored); a crash stops that target and leaves
# its input in fuzz/artifacts/<target>/. At the end a Markdown table is printed.
set -euo pipefail

jobs=1 seconds=1800 runs=10000000
while getopts "j:t:n:" opt; do
    case "$opt" in
        j) jobs="$OPTARG" ;;
        t) seconds="$OPTARG" ;;
        n) runs="$OPTARG" ;;
        *) echo "usage: $0 [-j JOBS] [-t SECONDS] [-n RUNS] [TARGET...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

cd "$(dirname "$0")/../.."
cargo fuzz build --sanitizer none
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
mkdir -p fuzz/long-run

run_one() {
    local t="$1"
    mkdir -p "fuzz/corpus/$t"
    local start end status=0
    start=$(date +%s)
    cargo fuzz run --sanitizer none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -runs="$runs" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"fuzz/long-run/$t.log" 2>&1 || status=$?
    end=$(date +%s)
    echo "$status $((end - start))" >"fuzz/long-run/$t.status"
}

pids=()
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        sleep 1
    done
    echo "$(date -u +%H:%M:%S) start $t" >&2
    run_one "$t" &
    pids+=("$!")
done
for pid in "${pids[@]}"; do
    wait "$pid" || true
done

echo "| target | executions | exec/s | seconds | corpus | result |"
echo "| --- | ---: | ---: | ---: | ---: | --- |"
for t in "${targets[@]}"; do
    log="fuzz/long-run/$t.log"
    [ -f "fuzz/long-run/$t.status" ] || { echo "| \`$t\` | ? | ? | ? | ? | did not run |"; continue; }
    read -r status wall <"fuzz/long-run/$t.status"
    # libFuzzer's own time ("Done N runs in S second(s)"), else the wall time.
    secs=$(grep -m1 -oE 'runs in [0-9]+ second' "$log" | awk '{print $3}' || true)
    secs=${secs:-$wall}
    execs=$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
    rate=$(grep -m1 '^stat::average_exec_per_sec' "$log" | awk '{print $2}' || true)
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    if [ "$status" -eq 0 ]; then result="no crash"; else result="FAILED (status $status)"; fi
    echo "| \`$t\` | ${execs:-?} | ${rate:-?} | $secs | $corpus | $result |"
done
