"""Paired differences of a suite's methods against each other and against the control Joint.

    python benchmarks/paired_vs_controls.py runs/suite-methods2a mmpareto msam reconboost
    python benchmarks/paired_vs_controls.py runs/suite-methods2b mmpareto msam --fusion early

For every regime of one fusion (``--fusion``, default late) of a finished
`keras-msam benchmark --suite imbalance` run directory, prints (Markdown) the paired per-seed
test-accuracy difference of the first method against each other method named and against the
control Joint (Joint at M-SAM's tuned learning rate, ``controls/``), as mean [95 % t-interval]
and wins/ties/losses. The intervals are per regime, not adjusted for multiplicity.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from scipy import stats


def _accuracies(path: str) -> dict[str, dict[int, float]]:
    with open(path) as handle:
        runs = json.load(handle)["runs"]
    out: dict[str, dict[int, float]] = {}
    for run in runs:
        out.setdefault(run["method"].split("(")[0], {})[run["seed"]] = run["accuracy"]
    return out


def _paired(a: dict[int, float], b: dict[int, float]) -> str:
    seeds = sorted(set(a) & set(b))
    diff = np.array([a[s] - b[s] for s in seeds]) * 100
    low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    return (
        f"{diff.mean():+.1f} [{low:+.1f}, {high:+.1f}] {wins}/{len(diff) - wins - losses}/{losses}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("method")
    parser.add_argument("others", nargs="*")
    parser.add_argument("--fusion", default="late", choices=("late", "early"))
    args = parser.parse_args()
    with open(os.path.join(args.run_dir, "regimes.json")) as handle:
        regimes = list(dict.fromkeys(r["regime"] for r in json.load(handle)))
    columns = [f"{args.method} − {o}" for o in args.others] + [f"{args.method} − control Joint"]
    print("| regime | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for regime in regimes:
        main_path = os.path.join(args.run_dir, "regimes", f"{regime}-{args.fusion}", "results.json")
        if not os.path.exists(main_path):  # the base regime's runs are the tuner's final run
            main_path = os.path.join(args.run_dir, f"tune-{args.fusion}", "final", "results.json")
        runs = _accuracies(main_path)
        control = _accuracies(
            os.path.join(args.run_dir, "controls", f"{regime}-{args.fusion}", "results.json")
        )
        cells = [_paired(runs[args.method], runs[o]) for o in args.others]
        cells.append(_paired(runs[args.method], control["joint"]))
        print(f"| {regime} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
