"""PyTorch side of the side-by-side benchmark (scripts/bench/compare.sh).

Times, on random data, the reference's ResNet-18 (scripts/fixtures/make_nn_fixtures.py) at a
given width and batch: a training step (forward, backward, SGD), an eval-mode forward, and a
PGD-style input-gradient step via loss.backward(), as the reference code does them. Prints one
JSON object with images/s (median of the timed runs) and peak resident memory.
"""
import argparse, json, os, resource, statistics, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
import torch
import torch.nn.functional as F
from make_nn_fixtures import ResNet18

parser = argparse.ArgumentParser()
parser.add_argument("--width", type=int, default=64)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

model = ResNet18(args.width)
x = torch.randn(args.batch_size, 3, 32, 32)
y = torch.randint(0, 10, (args.batch_size,))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def rate(step):
    step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return args.batch_size / statistics.median(times)


def train_step():
    model.train()
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def eval_step():
    model.eval()
    with torch.no_grad():
        model(x)


def input_gradient_step():
    model.eval()
    inputs = x.clone().requires_grad_(True)
    F.cross_entropy(model(inputs), y).backward()


result = {
    "framework": f"pytorch {torch.__version__}",
    "width": args.width,
    "batch_size": args.batch_size,
    "threads": args.threads,
    "train_images_per_s": rate(train_step),
    "eval_images_per_s": rate(eval_step),
    "input_gradient_images_per_s": rate(input_gradient_step),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}
print(json.dumps(result, sort_keys=True))
