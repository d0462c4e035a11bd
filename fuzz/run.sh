#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 30) each, starting from the
# committed seed corpus (fuzz/corpus/<target>; new inputs go to
# fuzz/work/<target>, not into the repository), and prints one line per
# target: executions, corpus size, and whether it found a crash.
#
#   bash fuzz/run.sh [SECONDS]
#
# cargo-fuzz drives libFuzzer with sanitizers, which need nightly flags:
# RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=(query host config authority_response credentials graph_path)

cargo fuzz build --release
status=0
for target in "${targets[@]}"; do
    mkdir -p "work/$target"
    log="work/$target.log"
    if cargo fuzz run --release "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result="CRASH (see fuzz/$log and fuzz/artifacts/$target)"
        status=1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    corpus=$(ls "work/$target" "corpus/$target" 2>/dev/null | grep -vc ':$' || true)
    printf '%-20s %10s runs in %ss  corpus %s inputs  %s\n' "$target" "$runs" "$seconds" "$corpus" "$result"
done
exit $status
