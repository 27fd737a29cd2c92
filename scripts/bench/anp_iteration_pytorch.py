#!/usr/bin/env python3
"""Seconds per ANP mask-optimisation iteration in PyTorch (the reference's mask_train loop with
NoisyBatchNorm2d: random reset, one signed adversarial step, natural + perturbed mask loss),
to compare with `backdoor anp --benchmark N` in the same session (these machines are noisy).

    python3 scripts/bench/anp_iteration_pytorch.py [--width 64] [--batch-size 128] [--iterations 2] [--threads 2]
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from make_anp_fixtures import NoisyBatchNorm2d, set_perturbed  # noqa: E402
from make_nn_fixtures import ResNet18, bn_modules  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ResNet18(width=args.width, norm_layer=NoisyBatchNorm2d)
    parameters = list(model.named_parameters())
    mask_params = [p for n, p in parameters if "neuron_mask" in n]
    noise_params = [p for n, p in parameters if "neuron_noise" in n]
    mask_opt = torch.optim.SGD(mask_params, lr=0.2, momentum=0.9)
    noise_opt = torch.optim.SGD(noise_params, lr=0.4)
    x = torch.randn(args.batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (args.batch_size,))
    model.train()

    def iteration():
        with torch.no_grad():
            for _, bn in bn_modules(model):
                bn.neuron_noise.uniform_(-0.4, 0.4)
                bn.neuron_noise_bias.uniform_(-0.4, 0.4)
        noise_opt.zero_grad()
        set_perturbed(model, True)
        (-F.cross_entropy(model(x), labels)).backward()
        for p in noise_params:
            p.grad = torch.sign(p.grad)
        noise_opt.step()
        mask_opt.zero_grad()
        set_perturbed(model, True)
        loss_rob = F.cross_entropy(model(x), labels)
        set_perturbed(model, False)
        loss_nat = F.cross_entropy(model(x), labels)
        (0.2 * loss_nat + 0.8 * loss_rob).backward()
        mask_opt.step()
        with torch.no_grad():
            for p in mask_params:
                p.clamp_(0.0, 1.0)

    iteration()  # warm-up
    wall, cpu = time.time(), time.process_time()
    for _ in range(args.iterations):
        iteration()
    print("PyTorch %s ANP iteration, width %d, batch %d, %d threads: %.3f s wall, %.3f s CPU (mean of %d)" % (
        torch.__version__, args.width, args.batch_size, args.threads, (time.time() - wall) / args.iterations,
        (time.process_time() - cpu) / args.iterations, args.iterations))


if __name__ == "__main__":
    main()
