"""The imbalance regime suite (`keras-msam benchmark --suite imbalance`) on real speech.

AV-Digits (real FSDD recordings paired by label with handwritten digits) under regimes that move
which modality dominates and by how much, each with early and late fusion, Joint / SAM / M-SAM
tuned on validation with an equal budget, 5 paired seeds, and the seed paper's own checks:

1. **tune** — per fusion model, `keras_msam.experiments.tuning.tune` on the base regime's
   validation split (equal trials per method over its own knob and the learning rate);
2. **regimes** — every regime × fusion with each method at its tuned setting, ``seeds`` paired
   seeds, test evaluated once per run; paired differences against Joint with 95 % CIs, Holm;
3. **checks** (base regime, late fusion) — Shapley weighting vs a fixed 0.5 share, ρ sweep,
   SAM at M-SAM's mean effective radius (v̄_d·ρ), the ``perturb="dominant"`` extension, and the
   training length (half and double the epochs);
4. **controls** — per regime × fusion, Joint at M-SAM's tuned learning rate, so the effect of
   the sharpness term is measured apart from that of the learning rate the tuner chose.

Run directory::

    tune-<fusion>/              tuning runs (see tuning.py); final/ is the base regime's run
    regimes/<regime>-<fusion>/  one `run_experiment` directory each
    checks/, checks-epochs<E>/  the paper's checks
    controls/<regime>-<fusion>/ Joint at M-SAM's tuned learning rate (the reference there)
    regimes.csv / .json / .md   one row per regime × fusion × method, paired stats vs Joint
    checks.csv / .md            the same for the checks
    controls.csv / .md          the same against Joint at M-SAM's learning rate
    verdict.md                  one row per regime × fusion: the paired differences that matter
    checks_summary.md           the checks against tuned Joint and tuned M-SAM, and by length
    plots/regimes.png           Δ accuracy vs Joint with 95 % CIs, per regime and fusion

Every stage reuses finished runs, so re-running the command resumes the suite.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keras_msam.experiments.config import ConfigError, MethodSpec, build_config, parse_method

SUITES = ("imbalance",)
FUSIONS = {"late": "late_fusion_av_cnn", "early": "early_fusion_av_cnn"}
FUSIONS_3 = {"late": "late_fusion_av3_cnn", "early": "early_fusion_av3_cnn"}
# early fusion keeps a 4x4 layout of its stems' features: with global pooling (16 numbers per
# modality) it stayed near chance on AV-Digits (train 16 %, validation 18 % after 15 epochs)
MODEL_OPTIONS = {"early": {"pool": "grid"}, "late": {}}
SPEAKER_INDEPENDENT = {"split_by": "speaker"}
SPEAKER_DEPENDENT = {"split_by": "take"}


@dataclasses.dataclass(frozen=True)
class Regime:
    """One data regime: AV-Digits options, and what it is meant to do to dominance."""

    name: str
    description: str
    data_options: Mapping[str, Any]
    modalities: int = 2
    epoch_factor: int = 1  # a smaller training set trains this many times more epochs


REGIMES: tuple[Regime, ...] = (
    Regime(
        "speaker_independent",
        "test speaker never heard: speech weak, images dominant (base regime)",
        SPEAKER_INDEPENDENT,
    ),
    Regime(
        "speaker_dependent", "every speaker heard in training: speech strong", SPEAKER_DEPENDENT
    ),
    Regime(
        "audio_babble_10db",
        "speaker-dependent, speech mixed with 3 other talkers at 10 dB SNR",
        {**SPEAKER_DEPENDENT, "audio_snr_db": 10.0, "audio_noise": "babble"},
    ),
    Regime(
        "audio_babble_0db",
        "speaker-dependent, speech mixed with 3 other talkers at 0 dB SNR",
        {**SPEAKER_DEPENDENT, "audio_snr_db": 0.0, "audio_noise": "babble"},
    ),
    Regime(
        "visual_blur_1.5",
        "speaker-dependent, images blurred (Gaussian σ = 1.5 px): speech dominant",
        {**SPEAKER_DEPENDENT, "visual_blur": 1.5},
    ),
    Regime(
        "visual_occluded_0.3",
        "speaker-dependent, 30 % of each image occluded: the images' lead shrinks",
        {**SPEAKER_DEPENDENT, "visual_occlusion": 0.3},
    ),
    Regime(
        "visual_occluded_0.6",
        "speaker-dependent, 60 % of each image occluded: speech strongly dominant (swap)",
        {**SPEAKER_DEPENDENT, "visual_occlusion": 0.6},
    ),
    Regime(
        "small_train",
        "speaker-dependent, 25 % of the training set (600 clips), 4x the epochs (equal steps)",
        {**SPEAKER_DEPENDENT, "train_fraction": 0.25},
        epoch_factor=4,
    ),
    Regime(
        "three_modality",
        "speaker-independent + visual2, a second degraded image of the digit (M = 3)",
        {**SPEAKER_INDEPENDENT, "third_modality": "visual2"},
        modalities=3,
    ),
)
BASE_REGIME = "speaker_independent"


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """The suite's budget. `quick` is the minutes-long pipeline check the tests run."""

    data_root: str
    run_dir: str = "runs/suite-imbalance"
    methods: tuple[str, ...] = ("joint", "sam", "msam")
    fusions: tuple[str, ...] = ("late", "early")
    regimes: tuple[str, ...] = tuple(r.name for r in REGIMES)
    epochs: int = 15
    seeds: int = 5
    trials: int = 6
    trial_seeds: int = 2
    lr: float = 0.1  # the centre of the tuned range [lr / 4, lr * 4]
    rho: float = 0.05  # ρ of untuned SAM/M-SAM specs (example configs); tuned specs name theirs
    batch_size: int = 64
    checks: bool = True
    controls: bool = True
    rho_sweep: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5)
    verbose: int = 0

    @classmethod
    def quick(cls, data_root: str, run_dir: str, **overrides: Any) -> SuiteConfig:
        """Two regimes, late fusion, 1 epoch, 2 seeds, 1 trial of 1 seed, two ρ."""
        values = {
            "data_root": data_root,
            "run_dir": run_dir,
            "fusions": ("late",),
            "regimes": (BASE_REGIME, "visual_blur_1.5"),
            "epochs": 1,
            "seeds": 2,
            "trials": 1,
            "trial_seeds": 1,
            "rho_sweep": (0.01, 0.1),
        }
        values.update(overrides)
        return cls(**values)


def validate(config: SuiteConfig) -> list[Regime]:
    """Checks the suite's settings and data before any training; returns its regimes."""
    known = {r.name: r for r in REGIMES}
    unknown = [name for name in config.regimes if name not in known]
    if unknown:
        raise ConfigError(
            f"Unknown regime(s) {', '.join(unknown)}; the suite has {', '.join(known)}."
        )
    if BASE_REGIME not in config.regimes:
        raise ConfigError(f"The suite tunes on regime {BASE_REGIME!r}; keep it in --regimes.")
    bad = [f for f in config.fusions if f not in FUSIONS]
    if bad:
        raise ConfigError(f"Unknown fusion(s) {', '.join(bad)}; choose from late, early.")
    if "joint" not in config.methods:
        raise ConfigError("The suite compares every method with joint; keep joint in methods.")
    if config.seeds < 2:
        raise ConfigError(f"The paired statistics need at least 2 seeds, got {config.seeds}.")
    from zoo.datasets import fsdd

    recordings = fsdd.recordings_dir(config.data_root)
    if not os.path.isdir(recordings) or not any(
        name.endswith(".wav") for name in os.listdir(recordings)
    ):
        raise ConfigError(
            f"The imbalance suite needs the FSDD recordings; {recordings!r} holds no .wav "
            "files (pass --data-root <your FSDD copy>, e.g. ../shared/data/fsdd)."
        )
    return [known[name] for name in config.regimes]


def experiment_values(
    config: SuiteConfig, regime: Regime, fusion: str, methods: Sequence[str]
) -> dict[str, Any]:
    """The `ExperimentConfig` settings of one regime × fusion (also what the example configs
    under ``examples/imbalance/`` hold)."""
    models = FUSIONS_3 if regime.modalities == 3 else FUSIONS
    return {
        "data": "av_digits",
        "data_root": config.data_root,
        "data_options": dict(regime.data_options),
        "model": models[fusion],
        "model_options": dict(MODEL_OPTIONS[fusion]),
        "methods": list(methods),
        "seeds": config.seeds,
        "epochs": config.epochs * regime.epoch_factor,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "rho": config.rho,
        "reference": "joint" if "joint" in methods else None,
        "plots": True,
        "verbose": config.verbose,
    }


# --------------------------------------------------------------------------- stages
def run_suite(config: SuiteConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs (or resumes) the whole suite; returns the regime and check tables' rows."""
    from keras_msam.experiments.runner import run_experiment

    regimes = validate(config)
    os.makedirs(config.run_dir, exist_ok=True)
    base = next(r for r in regimes if r.name == BASE_REGIME)
    tuned = {fusion: tune_fusion(config, base, fusion, log) for fusion in config.fusions}
    rows: list[dict[str, Any]] = []
    for regime in regimes:
        for fusion in config.fusions:
            specs = tuned[fusion]
            values = experiment_values(config, regime, fusion, specs)
            values["reference"] = specs[0]
            # the base regime's run is the tuner's final run (same settings)
            values["run_dir"] = _run_dirs(config, [regime])[regime.name, fusion]
            log(f"\n=== regime {regime.name}, {fusion} fusion ===")
            result = run_experiment(build_config(values), log=log)
            rows += regime_rows(regime, fusion, result.run_dir)
    write_table(config.run_dir, "regimes", rows)
    check_rows: list[dict[str, Any]] = []
    if config.checks:
        fusion = "late" if "late" in tuned else config.fusions[0]
        check_rows = run_checks(config, base, tuned[fusion], log)
        write_table(config.run_dir, "checks", check_rows)
        from keras_msam.experiments.suite_report import checks_markdown

        with open(os.path.join(config.run_dir, "checks_summary.md"), "w") as handle:
            handle.write(checks_markdown(config.run_dir) + "\n")
    control_rows: list[dict[str, Any]] = []
    if config.controls:
        for regime in regimes:
            for fusion in config.fusions:
                control_rows += run_control(config, regime, fusion, tuned[fusion], log)
        write_table(config.run_dir, "controls", control_rows)
    from keras_msam.experiments.suite_plots import plot_regimes, plot_share_trajectories
    from keras_msam.experiments.suite_report import verdict_markdown, verdict_rows

    with open(os.path.join(config.run_dir, "verdict.md"), "w") as handle:
        handle.write(verdict_markdown(verdict_rows(config.run_dir, config.regimes, config.fusions)))
        handle.write("\n")
    plot_regimes(config.run_dir, rows)
    plot_share_trajectories(config.run_dir, _run_dirs(config, regimes))
    return {"regimes": rows, "checks": check_rows, "controls": control_rows}


def _run_dirs(config: SuiteConfig, regimes: Sequence[Regime]) -> dict[tuple[str, str], str]:
    """``{(regime, fusion): run directory}`` of the regime stage."""
    dirs = {}
    for regime in regimes:
        for fusion in config.fusions:
            if regime.name == BASE_REGIME:
                dirs[regime.name, fusion] = os.path.join(config.run_dir, f"tune-{fusion}", "final")
            else:
                dirs[regime.name, fusion] = os.path.join(
                    config.run_dir, "regimes", f"{regime.name}-{fusion}"
                )
    return dirs


def tune_fusion(
    config: SuiteConfig, base: Regime, fusion: str, log: Callable[[str], None]
) -> list[str]:
    """Tunes the methods on the base regime for one fusion; returns the tuned spec labels,
    the reference (Joint) first."""
    from keras_msam.experiments.tuning import TuneConfig, tune

    values = experiment_values(config, base, fusion, config.methods)
    values["run_dir"] = os.path.join(config.run_dir, f"tune-{fusion}")
    experiment = build_config(values)
    log(f"\n=== tuning, {fusion} fusion, base regime {base.name} ===")
    result = tune(
        TuneConfig(
            experiment=experiment,
            trials=config.trials,
            trial_seeds=config.trial_seeds,
            final_seeds=config.seeds,
        ),
        log=log,
    )
    labels = [result.selected[m]["spec"] for m in config.methods]
    return labels


def run_checks(
    config: SuiteConfig, base: Regime, tuned: Sequence[str], log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The seed paper's checks on the base regime (late fusion, tuned settings)."""
    from keras_msam.experiments.runner import run_experiment

    specs = {parse_method(label).name: parse_method(label) for label in tuned}
    joint, msam = specs["joint"], specs.get("msam")
    if msam is None:
        return []
    msam_options = dict(msam.options)
    rho = float(msam_options.get("rho", 0.05))
    share = _mean_dominant_share(config, msam.label)
    methods = [joint.text, msam.text]
    methods.append(_with(msam, fixed_dominant_share=0.5).text)
    methods += [_with(msam, rho=r).text for r in config.rho_sweep if f"{r:.3g}" != f"{rho:.3g}"]
    sam_options = {k: v for k, v in msam_options.items()}
    sam_options["rho"] = float(f"{rho * share:.3g}")
    methods.append(MethodSpec("sam", tuple(sam_options.items())).text)
    methods.append(_with(msam, perturb="dominant").text)
    methods = list(dict.fromkeys(methods))
    rows: list[dict[str, Any]] = []
    values = experiment_values(config, base, "late", methods)
    values.update(reference=joint.text, run_dir=os.path.join(config.run_dir, "checks"))
    log("\n=== checks: fixed share, rho sweep, SAM at the mean effective radius, perturb ===")
    result = run_experiment(build_config(values), log=log)
    rows += regime_rows(base, "late", result.run_dir, check="methods")
    for epochs in sorted({max(1, config.epochs // 2), config.epochs * 2}):
        values = experiment_values(config, base, "late", [joint.text, msam.text])
        values.update(
            epochs=epochs,
            reference=joint.text,
            run_dir=os.path.join(config.run_dir, f"checks-epochs{epochs}"),
        )
        log(f"\n=== checks: training length {epochs} epochs ===")
        result = run_experiment(build_config(values), log=log)
        rows += regime_rows(base, "late", result.run_dir, check=f"epochs={epochs}")
    return rows


def run_control(
    config: SuiteConfig,
    regime: Regime,
    fusion: str,
    tuned: Sequence[str],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Joint at M-SAM's tuned learning rate, as the reference for the tuned SAM/M-SAM runs.

    Tuning picks each method's learning rate, so "M-SAM vs tuned Joint" mixes the effect of
    the sharpness term with that of a different learning rate. This control trains Joint at
    M-SAM's learning rate with the same seeds and compares every tuned method with it; the
    tuned methods' finished runs are copied from the regime's directory, not retrained.
    Nothing is run when Joint and M-SAM were tuned to the same learning rate.
    """
    import shutil

    from keras_msam.experiments.runner import run_experiment

    specs = [parse_method(text) for text in tuned]
    joint = next(s for s in specs if s.name == "joint")
    msam = next((s for s in specs if s.name == "msam"), None)
    if msam is None or dict(msam.options).get("lr") == dict(joint.options).get("lr"):
        return []
    control = _with(joint, lr=dict(msam.options)["lr"])
    source = _run_dirs(config, [regime])[regime.name, fusion]
    target = os.path.join(config.run_dir, "controls", f"{regime.name}-{fusion}")
    others = [s for s in specs if s.name != "joint"]
    for spec in others:  # reuse the finished runs: only their result and history files
        for seed in range(config.seeds):
            seed_dir = os.path.join(source, spec.slug, f"seed{seed}")
            if not os.path.exists(os.path.join(seed_dir, "metrics.json")):
                continue
            copy = os.path.join(target, spec.slug, f"seed{seed}")
            os.makedirs(copy, exist_ok=True)
            for name in ("metrics.json", "history.json", "history.csv"):
                if os.path.exists(os.path.join(seed_dir, name)):
                    shutil.copy2(os.path.join(seed_dir, name), os.path.join(copy, name))
    values = experiment_values(config, regime, fusion, [control.text] + [s.text for s in others])
    values.update(reference=control.text, run_dir=target, plots=False)
    log(f"\n=== control: Joint at M-SAM's learning rate, {regime.name}, {fusion} fusion ===")
    result = run_experiment(build_config(values), log=log)
    return regime_rows(regime, fusion, result.run_dir, check="joint at msam's lr")


def _with(spec: MethodSpec, **options: Any) -> MethodSpec:
    merged = dict(spec.options)
    merged.update(options)
    return MethodSpec(spec.name, tuple(merged.items()))


def _mean_dominant_share(config: SuiteConfig, msam_label: str) -> float:
    """M-SAM's mean dominant share v̄_d over its base-regime runs (late fusion): the mean over
    runs of the largest per-modality mean share. 1.0 when no run is found."""
    path = os.path.join(config.run_dir, "tune-late", "final", "results.json")
    if not os.path.exists(path):
        return 1.0
    with open(path) as handle:
        runs = [r for r in json.load(handle)["runs"] if r["method"] == msam_label]
    shares = [max(v for k, v in r.items() if k.startswith("share_")) for r in runs]
    return float(sum(shares) / len(shares)) if shares else 1.0


# --------------------------------------------------------------------------- tables
def regime_rows(
    regime: Regime, fusion: str, run_dir: str, check: str | None = None
) -> list[dict[str, Any]]:
    """One row per method of a finished run directory: means, and the paired comparison with
    the reference for the multimodal and each unimodal accuracy."""
    with open(os.path.join(run_dir, "results.json")) as handle:
        record = json.load(handle)
    paired = {(p["metric"], p["method"]): p for p in record.get("paired", [])}
    rows = []
    for summary in record["summary"]:
        method = summary["method"]
        row: dict[str, Any] = {"regime": regime.name, "fusion": fusion}
        if check is not None:
            row["check"] = check
        row.update(
            method=method,
            runs=summary["runs"],
            accuracy=summary["accuracy_mean"],
            accuracy_std=summary["accuracy_std"],
        )
        names = [k[len("share_") : -len("_mean")] for k in summary if k.startswith("share_")]
        for name in names:
            row[f"accuracy_{name}"] = summary[f"accuracy_{name}_mean"]
        for name in names:
            row[f"share_{name}"] = summary[f"share_{name}_mean"]
        row["validation"] = summary.get("best_val_accuracy_mean")  # what defaults are chosen on
        row["generalisation_gap"] = summary.get("generalisation_gap_mean")
        row["sharpness"] = summary.get("sharpness_mean")
        for metric in ["accuracy", *(f"accuracy_{n}" for n in names)]:
            match = paired.get((metric, method))
            if match is None:
                continue
            prefix = "" if metric == "accuracy" else f"{metric}_"
            row[f"{prefix}diff"] = match["diff_mean"]
            row[f"{prefix}diff_ci_low"] = match["diff_ci_low"]
            row[f"{prefix}diff_ci_high"] = match["diff_ci_high"]
            if metric == "accuracy":
                row["wins_ties_losses"] = f"{match['wins']}/{match['ties']}/{match['losses']}"
                row["p_holm"] = match["p_holm"]
                row["verdict"] = match["verdict"]
        rows.append(row)
    return rows


def write_table(run_dir: str, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Writes ``<name>.csv``, ``.json`` and a Markdown ``.md`` table of suite rows."""
    from keras_msam.experiments.results import write_csv, write_json

    write_csv(os.path.join(run_dir, f"{name}.csv"), [dict(r) for r in rows])
    write_json(os.path.join(run_dir, f"{name}.json"), list(rows))
    with open(os.path.join(run_dir, f"{name}.md"), "w") as handle:
        handle.write(format_rows(rows) + "\n")


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: regime, fusion, method, accuracy ± std, Δ vs Joint [95 % CI] (points),
    W/T/L, Holm p, verdict, unimodal accuracies with their Δ, shares, gap, sharpness."""

    def pct(value: Any) -> str:
        return "" if value is None else f"{100 * value:.1f}"

    def delta(row: Mapping[str, Any], prefix: str = "") -> str:
        if f"{prefix}diff" not in row:
            return ""
        return (
            f"{100 * row[f'{prefix}diff']:+.1f} "
            f"[{100 * row[f'{prefix}diff_ci_low']:+.1f}, {100 * row[f'{prefix}diff_ci_high']:+.1f}]"
        )

    header = [
        "regime", "fusion", "check", "method", "acc %", "Δ acc vs joint [95% CI]", "W/T/L",
        "p (Holm)", "verdict", "unimodal acc % (Δ [95% CI])", "shares", "gap", "sharpness",
        "val acc %",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        names = [k[len("share_") :] for k in row if k.startswith("share_")]
        unimodal = "; ".join(
            f"{n} {pct(row.get(f'accuracy_{n}'))}"
            + (f" ({delta(row, f'accuracy_{n}_')})" if f"accuracy_{n}_diff" in row else "")
            for n in names
        )
        shares = " / ".join(f"{row[f'share_{n}']:.2f}" for n in names)
        p = row.get("p_holm")
        cells = [
            row["regime"],
            row["fusion"],
            row.get("check", ""),
            f"`{row['method']}`",
            f"{pct(row['accuracy'])} ± {pct(row['accuracy_std'])}",
            delta(row) or "(reference)",
            row.get("wins_ties_losses", ""),
            "" if p is None else f"{p:.3f}",
            row.get("verdict", ""),
            unimodal,
            shares,
            pct(row.get("generalisation_gap")),
            "" if row.get("sharpness") is None else f"{row['sharpness']:.3f}",
            pct(row.get("validation")),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def write_example_configs(config: SuiteConfig, directory: str) -> list[str]:
    """Writes one TOML per regime × fusion (the suite's settings, untuned methods) into
    ``directory``: the config set under ``examples/imbalance/``."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for regime in REGIMES:
        for fusion in FUSIONS:
            values = experiment_values(config, regime, fusion, config.methods)
            values.pop("verbose")
            path = os.path.join(directory, f"{regime.name}-{fusion}.toml")
            with open(path, "w") as handle:
                handle.write(_toml(regime, fusion, values))
            paths.append(path)
    return paths


def _toml(regime: Regime, fusion: str, values: Mapping[str, Any]) -> str:
    def literal(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return json.dumps(value)
        if isinstance(value, list | tuple):
            return "[" + ", ".join(literal(v) for v in value) + "]"
        return repr(value)

    lines = [
        f"# Imbalance regime {regime.name!r}, {fusion} fusion: {regime.description}.",
        "# Generated by keras_msam.experiments.suite.write_example_configs (do not edit by hand).",
        f"#   keras-msam compare --config examples/imbalance/{regime.name}-{fusion}.toml",
        "# The whole suite (tuning, then every regime): keras-msam benchmark --suite imbalance",
    ]
    tables = ("data_options", "model_options")
    for key, value in values.items():
        if key in tables or value is None:
            continue
        lines.append(f"{key} = {literal(value)}")
    for table in tables:
        if values.get(table):
            lines += ["", f"[{table}]"]
            lines += [f"{key} = {literal(value)}" for key, value in values[table].items()]
    return "\n".join(lines) + "\n"
