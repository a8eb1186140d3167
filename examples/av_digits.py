"""AV-Digits from real speech: FSDD recordings paired by label with handwritten digits.

    python examples/av_digits.py --root ../shared/data/fsdd

Speaker-independent split (the test speaker is never heard in training). Trains Joint and M-SAM
through the experiment runner, which selects epochs on validation, evaluates test once and writes
results, plots and the best model under ``runs/av_digits-example``.
"""

from __future__ import annotations

import argparse

from keras_msam.experiments import ExperimentConfig, format_table, parse_methods, run_experiment


def main(root: str, epochs: int = 20, seeds: int = 1) -> None:
    config = ExperimentConfig(
        data="av_digits",
        data_root=root,
        data_options={"split_by": "speaker"},
        model="late_fusion_av_cnn",
        methods=parse_methods("joint,msam"),
        seeds=seeds,
        epochs=epochs,
        run_dir="runs/av_digits-example",
        verbose=2,
    )
    result = run_experiment(config)
    print(format_table(result.summary, list(result.runs[0].modality_accuracy)))
    print("plots:", *result.plots, sep="\n  ")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data/fsdd", help="the FSDD folder")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    main(args.root, args.epochs, args.seeds)
