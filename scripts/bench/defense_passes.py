"""PyTorch side of scripts/bench/defenses.sh: replays the model passes one `backdoor defend` run
recorded (result.json's `passes`: per kind and batch size, how many forwards and which backward
followed), on PyTorch's same network, and times them.

The replay is what PyTorch must do at least to run that defense: the same forwards and backwards
at the same batch sizes, an SGD step (momentum, weight decay) after each backward into the
weights, nothing else (no data loading, augmentation or bookkeeping, which the defense's own
seconds include). CLP runs no passes: its work, the largest singular value of every channel's
kernel, is replayed with torch.linalg.matrix_norm.
Prints one JSON object: seconds, the pass count, the framework.
"""
import argparse, json, os, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
import torch
import torch.nn.functional as F
from make_nn_fixtures import ResNet18

parser = argparse.ArgumentParser()
parser.add_argument("result", help="result.json of a `backdoor defend` run")
parser.add_argument("--width", type=int, default=64)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
with open(args.result) as f:
    result = json.load(f)
torch.set_num_threads(args.threads)
torch.manual_seed(0)
model = ResNet18(args.width)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
batch_norm = [p for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in (m.weight, m.bias)]
inputs = {}


def images(batch):
    if batch not in inputs:
        inputs[batch] = (torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,)))
    return inputs[batch]


def run(entry):
    x, y = images(entry["batch"])
    model.train(entry["mode"] == "train")
    if entry["backward"] == "none":
        with torch.no_grad():
            model(x)
        return
    weights = entry["backward"] == "weights"
    for p in model.parameters():
        p.requires_grad_(weights)
    if not weights:  # activation gradients and BatchNorm's scale and shift (ANP's and RNP's masks)
        for p in batch_norm:
            p.requires_grad_(True)
    if entry["input_gradient"]:
        x = x.clone().requires_grad_(True)
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    if weights:
        optimizer.step()


def clp():
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            w = m.weight.detach()
            torch.linalg.matrix_norm(w.reshape(w.shape[0], w.shape[1], -1), ord=2)


passes = result.get("passes")
if passes is None:
    sys.exit(f"{args.result}: no \"passes\" (written before BackdoorLab counted them)")
# Warm-up: three passes of each kind (PyTorch's first few passes of a shape are several times
# slower), outside the timing; ours creates its kernels inside the defense's seconds, so this
# favours PyTorch.
for entry in passes:
    for _ in range(3):
        run(entry)
start = time.perf_counter()
if result["defense"] == "clp":
    clp()
for entry in passes:
    for _ in range(entry["count"]):
        run(entry)
seconds = time.perf_counter() - start
print(json.dumps({"framework": f"pytorch {torch.__version__}", "defense": result["defense"], "seconds": seconds,
                  "passes": sum(e["count"] for e in passes), "threads": args.threads}))
