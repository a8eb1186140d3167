"""The ``keras-msam data`` command: ``data list`` and ``data check NAME ROOT``."""

from __future__ import annotations

import argparse


def _list(args: argparse.Namespace) -> int:
    from zoo import datasets

    for name in datasets.list(args.pattern):
        print(f"{name:18s} {datasets.registry._entry(name).description}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from zoo import datasets

    try:
        report = datasets.check(args.name, args.root, deep=not args.quick)
    except (KeyError, ValueError) as error:
        print(f"error: {error.args[0] if error.args else error}")
        return 2
    print(report.format(max_problems=args.max_problems))
    return 0 if report.ok else 1


def add_data_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``data`` (with ``list`` and ``check NAME ROOT``) to a CLI's sub-parsers.

    Each leaf parser sets ``func``: call ``args.func(args)`` to run it; it returns the exit code
    (``check``: 0 when the data set is fine, 1 when problems were found, 2 on a usage error).
    """
    data = subparsers.add_parser("data", help="list data set loaders, check a data set on disk")
    commands = data.add_subparsers(dest="data_command", metavar="{list,check}")
    commands.required = True

    listing = commands.add_parser("list", help="list the registered data sets")
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style filter")
    listing.set_defaults(func=_list)

    check = commands.add_parser(
        "check",
        help="report missing files, wrong shapes/dtypes, unknown labels, unreadable files",
    )
    check.add_argument("name", help="registered data set name (see `data list`)")
    check.add_argument("root", help="the data set's directory (or pickle file)")
    check.add_argument(
        "--quick", action="store_true", help="check layout and arrays only; decode no audio/image"
    )
    check.add_argument("--max-problems", type=int, default=50, help="problems to print")
    check.set_defaults(func=_check)
    return data


def main(argv: list[str] | None = None) -> int:
    """Runs ``data ...`` standalone (``python -m zoo.datasets.cli data check NAME ROOT``)."""
    parser = argparse.ArgumentParser(prog="keras-msam")
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
