"""`keras-msam`: train and compare multimodal balancing methods from the command line.

    keras-msam compare                       Joint, SAM and M-SAM on the embedded default data
    keras-msam compare --backend torch       same, on PyTorch (jax | tensorflow | torch)
    keras-msam train --method msam --rho 0.1 one method
    keras-msam data check NAME ROOT          validate a data set directory

The backend must be chosen before Keras is imported, so this module imports Keras lazily.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

BACKENDS = ("jax", "tensorflow", "torch")
METHODS = ("joint", "sam", "msam", "asam", "ogmge", "agm", "mwam")
DEFAULT_METHODS = ("joint", "sam", "msam")


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="Keras backend (default: $KERAS_BACKEND, else the first installed of "
        "jax, tensorflow, torch)",
    )
    parser.add_argument(
        "--model", default=None, help="zoo model name (default: late_fusion_av_cnn)"
    )
    parser.add_argument("--epochs", type=int, default=15, help="training epochs (default: 15)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    parser.add_argument(
        "--lr", type=float, default=0.05, help="SGD learning rate, momentum 0.9 (default: 0.05)"
    )
    parser.add_argument(
        "--rho", type=float, default=0.05, help="SAM/M-SAM neighbourhood radius (default: 0.05)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data and weights")
    parser.add_argument(
        "--num-train",
        type=int,
        default=2048,
        help="training examples of the embedded data set (default: 2048)",
    )
    parser.add_argument("--quiet", action="store_true", help="no Keras progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-msam` (importable without Keras)."""
    parser = argparse.ArgumentParser(
        prog="keras-msam",
        description="Train and compare multimodal balancing methods (Joint, SAM, M-SAM) "
        "on TensorFlow, JAX or PyTorch.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser(
        "compare", help="train several methods on the same data and print a table"
    )
    _add_training_arguments(compare)
    compare.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated methods from {','.join(METHODS)} "
        f"(default: {','.join(DEFAULT_METHODS)})",
    )
    train = commands.add_parser("train", help="train one method and print its results")
    _add_training_arguments(train)
    train.add_argument("--method", default="msam", choices=METHODS, help="method (default: msam)")
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


def _parse_methods(text: str) -> list[str]:
    methods = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SystemExit(
            f"keras-msam: unknown method(s) {unknown or [text]}; choose from {', '.join(METHODS)}."
        )
    return methods


def _requested_backend(argv: Sequence[str]) -> str | None:
    """The ``--backend`` value, read before the full parser (which imports the zoo) is built."""
    for index, token in enumerate(argv):
        if token == "--backend" and index + 1 < len(argv):
            return argv[index + 1] if argv[index + 1] in BACKENDS else None
        if token.startswith("--backend="):
            value = token.split("=", 1)[1]
            return value if value in BACKENDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-msam` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    backend = _select_backend(_requested_backend(argv))
    args = build_parser().parse_args(argv)
    if args.command == "data":
        return int(args.func(args))
    from keras_msam.cli.experiment import RunSettings, format_table, run_method

    methods = _parse_methods(args.methods) if args.command == "compare" else [args.method]
    settings = RunSettings(
        model=args.model or "late_fusion_av_cnn",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        rho=args.rho,
        seed=args.seed,
        num_train=args.num_train,
        verbose=0 if args.quiet else 1,
    )
    print(
        f"keras-msam {args.command}: backend={backend}, model={settings.model}, "
        f"data=imbalanced_av (embedded), epochs={settings.epochs}, "
        f"batch={settings.batch_size}, rho={settings.rho}",
        flush=True,
    )
    results = []
    for method in methods:
        print(f"\n== {method} ==", flush=True)
        results.append(run_method(method, settings))
    print()
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
