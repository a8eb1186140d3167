"""`keras-msam`: train and compare multimodal balancing methods from the command line.

    keras-msam compare                       Joint, SAM and M-SAM on the embedded default data
    keras-msam compare --backend torch       same, on PyTorch (jax | tensorflow | torch)
    keras-msam compare --data av_digits --data-root ../shared/data/fsdd \\
        --data-option split_by=speaker --methods joint,msam,ogmge --seeds 3
    keras-msam compare --config run.toml --epochs 5     a config file; flags override it
    keras-msam train --method "msam(rho=0.1)"  one method
    keras-msam data check NAME ROOT          validate a data set directory

Each compare/train writes a run directory (see `keras_msam.experiments.runner`); running the
same command with the same --run-dir again resumes it.

The backend must be chosen before Keras is imported, so this module imports Keras lazily.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from keras_msam.cli.commands import (
    add_benchmark_arguments,
    echo,
    run_benchmark,
    run_report,
    run_tune,
)
from keras_msam.experiments.config import (
    DEFAULT_METHODS,
    METHODS,
    ConfigError,
    build_config,
    read_config_file,
)

BACKENDS = ("jax", "tensorflow", "torch")


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag defaults to None: unset flags leave the --config file's value or the default."""
    parser.add_argument("--config", default=None, help="TOML/YAML/JSON file of settings")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="Keras backend (default: $KERAS_BACKEND, else the first installed of "
        "jax, tensorflow, torch)",
    )
    parser.add_argument(
        "--data", default=None, help="zoo data set (default: imbalanced_av, embedded)"
    )
    parser.add_argument("--data-root", default=None, help="the data set's directory")
    parser.add_argument(
        "--data-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="loader option, e.g. split_by=speaker (repeatable)",
    )
    parser.add_argument("--model", default=None, help="zoo model (default: late_fusion_av_cnn)")
    parser.add_argument(
        "--model-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="zoo model argument, e.g. width=32 (repeatable)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="runs per method (default: 1)")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: 0)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: 15)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: 64)")
    parser.add_argument(
        "--optimizer", choices=("sgd", "adam", "adamw"), default=None, help="(default: sgd)"
    )
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: 0.05)")
    parser.add_argument("--momentum", type=float, default=None, help="SGD momentum (default: 0.9)")
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="weight decay: L2 added to the gradient for sgd/adam (as PyTorch's), decoupled for "
        "adamw (default: none; Keras's 0.004 for adamw)",
    )
    parser.add_argument(
        "--lr-schedule",
        choices=("constant", "step", "cosine"),
        default=None,
        help="constant, step (x lr-gamma every lr-step-size epochs) or cosine (to 0 at the "
        "last step) (default: constant)",
    )
    parser.add_argument(
        "--lr-step-size",
        type=int,
        default=None,
        help="epochs between step decays (default: 70)",
    )
    parser.add_argument(
        "--lr-gamma", type=float, default=None, help="step decay factor (default: 0.1)"
    )
    parser.add_argument(
        "--rho", type=float, default=None, help="SAM/M-SAM neighbourhood radius (default: 0.02)"
    )
    parser.add_argument(
        "--num-train",
        type=int,
        default=None,
        help="training examples of the embedded data set (default: 2048)",
    )
    parser.add_argument(
        "--select-metric",
        default=None,
        help="validation log that selects the best epoch (default: val_accuracy)",
    )
    parser.add_argument(
        "--sharpness-rho",
        type=float,
        default=None,
        help="ρ of the final-minimum sharpness recorded per run; 0 skips it (default: 0.05)",
    )
    parser.add_argument(
        "--reference",
        default=None,
        help="method the others are compared with, paired by seed (default: joint when run)",
    )
    parser.add_argument(
        "--run-dir",
        default=None,
        help="run directory (default: runs/<data>-<model>-<time>); an existing one resumes",
    )
    parser.add_argument(
        "--tensorboard",
        action="store_const",
        const=True,
        default=None,
        help="write TensorBoard logs into the run directory",
    )
    parser.add_argument(
        "--no-plots",
        dest="plots",
        action="store_const",
        const=False,
        default=None,
        help="do not write PNG plots",
    )
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument(
        "--quiet", action="store_true", help="no progress lines and no Keras progress bars"
    )
    noise.add_argument(
        "--verbose",
        action="store_true",
        help="Keras progress bars for every epoch (compare and tune print one line per run "
        "without it; train always shows them)",
    )


def _verbosity(args: argparse.Namespace) -> int | None:
    """Keras progress bars: off with --quiet, on with --verbose; by default on for one run
    (``train``, or the config file's value) and off for multi-run commands."""
    if args.quiet:
        return 0
    if args.verbose:
        return 1
    return None if args.command == "train" else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-msam` (importable without Keras)."""
    parser = argparse.ArgumentParser(
        prog="keras-msam",
        description="Train and compare multimodal balancing methods (Joint, SAM, M-SAM) "
        "on TensorFlow, JAX or PyTorch.",
    )
    from keras_msam import __version__

    parser.add_argument("--version", action="version", version=f"keras-msam {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser(
        "compare", help="train several methods on the same data and print a table"
    )
    _add_training_arguments(compare)
    compare.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated methods from {','.join(METHODS)}, each optionally with options: "
        f"msam(rho=0.1,sam_every=5) (default: {','.join(DEFAULT_METHODS)})",
    )
    train = commands.add_parser("train", help="train one method and print its results")
    _add_training_arguments(train)
    train.add_argument(
        "--method", default=None, help="one method, e.g. msam or msam(rho=0.1) (default: msam)"
    )
    tune = commands.add_parser(
        "tune",
        help="tune every method on validation data (equal trials each), then compare the "
        "selected settings on test with paired seeds",
    )
    _add_training_arguments(tune)
    tune.add_argument("--methods", default=None, help="methods to tune (default: joint,sam,msam)")
    tune.add_argument("--trials", type=int, default=None, help="trials per method (default: 8)")
    tune.add_argument("--trial-seeds", type=int, default=None, help="seeds per trial (default: 2)")
    tune.add_argument(
        "--final-seeds",
        type=int,
        default=None,
        help="seeds of the final run of each selected setting (default: 5)",
    )
    tune.add_argument(
        "--sampler", choices=("qmc", "tpe", "random"), default=None, help="(default: qmc)"
    )
    tune.add_argument(
        "--search",
        action="append",
        default=None,
        metavar="METHOD.PARAM=LOW:HIGH[:log|linear|int]",
        help="replace one search range, e.g. msam.rho=0.005:0.5:log or msam.lr=[0.01,0.05] "
        "(repeatable)",
    )
    benchmark = commands.add_parser(
        "benchmark", help="run a benchmark suite (imbalance regimes on real speech)"
    )
    add_benchmark_arguments(benchmark)
    report = commands.add_parser(
        "report",
        help="print the summary of one or more run directories, paired statistics and the "
        "failure signatures found",
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument(
        "--format", choices=("text", "markdown"), default="text", help="(default: text)"
    )
    report.add_argument(
        "--reference",
        default=None,
        help="method to compare with, paired by seed (default: the run's own, else joint)",
    )
    try:
        from zoo.datasets.cli import add_data_commands
    except ImportError:
        add_data_commands = None
    if add_data_commands is not None:
        add_data_commands(commands)
    return parser


def _select_backend(requested: str | None) -> str:
    """Sets KERAS_BACKEND before Keras loads; refuses to switch a backend already loaded."""
    if "keras" in sys.modules:
        import keras

        active = keras.backend.backend()
        if requested is not None and requested != active:
            raise SystemExit(
                f"keras-msam: Keras is already running on {active!r}; cannot switch to "
                f"{requested!r} in this process. Run `keras-msam ... --backend {requested}` "
                "in a new process."
            )
        return active
    backend = requested or os.environ.get("KERAS_BACKEND") or _first_installed_backend()
    os.environ["KERAS_BACKEND"] = backend
    return backend


def _first_installed_backend() -> str:
    import importlib.util

    for backend, package in (("jax", "jax"), ("tensorflow", "tensorflow"), ("torch", "torch")):
        if importlib.util.find_spec(package) is not None:
            return backend
    raise SystemExit(
        "keras-msam: no backend installed; pip install 'keras-msam[jax]' "
        "(or [tensorflow], [torch])."
    )


def _requested_backend(argv: Sequence[str]) -> str | None:
    """The ``--backend`` value, read before the full parser (which imports the zoo) is built."""
    for index, token in enumerate(argv):
        if token == "--backend" and index + 1 < len(argv):
            return argv[index + 1] if argv[index + 1] in BACKENDS else None
        if token.startswith("--backend="):
            value = token.split("=", 1)[1]
            return value if value in BACKENDS else None
    return None


def _config_backend(argv: Sequence[str]) -> str | None:
    """The ``backend`` of a ``--config`` file, read before Keras is imported."""
    for index, token in enumerate(argv):
        path = None
        if token == "--config" and index + 1 < len(argv):
            path = argv[index + 1]
        elif token.startswith("--config="):
            path = token.split("=", 1)[1]
        if path is not None:
            try:
                value = read_config_file(path).get("backend")
            except ConfigError as error:
                raise SystemExit(f"keras-msam: {error}") from None
            return value if value in BACKENDS else None
    return None


def _key_values(items: Sequence[str] | None, flag: str) -> dict[str, Any] | None:
    """``["a=1", "b=speaker"]`` → ``{"a": 1, "b": "speaker"}`` (values as Python literals)."""
    if not items:
        return None
    import ast

    result = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"keras-msam: {flag} expects KEY=VALUE, got {item!r}.")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        result[key.strip()] = value
    return result


def _config_from_args(args: argparse.Namespace) -> Any:
    file_values, overrides = _settings_from_args(args)
    return build_config(file_values, overrides, source=args.config or "configuration")


def _settings_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The --config file's values and the command line's overrides (None: not given)."""
    file_values = read_config_file(args.config) if args.config else {}
    methods = args.method if args.command == "train" else args.methods
    if args.command == "train" and methods is None and "methods" not in file_values:
        methods = "msam"
    overrides = {
        "backend": args.backend,
        "data": args.data,
        "data_root": args.data_root,
        "data_options": _key_values(args.data_option, "--data-option"),
        "model": args.model,
        "model_options": _key_values(args.model_option, "--model-option"),
        "methods": methods,
        "seeds": args.seeds,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "lr_schedule": args.lr_schedule,
        "lr_step_size": args.lr_step_size,
        "lr_gamma": args.lr_gamma,
        "rho": args.rho,
        "num_train": args.num_train,
        "select_metric": args.select_metric,
        "reference": args.reference,
        "sharpness_rho": args.sharpness_rho,
        "run_dir": args.run_dir,
        "tensorboard": args.tensorboard,
        "plots": args.plots,
        "verbose": _verbosity(args),
        "progress": False if args.quiet else None,
    }
    return file_values, overrides


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-msam` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    backend = _select_backend(_requested_backend(argv) or _config_backend(argv))
    args = build_parser().parse_args(argv)
    if args.command == "data":
        return int(args.func(args))
    if args.command == "report":
        return run_report(args.run_dirs, args.format, args.reference)
    if args.command == "benchmark":
        return run_benchmark(args, backend)
    try:
        if args.command == "tune":
            return run_tune(args, backend, _settings_from_args)
        config = _config_from_args(args)
        if config.backend is not None and config.backend != backend:
            _select_backend(config.backend)
        from keras_msam.experiments.runner import run_experiment
        from keras_msam.experiments.table import format_table

        print(
            f"keras-msam {args.command}: backend={backend}, model={config.model}, "
            f"data={config.data}, methods={','.join(s.label for s in config.methods)}, "
            f"seeds={config.seed_list()}, epochs={config.epochs}, batch={config.batch_size}, "
            f"rho={config.rho}",
            flush=True,
        )
        from zoo.datasets import DataFormatError

        try:
            result = run_experiment(config, log=echo)
        except DataFormatError as error:
            raise SystemExit(f"keras-msam: {error}") from None
    except ConfigError as error:
        raise SystemExit(f"keras-msam: {error}") from None
    print()
    print(format_table(result.summary, list(result.runs[0].modality_accuracy)))
    if config.seeds < 2 and len(config.methods) > 1:
        print(
            "\nOne seed: differences between methods here are not a verdict. Run --seeds 5 "
            "for paired differences with 95% confidence intervals (see the guide When does "
            "M-SAM help?, docs/guides/when-msam-helps.md)."
        )
    print(f"\nRun directory: {result.run_dir}")
    for name in ("results.csv", "summary.csv", "results.json"):
        print(f"  {os.path.join(result.run_dir, name)}")
    for path in result.plots:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
