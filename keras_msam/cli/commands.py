"""The `tune`, `benchmark` and `report` commands of `keras-msam` (Keras imported lazily)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from keras_msam.experiments.config import ConfigError


def echo(line: str) -> None:
    """A progress line, flushed at once (runs print while they train)."""
    print(line, flush=True)


def run_tune(args: argparse.Namespace, backend: str, settings: Callable[..., Any]) -> int:
    """`keras-msam tune`: equal-budget search on validation, then the paired final run."""
    from keras_msam.experiments.table import format_table
    from keras_msam.experiments.tuning import build_tune_config, parse_search_option, tune

    file_values, overrides = settings(args)
    search: dict[str, dict[str, Any]] = {}
    for text in args.search or ():
        method, name, value = parse_search_option(text)
        search.setdefault(method, {})[name] = value
    overrides.update(
        trials=args.trials,
        trial_seeds=args.trial_seeds,
        final_seeds=args.final_seeds,
        sampler=args.sampler,
        search=search or None,
    )
    config = build_tune_config(file_values, overrides, source=args.config or "configuration")
    experiment = config.experiment
    print(
        f"keras-msam tune: backend={backend}, model={experiment.model}, data={experiment.data}, "
        f"methods={','.join(s.label for s in experiment.methods)}, trials={config.trials} "
        f"x {config.trial_seeds} seeds each, final seeds={config.final_seeds}",
        flush=True,
    )
    from zoo.datasets import DataFormatError

    try:
        result = tune(config, log=echo)
    except DataFormatError as error:
        raise SystemExit(f"keras-msam: {error}") from None
    print("\nSelected on validation (mean over trial seeds):")
    for method, entry in result.selected.items():
        score = entry[experiment.select_metric]
        print(f"  {method}: {entry['label']}  ({experiment.select_metric} {score:.4f})")
    names = list(result.final.runs[0].modality_accuracy)
    print()
    print(format_table(result.final.summary, names))
    print(f"\nRun directory: {result.run_dir}")
    for name in ("tuning/trials.csv", "tuning/selected.json", "final/paired.csv"):
        print(f"  {os.path.join(result.run_dir, name)}")
    return 0


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `keras-msam benchmark`."""
    from keras_msam.experiments.suite import SUITES

    parser.add_argument("--suite", choices=SUITES, default="imbalance", help="(default: imbalance)")
    parser.add_argument(
        "--data-root",
        default=os.path.join("..", "shared", "data", "fsdd"),
        help="FSDD copy (default: ../shared/data/fsdd)",
    )
    parser.add_argument(
        "--run-dir", default=None, help="run directory (default: runs/suite-<suite>[-quick])"
    )
    parser.add_argument("--quick", action="store_true", help="minutes-long pipeline check")
    parser.add_argument("--regimes", default=None, help="comma-separated subset of regimes")
    parser.add_argument("--fusions", default=None, help="late,early (default: both)")
    parser.add_argument("--methods", default=None, help="default: joint,sam,msam")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None, help="paired seeds (default: 5)")
    parser.add_argument("--trials", type=int, default=None, help="trials per method (default 6)")
    parser.add_argument("--trial-seeds", type=int, default=None, help="(default: 2)")
    parser.add_argument("--no-checks", action="store_true", help="skip the paper's checks")
    parser.add_argument(
        "--write-configs",
        default=None,
        metavar="DIR",
        help="only write one TOML per regime x fusion into DIR and exit",
    )
    parser.add_argument("--backend", choices=("jax", "tensorflow", "torch"), default=None)


def run_benchmark(args: argparse.Namespace, backend: str) -> int:
    """`keras-msam benchmark --suite imbalance`: tune, regimes, checks; prints the tables."""
    from keras_msam.experiments.suite import SuiteConfig, format_rows, run_suite
    from keras_msam.experiments.suite import write_example_configs as write_configs

    values: dict[str, Any] = {}
    for key in ("epochs", "seeds", "trials", "trial_seeds"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    for key in ("regimes", "fusions", "methods"):
        if getattr(args, key):
            values[key] = tuple(part.strip() for part in getattr(args, key).split(","))
    if args.no_checks:
        values["checks"] = False
    run_dir = args.run_dir or os.path.join("runs", f"suite-{args.suite}" + ("-quick" * args.quick))
    if args.quick:
        config = SuiteConfig.quick(args.data_root, run_dir, **values)
    else:
        config = SuiteConfig(data_root=args.data_root, run_dir=run_dir, **values)
    if args.write_configs:
        for path in write_configs(config, args.write_configs):
            print(path)
        return 0
    print(
        f"keras-msam benchmark --suite {args.suite}: backend={backend}, regimes="
        f"{','.join(config.regimes)}, fusions={','.join(config.fusions)}, methods="
        f"{','.join(config.methods)}, epochs={config.epochs}, seeds={config.seeds}, "
        f"trials={config.trials}x{config.trial_seeds}",
        flush=True,
    )
    try:
        tables = run_suite(config, log=echo)
    except ConfigError as error:
        raise SystemExit(f"keras-msam: {error}") from None
    print()
    print(format_rows(tables["regimes"]))
    if tables["checks"]:
        print()
        print(format_rows(tables["checks"]))
    print()
    with open(os.path.join(config.run_dir, "verdict.md")) as handle:
        print(handle.read())
    print(
        f"Run directory: {config.run_dir} (verdict.md, regimes.md, checks.md, controls.md, plots/)"
    )
    return 0


def run_report(run_dirs: Sequence[str], style: str, reference: str | None) -> int:
    """`keras-msam report`: each run directory's summary with paired statistics against the
    reference (recomputed from results.json), then the failure signatures found."""
    from keras_msam.experiments.diagnosis import format_signatures, method_signatures
    from keras_msam.experiments.results import PAIRED_FIELDS
    from keras_msam.experiments.stats import StatisticsError, paired_table
    from keras_msam.experiments.table import format_markdown, format_table, modality_names

    for run_dir in run_dirs:
        path = os.path.join(run_dir, "results.json")
        if not os.path.exists(path):
            raise SystemExit(f"keras-msam: {path} does not exist; is {run_dir!r} a run directory?")
    for index, run_dir in enumerate(run_dirs):
        with open(os.path.join(run_dir, "results.json")) as handle:
            record = json.load(handle)
        runs, summary = record["runs"], record["summary"]
        if not runs:
            raise SystemExit(f"keras-msam: no finished runs in {run_dir}.")
        methods = list(dict.fromkeys(str(r["method"]) for r in runs))
        chosen = (
            reference
            or record["config"].get("reference")
            or ("joint" if "joint" in methods else None)
        )
        paired: list[dict[str, Any]] = []
        if chosen is not None:
            if chosen not in methods:
                raise SystemExit(
                    f"keras-msam: reference {chosen!r} is not in {run_dir} (methods: "
                    f"{', '.join(methods)})."
                )
            names = modality_names(summary)
            metrics = ["accuracy", *(f"accuracy_{n}" for n in names)]
            try:
                paired = paired_table(runs, chosen, metrics)
            except StatisticsError as error:
                raise SystemExit(f"keras-msam: {run_dir}: {error}") from None
        by_method = {p["method"]: p for p in paired if p["metric"] == "accuracy"}
        for row in summary:
            for key in (*PAIRED_FIELDS, "reference"):
                row.pop(key, None)
            if row["method"] in by_method:
                row["reference"] = chosen
                row.update({key: by_method[row["method"]][key] for key in PAIRED_FIELDS})
        if index:
            print()
        print(f"# {run_dir}" if style == "markdown" else f"{run_dir}:")
        names = modality_names(summary)
        table = format_markdown if style == "markdown" else format_table
        print(table(summary, names))
        print("\nFailure signatures (seed paper):")
        print(format_signatures(method_signatures(run_dir, paired, runs)))
    return 0
