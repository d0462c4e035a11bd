#!/usr/bin/env bash
# Instructions the broker executes per gateway request (user space), counted
# by callgrind: repeatable for the same binary and inputs, whatever else the
# machine is doing, unlike its CPU time. Runs the gateway bench twice with the
# broker under callgrind, with 200 and with 1,200 gateway requests; the
# difference over 1,000 is one request's instructions.
#
#   bash benches/callgrind.sh            # the total per request
#   bash benches/callgrind.sh 40         # and the 40 costliest functions
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo bench -q --bench gateway --no-run
for n in 200 1200; do
    BENCH_BROKER_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$out/cg.$n" \
        cargo bench -q --bench gateway -- --requests "$n" --rounds 1 --downloads 1 --seconds 0 \
        > "$out/bench.$n" 2>&1 || true  # the latency targets miss under valgrind
    test -s "$out/cg.$n" || { cat "$out/bench.$n"; exit 1; }
done
total() { awk '/^totals:/ {print $2}' "$1"; }
a=$(total "$out/cg.200"); b=$(total "$out/cg.1200")
echo "instructions per gateway request: $(( (b - a) / 1000 ))"
if [ -n "${1:-}" ]; then
    for n in 200 1200; do
        callgrind_annotate --inclusive=yes --threshold=100 "$out/cg.$n" > "$out/inc.$n" 2>/dev/null
    done
    python3 - "$out/inc.200" "$out/inc.1200" "$1" <<'PY'
import re, sys
def load(path):
    costs = {}
    for line in open(path):
        m = re.match(r'\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+\S*?:(.*?)\s*\[', line)
        if m:
            costs[m.group(2)] = int(m.group(1).replace(',', ''))
    return costs
a, b = load(sys.argv[1]), load(sys.argv[2])
rows = sorted(((b.get(k, 0) - a.get(k, 0)) / 1000, k) for k in b)
for cost, name in reversed(rows[-int(sys.argv[3]):]):
    print(f"{cost:9.0f}  {name[:150]}")
PY
fi
