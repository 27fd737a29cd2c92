#!/usr/bin/env bash
# Per-defense speed beside PyTorch (issue 15): each defense of `backdoor defend` runs on a ResNet-18
# (WIDTH, default 64) with a small budget (below: about 500 defender images, one epoch, few
# iterations; the same settings every round), and scripts/bench/defense_passes.py replays on
# PyTorch's same network exactly the passes that run recorded (result.json's `passes`: forwards,
# backwards, their batch sizes) plus an SGD step per weight backward. The replay is the least work
# PyTorch needs for the defense (no data pipeline), so ours / replay understates our lead.
# Both sides wait passively for their threads (OMP_WAIT_POLICY=PASSIVE; the CLI sets it itself), so
# a shared machine does not starve one of them. The 1-minute load is recorded around each pair; a
# ratio is the median over rounds of replay seconds / our seconds (above 1: we are faster).
# Prints a markdown table, then one JSON object with every round.
#
# Usage: [WIDTH=64] [DEFENSES="ft fp ..."] scripts/bench/defenses.sh [ROUNDS] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-2}; work=${2:-runs/bench-defenses}
width=${WIDTH:-64}
defenses=${DEFENSES:-clp ft fp nad nc rnp fst anp sau ft-sam}
data=${DATA_DIR:-../shared/data/cifar10}
python3 -c "import torch" 2>/dev/null || { echo "error: scripts/bench/defenses.sh needs torch (pip install torch)" >&2; exit 1; }
[ -x .build/release/backdoor ] || swift build -c release --product backdoor >/dev/null
bin=.build/release/backdoor
mkdir -p "$work"
model="$work/model"
if [ ! -f "$model/model_last.safetensors" ]; then  # any backdoored width-$width model: one short epoch
    $bin train --poison-type badnets --width "$width" --epochs 1 --train-limit 1024 --test-limit 256 --augment false \
        --data-dir "$data" --output-dir "$model" --overwrite --quiet >&2
fi
budget() {
    case $1 in
        clp) echo "" ;;
        ft|fst|ft-sam) echo "--epochs 1" ;;
        fp) echo "--epochs 1 --acc-ratio 0.01" ;;
        nad) echo "--epochs 1" ;;
        nc) echo "--set nc_epoch=1 --set nc_images=128 --epochs 1" ;;
        rnp) echo "--set unlearning_epochs=1 --set recovering_epochs=1 --set pruning_step=0.3" ;;
        anp) echo "--nb-iter 10" ;;
        sau) echo "--epochs 1 --batch-size 128" ;;
    esac
}
results=$(mktemp)
trap 'rm -f "$results"' EXIT
load() { cut -d' ' -f1 /proc/loadavg; }
ours() {  # shellcheck disable=SC2046
    local out="$work/$1-$2"
    $bin defend --defense "$1" --checkpoint "$model/model_last.safetensors" --trigger-info "$model/trigger_info.safetensors" \
        --clean-frac 0.01 --test-limit 256 --threads 2 --data-dir "$data" --output-dir "$out" $(budget "$1") >/dev/null
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"seconds": r["seconds"], "passes": sum(e["count"] for e in r["passes"])}))' "$out/result.json"
}
theirs() { OMP_WAIT_POLICY=PASSIVE python3 scripts/bench/defense_passes.py "$work/$1-$2/result.json" --width "$width" --threads 2; }
for round in $(seq "$rounds"); do
    for defense in $defenses; do
        before=$(load)
        # PyTorch replays the passes of this round's own run, so ours runs first; the order of the
        # defenses alternates instead, and so does a repeat of PyTorch before ours in even rounds.
        if [ $((round % 2)) = 0 ] && [ -f "$work/$defense-$((round - 1))/result.json" ]; then
            cp -r "$work/$defense-$((round - 1))" "$work/$defense-prev"
            t=$(theirs "$defense" prev); o=$(ours "$defense" "$round")
        else
            o=$(ours "$defense" "$round"); t=$(theirs "$defense" "$round")
        fi
        after=$(load)
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$defense" "$before" "$after" "$o" "$t" >>"$results"
        echo "round $round of $rounds, $defense: ours $o, pytorch $t, load $before -> $after" >&2
    done
done
python3 - "$results" "$width" <<'PY'
import json, statistics, sys
rows = []
for line in open(sys.argv[1]):
    round_, defense, before, after, ours, theirs = line.rstrip("\n").split("\t")
    rows.append({"round": int(round_), "defense": defense, "load": [float(before), float(after)],
                 "ours": json.loads(ours), "theirs": json.loads(theirs)})
print(f"| defense (width {sys.argv[2]}) | passes | ours s | PyTorch replay s | speed-up (per round) | load |")
print("| --- | --- | --- | --- | --- | --- |")
summary = {}
for defense in dict.fromkeys(r["defense"] for r in rows):
    mine = [r for r in rows if r["defense"] == defense]
    ratios = [r["theirs"]["seconds"] / r["ours"]["seconds"] for r in mine]
    ours, theirs = (statistics.median(r[s]["seconds"] for r in mine) for s in ("ours", "theirs"))
    loads = [x for r in mine for x in r["load"]]
    summary[defense] = {"ours": ours, "pytorch_replay": theirs, "speedup": statistics.median(ratios), "per_round": ratios}
    print(f"| {defense} | {mine[0]['ours']['passes']} | {ours:.1f} | {theirs:.1f} | {statistics.median(ratios):.2f}x "
          f"({', '.join(f'{x:.2f}' for x in ratios)}) | {min(loads):.1f}-{max(loads):.1f} |")
print(json.dumps({"rounds": rows, "summary": summary}, sort_keys=True))
PY
