#!/usr/bin/env bash
# Side-by-side benchmark: BackdoorLab (oneDNN 2.6) and PyTorch on the same machine, alternating
# in rounds (ours, theirs, ours, theirs, ...) so both see the same machine state; the ratio of
# each measure is the median over rounds of that round's ratio. Needs `pip install torch` for the
# PyTorch half (skipped, with a note, when torch is absent).
#
# Usage: scripts/bench/compare.sh [WIDTH] [BATCH] [STEPS] [ROUNDS]
#   ISA=AVX2 caps both libraries' kernels at AVX2, as on the project's AVX2 machines
#   (oneDNN: DNNL_MAX_CPU_ISA / ONEDNN_MAX_CPU_ISA; MKL: MKL_ENABLE_INSTRUCTIONS).
#   ANP=0 skips the (slowest) ANP-iteration measure.
#   CONV=direct|auto|winograd passes --conv-algorithm to BackdoorLab's bench and ANP runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
width=${1:-64}; batch=${2:-128}; steps=${3:-3}; rounds=${4:-3}
if [ -n "${ISA:-}" ]; then
    export DNNL_MAX_CPU_ISA=$ISA ONEDNN_MAX_CPU_ISA=$ISA MKL_ENABLE_INSTRUCTIONS=$ISA
fi
[ -n "${SKIP_BUILD:-}" ] || swift build -c release --product backdoor >/dev/null  # SKIP_BUILD=1: use the existing build
conv=(); [ -n "${CONV:-}" ] && conv=(--conv-algorithm "$CONV")
have_torch=1
python3 -c "import torch" 2>/dev/null || { have_torch=0; echo "note: torch is not installed; only BackdoorLab is measured" >&2; }
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq "$rounds"); do
    echo "round $round of $rounds (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    ours=$(.build/release/backdoor bench --json --extended --width "$width" --batch-size "$batch" --steps "$steps" \
        --eval-batches "$steps" --threads 2 "${conv[@]}" | tr -d '\n')
    theirs='{}'
    if [ $have_torch = 1 ]; then
        theirs=$(python3 scripts/bench/pytorch_reference.py --width "$width" --batch-size "$batch" --steps "$steps" --threads 2)
    fi
    ours_anp='' theirs_anp=''
    if [ "${ANP:-1}" != 0 ]; then
        ours_anp=$(.build/release/backdoor anp --benchmark 2 --width "$width" --batch-size "$batch" --threads 2 "${conv[@]}" | head -1)
        if [ $have_torch = 1 ]; then
            theirs_anp=$(python3 scripts/bench/anp_iteration_pytorch.py --width "$width" --batch-size "$batch" --iterations 2 --threads 2)
        fi
    fi
    printf '%s\t%s\t%s\t%s\n' "$ours" "$theirs" "$ours_anp" "$theirs_anp" >>"$results"
done
python3 - "$results" <<'PY'
import json, re, statistics, sys
rows = []
for line in open(sys.argv[1]):
    ours, theirs, ours_anp, theirs_anp = line.rstrip("\n").split("\t")
    ours, theirs = json.loads(ours), json.loads(theirs)
    # ANP: images per second of one iteration's batch would mislead; compare seconds per iteration.
    for text, side in ((ours_anp, ours), (theirs_anp, theirs)):
        match = re.search(r"([0-9.]+) s wall", text)
        if match:
            side["anp_iteration_s"] = float(match.group(1))
    rows.append((ours, theirs))
keys = ["train_images_per_s", "eval_images_per_s", "input_gradient_images_per_s", "anp_iteration_s", "peak_rss_mib"]
print(f"{'measure (median of rounds)':32} {'BackdoorLab':>12} {'PyTorch':>12} {'speed-up':>9}  per-round speed-ups")
summary = {}
for key in keys:
    a = [o[key] for o, _ in rows if key in o]
    b = [t[key] for _, t in rows if key in t]
    if not a:
        continue
    # Speed-up: higher is better for rates, lower for seconds and memory.
    per_round = [(o[key] / t[key]) if key.endswith("per_s") else (t[key] / o[key])
                 for o, t in rows if key in o and key in t]
    ratio = statistics.median(per_round) if per_round else None
    summary[key] = {"backdoorlab": statistics.median(a), "pytorch": statistics.median(b) if b else None,
                    "speed_up": ratio, "per_round": per_round}
    pt = f"{statistics.median(b):12.1f}" if b else f"{'':>12}"
    rr = f"{ratio:9.2f}" if ratio else f"{'':>9}"
    print(f"{key:32} {statistics.median(a):12.1f} {pt} {rr}  {' '.join(f'{r:.2f}' for r in per_round)}")
print(json.dumps({"rounds": rows, "summary": summary}, sort_keys=True))
PY
