"""PyTorch side of the side-by-side benchmarks (scripts/bench/compare.sh, scripts/bench/zoo.sh).

Times, on random data, one of the models the golden fixtures are made from (ResNet-18:
scripts/fixtures/make_nn_fixtures.py; the zoo: scripts/fixtures/make_zoo_fixtures.py) at a given
width and batch: a training step (forward, backward, SGD), an eval-mode forward, and (unless
--no-input-gradient) a PGD-style input-gradient step via loss.backward(), as the reference code does them.
Prints one JSON object with images/s (median of the timed runs), the parameter count and peak
resident memory.
"""
import argparse, json, os, resource, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
import torch
import torch.nn.functional as F
from make_nn_fixtures import ResNet18
from make_zoo_fixtures import ARCHITECTURES

# name -> (constructor taking a width, the reference's width); only the ResNets take --width,
# as `backdoor bench` does.
MODELS = {"resnet18": (ResNet18, 64)}
MODELS.update({name: (build, full) for name, build, _, full, _ in ARCHITECTURES})
TAKES_WIDTH = {"resnet18", "preact-resnet18"}

parser = argparse.ArgumentParser()
parser.add_argument("--model", choices=sorted(MODELS), default="resnet18")
parser.add_argument("--width", type=int, help="ResNet family only (default 64)")
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--steps", type=int, default=3, help="timed training (and input-gradient) steps after one warm-up")
parser.add_argument("--eval-batches", type=int, help="timed evaluation batches after one warm-up (default: --steps)")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--no-input-gradient", dest="input_gradient", action="store_false",
                    help="skip the input-gradient (PGD) step")
args = parser.parse_args()
build, width = MODELS[args.model]
if args.width is not None:
    if args.model not in TAKES_WIDTH:
        parser.error("--width is for the ResNet family only, not --model %s" % args.model)
    width = args.width
torch.set_num_threads(args.threads)
torch.manual_seed(0)

model = build(width)
x = torch.randn(args.batch_size, 3, 32, 32)
y = torch.randint(0, 10, (args.batch_size,))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def rate(step, steps):
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    # The same median as `backdoor bench` (the upper one for an even count).
    return args.batch_size / sorted(times)[len(times) // 2]


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
    "model": args.model,
    "width": width,
    "parameter_count": sum(p.numel() for p in model.parameters()),
    "batch_size": args.batch_size,
    "threads": args.threads,
    "train_images_per_s": rate(train_step, args.steps),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "eval_images_per_s": rate(eval_step, args.eval_batches or args.steps),
}
if args.input_gradient:
    result["input_gradient_images_per_s"] = rate(input_gradient_step, args.steps)
print(json.dumps(result, sort_keys=True))
