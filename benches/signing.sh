#!/usr/bin/env bash
# PS256/RS256 assertion signing against `openssl speed rsa2048` in the same
# run: openssl before and after the criterion bench, ratio to their mean.
#
#   bash benches/signing.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v openssl >/dev/null || { apt-get update -q && apt-get install -y -q openssl; }

openssl_rate() { openssl speed -seconds 5 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ {print $6}'; }
before=$(openssl_rate)
out=$(cargo bench --quiet --bench signing -- --measurement-time 5 2>&1)
after=$(openssl_rate)
echo "$out" | grep -E '^assertion/|time:'
python3 - "$before" "$after" <<PY
import re, sys
openssl = (float(sys.argv[1]) + float(sys.argv[2])) / 2
text = """$out"""
units = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
print(f"\nopenssl speed rsa2048: {float(sys.argv[1]):.0f} and {float(sys.argv[2]):.0f} sign/s (mean {openssl:.0f})")
for name, value, unit in re.findall(r"assertion/(\w+)\s+time:\s+\[\S+ \S+ (\S+) (\S+) ", text):
    rate = 1 / (float(value) * units[unit])
    ratio = rate / openssl
    status = "ok" if ratio >= 0.8 or name != "PS256" else "MISSED"
    print(f"{name}: {rate:.0f} assertions/s = {ratio:.2f} x openssl (target for PS256 >= 0.8)  {status}")
PY
