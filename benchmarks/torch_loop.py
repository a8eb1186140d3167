"""The M-SAM step as a plain hand-written PyTorch loop (no Keras): the comparison point users
would otherwise pick, written the way the field's research code is (AGM/OGM-GE style).

Same reference model as benchmarks/step_time.py (audio (1,40,40) and visual (1,28,28); per
modality Conv(16,3,s2) → Conv(32,3,s2) → global average pool → Linear(64); concat → Linear(10)),
batch 64, SGD with momentum 0.9, ρ = 0.05. Per step: the coalitions (∅, audio, visual, both) in
eval mode under `no_grad`, one forward each; exact two-modality Shapley of the accuracy; then the
SAM first step (backward, ε = ρ g/‖g‖, perturb in place), the second forward/backward, restore,
mix g = v_d·g1 + (1 − v_d)·g0 and `optimizer.step()`. A plain loop (one forward/backward) is
timed too.

    python benchmarks/torch_loop.py [--steps 30 --epochs 6 --repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.dense = nn.Linear(32, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return torch.relu(self.dense(x.mean(dim=(2, 3))))


class LateFusion(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.audio = Encoder()
        self.visual = Encoder()
        self.head = nn.Linear(128, 10)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.audio(audio), self.visual(visual)], dim=1))


def msam_step(model, optimizer, audio, visual, labels, rho: float) -> None:
    # 1. Shapley of the accuracy over the four coalitions (eval mode, no grad).
    model.eval()
    with torch.no_grad():
        zero_a, zero_v = torch.zeros_like(audio), torch.zeros_like(visual)
        u = {}
        for key, (a, v) in {
            "": (zero_a, zero_v),
            "a": (audio, zero_v),
            "v": (zero_a, visual),
            "av": (audio, visual),
        }.items():
            u[key] = (model(a, v).argmax(1) == labels).float().mean()
        phi_a = 0.5 * (u["a"] - u[""]) + 0.5 * (u["av"] - u["v"])
        phi_v = 0.5 * (u["v"] - u[""]) + 0.5 * (u["av"] - u["a"])
        positive = torch.relu(torch.stack([phi_a, phi_v]))
        total = positive.sum()
        shares = positive / total if total > 0 else torch.full((2,), 0.5)
        share = shares.max()
    model.train()
    # 2. First pass, perturbation, second pass, restore.
    loss_fn = nn.functional.cross_entropy
    optimizer.zero_grad(set_to_none=True)
    loss_fn(model(audio, visual), labels).backward()
    params = [p for p in model.parameters() if p.grad is not None]
    first = [p.grad.detach().clone() for p in params]
    norm = torch.sqrt(sum((g * g).sum() for g in first))
    with torch.no_grad():
        steps = [rho * g / (norm + 1e-12) for g in first]
        for p, e in zip(params, steps):
            p.add_(e)
    optimizer.zero_grad(set_to_none=True)
    loss_fn(model(audio, visual), labels).backward()
    with torch.no_grad():
        for p, e, g0 in zip(params, steps, first):
            p.sub_(e)
            p.grad.mul_(share).add_(g0, alpha=float(1 - share))
    optimizer.step()


def plain_step(model, optimizer, audio, visual, labels, rho: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(audio, visual), labels).backward()
    optimizer.step()


def measure(step_fn, steps: int, epochs: int, batch: int) -> float:
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = LateFusion().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    audio = torch.randn(steps, batch, 1, 40, 40, device=device)
    visual = torch.randn(steps, batch, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (steps, batch), device=device)
    epoch_ms = []
    for _ in range(epochs + 1):
        start = time.perf_counter()
        for i in range(steps):
            step_fn(model, optimizer, audio[i], visual[i], labels[i], 0.05)
        if device == "cuda":
            torch.cuda.synchronize()
        epoch_ms.append(1000 * (time.perf_counter() - start) / steps)
    return statistics.median(epoch_ms[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {
        name: statistics.median(
            measure(fn, args.steps, args.epochs, args.batch) for _ in range(args.repeats)
        )
        for name, fn in (("plain loop", plain_step), ("msam loop", msam_step))
    }
    print(
        f"hand-written PyTorch loop, ms/step (batch {args.batch}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)"
    )
    for name, value in results.items():
        print(f"  {name:<12}{value:8.2f}")
    print(f"  msam/plain  {results['msam loop'] / results['plain loop']:8.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"batch": args.batch, "ms_per_step": results}, handle, indent=2)


if __name__ == "__main__":
    main()
