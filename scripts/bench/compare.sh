#!/usr/bin/env bash
# Side-by-side benchmark: BackdoorLab (oneDNN) and PyTorch on the same machine, one after the
# other in one run, so the ratios are fair on a noisy machine. Needs `pip install torch` for the
# PyTorch half (skipped, with a note, when torch is absent).
# Usage: scripts/bench/compare.sh [WIDTH] [BATCH] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/../.."
width=${1:-64}; batch=${2:-128}; steps=${3:-3}
swift build -c release --product backdoor >/dev/null
ours=$(.build/release/backdoor bench --json --extended --width "$width" --batch-size "$batch" --steps "$steps" \
    --eval-batches "$steps" --threads 2)
if python3 -c "import torch" 2>/dev/null; then
    theirs=$(python3 scripts/bench/pytorch_reference.py --width "$width" --batch-size "$batch" --steps "$steps" --threads 2)
else
    echo "note: torch is not installed; only BackdoorLab was measured" >&2
    theirs='{}'
fi
python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'measure':32} {'BackdoorLab':>12} {'PyTorch':>12} {'ratio':>8}")
for key in ["train_images_per_s", "eval_images_per_s", "input_gradient_images_per_s", "peak_rss_mib"]:
    a, b = ours.get(key), theirs.get(key)
    ratio = f"{a / b:8.2f}" if a and b else ""
    print(f"{key:32} {a if a is None else round(a, 1):>12} {b if b is None else round(b, 1):>12} {ratio}")
print(json.dumps({"backdoorlab": ours, "pytorch": theirs}, sort_keys=True))
PY
