"""Decision-layer weighting (`keras_msam.DecisionWeighting`, our design) against plain training.

Data: the embedded imbalanced audio-visual task, ``zoo.datasets.imbalanced_av.generate(
num_train=2048, seed=s)`` (audio learnt fast but capped near 50-60%, visual slower but able to
separate all ten classes); test split of 1024 examples. Model: zoo ``late_fusion_av_cnn``
(concat fusion, linear head). SGD 0.05, momentum 0.9, 15 epochs, batch 64, seeds 0, 1, 2 (the
seed sets both the data and the initialisation). No Shapley logging (it changes nothing).

Per run, on the test split:

* accuracies of the deployed predictor (``trainer(x)``: the gained fusion for
  DecisionWeighting) with all modalities and with each modality alone (others zeroed), computed
  as `keras_msam.modality_accuracies` does; for DecisionWeighting also
  ``modality_accuracies(trainer)`` itself, which runs the wrapped model, i.e. the same weights
  with the plain (ungained) fusion (``plain fusion`` columns);
* from `keras_msam.analysis.decision_layer_report`: each modality's share of the raw logit
  contributions mean |W_m φ_m| (``logit_share``), and its share after the gains, mean
  |g_m ⊙ W_m φ_m| (``gained_share``; equal to the raw share for Joint);
* the final gains.

    KERAS_BACKEND=jax python benchmarks/decision_weighting.py [--seeds 0 1 2] [--epochs 15]
        [--methods joint dlw dlw_strength1 dlw_per_class]

Writes ``benchmarks/results/decision_weighting_<backend>.json`` (``--json`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import keras
import numpy as np
from keras import ops

import keras_msam
import zoo
from keras_msam.analysis import decision_layer_report
from keras_msam.data_sources import iterate_batches

METHODS = {
    "joint": ("Joint", lambda model: keras_msam.Joint(model, log_shapley=False)),
    "dlw": (
        "DecisionWeighting",
        lambda model: keras_msam.DecisionWeighting(model, log_shapley=False),
    ),
    "dlw_strength1": (
        "DecisionWeighting(strength=1)",
        lambda model: keras_msam.DecisionWeighting(model, strength=1.0, log_shapley=False),
    ),
    "dlw_per_class": (
        "DecisionWeighting(per_class=True)",
        lambda model: keras_msam.DecisionWeighting(model, per_class=True, log_shapley=False),
    ),
}


class _DeployedPredictor:
    """What `modality_accuracies` needs of a model, answered by the trainer's own ``call``.

    `modality_accuracies(trainer)` runs ``trainer.model``, the plain fusion; this view runs
    ``trainer(x)``, which for DecisionWeighting is the gained fusion.
    """

    def __init__(self, trainer: keras.Model) -> None:
        self._trainer = trainer
        inner = trainer.model
        self.name = f"{inner.name} (deployed)"
        self.modality_names = inner.modality_names
        self.modality_shapes = inner.modality_shapes
        self.modality_variables = inner.modality_variables
        self.shared_variables = inner.shared_variables

    def __call__(self, inputs, training=False):
        return self._trainer(inputs, training=training)


def gained_shares(trainer, x, y, batch_size=256):
    """Each modality's share of mean |g_m ⊙ W_m φ_m| (g = 1 for trainers without gains)."""
    inner = trainer.model
    names = inner.modality_names
    gains = trainer.gains if hasattr(trainer, "gains") else np.ones((len(names), 1))
    totals = np.zeros(len(names))
    for batch_x, _ in iterate_batches(x, y, batch_size):
        parts = inner.unimodal_logits(inner.encode(batch_x, training=False))
        for index, name in enumerate(names):
            logits = np.asarray(ops.convert_to_numpy(parts[name]), np.float64)
            totals[index] += np.abs(gains[index] * logits).mean(axis=1).sum()
    return {name: float(totals[i] / totals.sum()) for i, name in enumerate(names)}


def run(
    method: str, seed: int, epochs: int, batch: int, num_train: int, split: str = "test"
) -> dict:
    keras.utils.set_random_seed(seed)
    data = zoo.datasets.imbalanced_av.generate(num_train=num_train, seed=seed)
    model = zoo.models.create("late_fusion_av_cnn", num_classes=10)
    trainer = METHODS[method][1](model)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = trainer.fit(*data["train"], batch_size=batch, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    x, y = data[split]
    deployed = keras_msam.modality_accuracies(_DeployedPredictor(trainer), x, y)
    evaluated = trainer.evaluate(x, y, verbose=0, return_dict=True)
    report = decision_layer_report(trainer, x, y)
    result = {
        "accuracy": deployed,
        "evaluate_accuracy": float(evaluated["accuracy"]),
        "logit_share": report["logit_share"],
        "gained_share": gained_shares(trainer, x, y),
        "split_accuracy": report["accuracy"],
        "train_loss": [float(v) for v in history.history["loss"]],
        "seconds": seconds,
    }
    if hasattr(trainer, "gains"):
        result["plain_fusion_accuracy"] = keras_msam.modality_accuracies(trainer, x, y)
        result["gains"] = trainer.gains.tolist()
        result["gain_history"] = {
            key: [float(v) for v in values]
            for key, values in history.history.items()
            if key.startswith("gain_")
        }
    return result


def _stat(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}


def summarise(runs: list[dict]) -> dict:
    names = [k for k in runs[0]["accuracy"] if k != "multimodal"]
    summary = {"accuracy": {}, "logit_share": {}, "gained_share": {}}
    for key in ("multimodal", *names):
        summary["accuracy"][key] = _stat([r["accuracy"][key] for r in runs])
    for name in names:
        summary["logit_share"][name] = _stat([r["logit_share"][name] for r in runs])
        summary["gained_share"][name] = _stat([r["gained_share"][name] for r in runs])
    if "plain_fusion_accuracy" in runs[0]:
        summary["plain_fusion_accuracy"] = {
            key: _stat([r["plain_fusion_accuracy"][key] for r in runs])
            for key in ("multimodal", *names)
        }
        summary["gain"] = {
            name: _stat([float(np.mean(r["gains"][i])) for r in runs])
            for i, name in enumerate(names)
        }
    return summary


def _cell(stat: dict, percent: bool = True) -> str:
    scale = 100.0 if percent else 1.0
    return f"{scale * stat['mean']:6.1f} ± {scale * stat['std']:4.1f}"


def print_table(summaries: dict, seeds: list[int]) -> None:
    first = next(iter(summaries.values()))
    names = [k for k in first["accuracy"] if k != "multimodal"]
    print(
        f"backend {keras.backend.backend()}; test accuracy (%) and logit shares (%), "
        f"mean ± std over seeds {seeds}"
    )
    header = ["method", "multimodal", *names]
    header += [f"share {n} (raw)" for n in names] + [f"share {n} (gained)" for n in names]
    widths = [34] + [16] * (len(names) + 1) + [22] * (2 * len(names))
    print("".join(f"{h:<{w}}" for h, w in zip(header, widths)))
    for method, summary in summaries.items():
        cells = [METHODS[method][0]]
        cells += [_cell(summary["accuracy"][k]) for k in ("multimodal", *names)]
        cells += [_cell(summary["logit_share"][n]) for n in names]
        cells += [_cell(summary["gained_share"][n]) for n in names]
        print("".join(f"{c:<{w}}" for c, w in zip(cells, widths)))
    for method, summary in summaries.items():
        if "plain_fusion_accuracy" not in summary:
            continue
        plain = summary["plain_fusion_accuracy"]
        gains = ", ".join(f"g_{n} {_cell(summary['gain'][n], False)}" for n in names)
        print(
            f"{METHODS[method][0]}: same weights, plain fusion: multimodal "
            f"{_cell(plain['multimodal'])}, "
            + ", ".join(f"{n} {_cell(plain[n])}" for n in names)
            + f"; final gains {gains}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=2048)
    parser.add_argument("--methods", nargs="+", default=["joint", "dlw"], choices=list(METHODS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    runs = {
        method: [run(method, seed, args.epochs, args.batch, args.num_train) for seed in args.seeds]
        for method in args.methods
    }
    summaries = {method: summarise(results) for method, results in runs.items()}
    print_table(summaries, args.seeds)
    path = args.json or os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "results",
        f"decision_weighting_{keras.backend.backend()}.json",
    )
    config = {
        "data": "zoo.datasets.imbalanced_av.generate(num_train, seed=seed), test split",
        "model": "late_fusion_av_cnn",
        "optimizer": "SGD(0.05, momentum=0.9)",
        "epochs": args.epochs,
        "batch": args.batch,
        "num_train": args.num_train,
        "seeds": args.seeds,
        "methods": {m: METHODS[m][0] for m in args.methods},
    }
    with open(path, "w") as handle:
        json.dump(
            {
                "backend": keras.backend.backend(),
                "config": config,
                "summary": summaries,
                "runs": runs,
            },
            handle,
            indent=2,
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
