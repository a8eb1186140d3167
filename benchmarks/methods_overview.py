"""Every method measured by the regime suite, at a glance, against the suite's tuned Joint.

    python benchmarks/methods_overview.py                      # late fusion, the committed results
    python benchmarks/methods_overview.py --fusion early

Reads the ``regimes.json`` of each suite result folder under ``docs/results/`` (copied from the
run directories of `keras-msam benchmark --suite imbalance`; every folder shares the same tuned
Joint runs, seeds and splits) and prints one Markdown row per method: its tuned setting, the mean
test accuracy over the regimes, the mean paired difference against the tuned Joint, and how many
regimes end "better", with no significant difference, or "worse" after Holm's correction. Holm
is applied within each run (over the methods that run compared with Joint), as its tables say.
"""

from __future__ import annotations

import argparse
import json
import os

FOLDERS = ("imbalance", "methods2", "methods2-early", "mslr-mses", "cggm-pmr-mmcosine-opm")


def _rows(root: str, fusion: str) -> dict[str, list[dict]]:
    by_method: dict[str, list[dict]] = {}
    seen: set[tuple[str, str]] = set()
    for folder in FOLDERS:
        path = os.path.join(root, folder, "regimes.json")
        if not os.path.exists(path):
            continue
        with open(path) as handle:
            for row in json.load(handle):
                name = row["method"].split("(")[0]
                key = (name, row["regime"])
                if row["fusion"] != fusion or key in seen:
                    continue  # Joint and M-SAM appear in every folder: the same runs
                seen.add(key)
                by_method.setdefault(name, []).append(row)
    return by_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join("docs", "results"))
    parser.add_argument("--fusion", default="late", choices=("late", "early"))
    args = parser.parse_args()
    rows = _rows(args.root, args.fusion)
    header = "| method | tuned setting | regimes | mean acc % | mean − tuned Joint |"
    print(header + " better / n.s. / worse |")
    print("|---|---|---|---|---|---|")
    for name in sorted(rows, key=lambda n: (n != "joint", n)):
        entries = rows[name]
        setting = entries[0]["method"]
        accuracy = 100 * sum(r["accuracy"] for r in entries) / len(entries)
        if name == "joint":
            print(f"| {name} | `{setting}` | {len(entries)} | {accuracy:.1f} | — | — |")
            continue
        diff = 100 * sum(r["diff"] for r in entries) / len(entries)
        verdicts = [r["verdict"] for r in entries]
        counts = "/".join(
            str(sum(v == word for v in verdicts))
            for word in ("better", "no significant difference", "worse")
        )
        print(
            f"| {name} | `{setting}` | {len(entries)} | {accuracy:.1f} | {diff:+.1f} | {counts} |"
        )


if __name__ == "__main__":
    main()
