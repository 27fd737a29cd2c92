#!/usr/bin/env bash
# Model-zoo speed table: per model, `backdoor bench --model M` beside PyTorch's same model (the
# definitions the golden fixtures are made from, via scripts/bench/pytorch_reference.py), batch
# 128, 2 threads. Each round runs ours and theirs back to back per model, in alternating order
# (ours first in odd rounds, theirs first in even ones) so that both see the same machine state
# and neither always runs second; the 1-minute load average is recorded before and after each
# pair. The ratio of each measure is the median over rounds of that round's ours / theirs.
# Prints a markdown table, then one JSON object with every round.
#
# Usage: [MODELS="resnet18 vgg16-bn"] [WIDTH=64] [BATCH=128] scripts/bench/zoo.sh [ROUNDS] [STEPS] [EVAL_BATCHES]
#   WIDTH is the ResNet family's width (the others run at their reference widths); STEPS timed
#   training steps and EVAL_BATCHES timed evaluation batches, each after one warm-up, per run.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-2}; steps=${2:-1}; eval_batches=${3:-2}
width=${WIDTH:-64}; batch=${BATCH:-128}
models=${MODELS:-resnet18 preact-resnet18 vgg16-bn vgg19-bn mobilenetv2}
python3 -c "import torch" 2>/dev/null || { echo "error: scripts/bench/zoo.sh needs torch (pip install torch)" >&2; exit 1; }
swift build -c release --product backdoor >/dev/null
results=$(mktemp)
trap 'rm -f "$results"' EXIT
load() { cut -d' ' -f1 /proc/loadavg; }
width_flag() { case $1 in resnet18|preact-resnet18) echo "--width $width" ;; esac; }
ours() {  # shellcheck disable=SC2046
    .build/release/backdoor bench --json --model "$1" $(width_flag "$1") --batch-size "$batch" --steps "$steps" \
        --eval-batches "$eval_batches" --threads 2 | tr -d '\n'
}
theirs() {  # shellcheck disable=SC2046
    python3 scripts/bench/pytorch_reference.py --model "$1" $(width_flag "$1") --batch-size "$batch" --steps "$steps" \
        --eval-batches "$eval_batches" --threads 2 --no-input-gradient
}
for round in $(seq "$rounds"); do
    for model in $models; do
        before=$(load)
        if [ $((round % 2)) = 1 ]; then o=$(ours "$model"); t=$(theirs "$model"); else t=$(theirs "$model"); o=$(ours "$model"); fi
        after=$(load)
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$model" "$before" "$after" "$o" "$t" >>"$results"
        echo "round $round of $rounds, $model: load $before -> $after" >&2
    done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = []
for line in open(sys.argv[1]):
    round_, model, before, after, ours, theirs = line.rstrip("\n").split("\t")
    rows.append({"round": int(round_), "model": model, "load": [float(before), float(after)],
                 "ours": json.loads(ours), "theirs": json.loads(theirs)})
models = list(dict.fromkeys(r["model"] for r in rows))
print("| model | width | parameters | train img/s ours | PyTorch | ratio (per round) "
      "| eval img/s ours | PyTorch | ratio (per round) | load |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
summary = {}
for model in models:
    mine = [r for r in rows if r["model"] == model]
    first = mine[0]
    for r in mine:  # the same network on both sides, or the comparison means nothing
        if r["ours"]["parameter_count"] != r["theirs"]["parameter_count"] or r["ours"]["width"] != r["theirs"]["width"]:
            sys.exit("error: %s differs between the sides: %s" % (model, r))
    cells = [model, str(first["ours"]["width"]), f"{first['ours']['parameter_count']:,}"]
    summary[model] = {}
    for key in ("train_images_per_s", "eval_images_per_s"):
        ratios = [r["ours"][key] / r["theirs"][key] for r in mine]
        ours, theirs = (statistics.median(r[side][key] for r in mine) for side in ("ours", "theirs"))
        summary[model][key] = {"ours": ours, "pytorch": theirs, "ratio": statistics.median(ratios), "per_round": ratios}
        cells += [f"{ours:.3g}", f"{theirs:.3g}",
                  f"{statistics.median(ratios):.2f}x ({', '.join(f'{x:.2f}' for x in ratios)})"]
    loads = [x for r in mine for x in r["load"]]
    cells.append(f"{min(loads):.1f}-{max(loads):.1f}")
    print("| " + " | ".join(cells) + " |")
print(json.dumps({"rounds": rows, "summary": summary}, sort_keys=True))
PY
