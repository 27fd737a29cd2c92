#!/usr/bin/env bash
# A change to the core against the build before it: two `backdoor` binaries on the same machine,
# alternating in rounds (A B, B A, A B, ...) so both see the same machine state. Each measure's
# ratio (B over A for speeds, A over B for times and memory: above 1 means B is better) is the
# median over rounds of that round's ratio.
#
# Usage: [THREADS=2] scripts/bench/ab.sh A_BINARY B_BINARY [WIDTH] [BATCH] [ROUNDS]
set -euo pipefail
a=$1 b=$2 width=${3:-64} batch=${4:-128} rounds=${5:-3}
results=$(mktemp)
trap 'rm -f "$results"' EXIT
measure() {  # binary -> one line: bench JSON <tab> ANP seconds per iteration
    local json anp
    json=$("$1" bench --json --extended --width "$width" --batch-size "$batch" --threads "${THREADS:-2}" | tr -d '\n')
    anp=$("$1" anp --benchmark 2 --width "$width" --batch-size "$batch" --threads "${THREADS:-2}" | head -1 |
        sed -E 's/.*: ([0-9.]+) s wall.*/\1/')
    printf '%s\t%s' "$json" "$anp"
}
for round in $(seq "$rounds"); do
    echo "round $round of $rounds (width $width, batch $batch)" >&2
    if [ $((round % 2)) = 1 ]; then ra=$(measure "$a"); rb=$(measure "$b"); else rb=$(measure "$b"); ra=$(measure "$a"); fi
    printf '%s\t%s\n' "$ra" "$rb" >>"$results"
done
python3 - "$results" "$width" "$batch" <<'PY'
import json, statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
speeds = ["train_images_per_s", "eval_images_per_s", "input_gradient_images_per_s"]
print(f"width {sys.argv[2]}, batch {sys.argv[3]}: B/A per round (above 1: B better), median")
def report(name, pairs, better_high):
    ratios = [(b / a if better_high else a / b) for a, b in pairs]
    print(f"  {name:28s} A {statistics.median(p[0] for p in pairs):9.2f}  B {statistics.median(p[1] for p in pairs):9.2f}"
          f"  ratio {statistics.median(ratios):.3f}  ({', '.join(f'{r:.3f}' for r in ratios)})")
for key in speeds:
    report(key, [(json.loads(r[0])[key], json.loads(r[2])[key]) for r in rows], True)
report("anp_seconds_per_iteration", [(float(r[1]), float(r[3])) for r in rows], False)
for key in ["peak_rss_mib", "peak_rss_mib_all"]:
    report(key, [(json.loads(r[0])[key], json.loads(r[2])[key]) for r in rows], False)
PY
