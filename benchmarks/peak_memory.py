"""Peak memory of one training step of Joint, SAM and M-SAM per backend, and the ratio to Joint.

    python benchmarks/peak_memory.py --all-backends --modalities 2,8 \\
        --json benchmarks/results/peak_memory_cpu.json
    python benchmarks/peak_memory.py --backend jax --repeats 1        # one backend, quick look

Model: the reference model of `step_time.py` (issue #2, zoo ``late_fusion_av_cnn``: ``audio``
(40, 40, 1) and ``visual`` (28, 28, 1), per-modality Conv(16,3,s2) → Conv(32,3,s2) → GAP →
Dense(64); concat → Dense(10)); batch 64; SGD(0.01, momentum 0.9); M = 2. ``--modalities 8``
adds the synthetic M-modality model of `modality_scaling.py` (one (28, 28, 1) image and the same
encoder per modality; above 6 modalities Shapley is permutation-sampled: 84 coalitions at M = 8).

Variants: ``joint`` = `Joint` with its default per-step Shapley logging (coalitions on encoder
features, as ``joint`` in `step_time.py`); ``sam`` = `SAM(rho=0.05)`; ``msam (features)`` /
``msam (inputs)`` = `MSAM(rho=0.05)` with coalitions on encoder features (the zoo default) / by
zeroing inputs; ``msam (k=5)`` = amortised M-SAM (``shapley_every=5, sam_every=5``, features).

Protocol. Every (backend, variant, repeat) runs in its own fresh process (so neither an import,
a compilation nor another variant's peak can mask the one measured; ``--backend`` and
``--all-backends`` only choose which processes to spawn). In that process: build model, trainer
and optimizer, put one batch on the device, then run ``--warmup`` (5) steps through
`train_on_batch` (the same compiled `train_function` that `fit` runs: tracing / XLA compilation
happen here, and for ``k=5`` both the full and the cheap step are compiled and run). Then the
between-steps state is the baseline (weights, optimizer slots, metrics, the batch, compiled
code), and ``--steps`` (5) further steps are measured; for ``k=5`` these contain one full
two-pass step and four cheap ones, so the figure is the expensive step's peak. Each table is the
median over ``--repeats`` (3) processes.

What is measured. Two views per step, and the headline (``STEP PEAK``, whose ratio to ``joint``
is the one judged against the target) is the more direct of them for each backend:
step RSS on jax and torch, the allocator's bytes in use on tensorflow, and the allocator's
statistic on every backend when an accelerator is present (RSS is host memory).

* **step RSS** (headline on jax and torch, CPU) — the peak resident memory of the process over
  the measured steps minus its resident memory just before them: the kernel's high-water mark
  ``VmHWM`` of ``/proc/self/status``, reset to the current RSS by writing ``5`` to
  ``/proc/self/clear_refs`` right after the baseline is read. So it is the extra memory one step
  brings in on top of what stays allocated between steps, runtime overheads included. Each child
  runs with ``MALLOC_MMAP_THRESHOLD_=65536``: otherwise glibc raises its mmap threshold
  dynamically (up to 32 MiB) and keeps the warm-up's freed buffers in its heap, where the next
  step reuses them without touching a new page, and every variant would read ≈ 0. With a fixed
  threshold every buffer ≥ 64 KiB is mapped on allocation and unmapped on free, so each step's
  working set shows up again as page faults. Residual noise (small buffers, thread stacks) is
  ~±1 MiB. Where ``clear_refs`` cannot be written the child falls back to ``ru_maxrss`` growth
  (`resource.getrusage`), which cannot see a step peak below the warm-up's: the method line
  then says so and the figure is a lower bound. On tensorflow this view reads ≈ 0 for every
  variant and is *not* the headline: TF's default x86 build (oneDNN) allocates through
  ``MklCPUAllocator``, a pool that keeps the warm-up's buffers, so the step's working set sits
  in the baseline (visible in the process peak below), not in the window.
* **backend view** (headline on tensorflow; cross-check elsewhere):

  - jax: on CPU, the compiled step's buffer assignment: XLA's ``memory_analysis()`` of the
    function `train_on_batch` runs (``jax.jit(train_step, donate_argnums=0)`` lowered on the
    live state and batch; both branches for ``k=5``, the larger taken): temporaries + outputs −
    outputs aliased to the donated state. Exact for XLA's buffers, blind to anything else (the
    CPU runtime's own scratch). On GPU: ``device.memory_stats()`` ``peak_bytes_in_use`` minus
    ``bytes_in_use`` before the steps (JAX cannot reset the peak; the warm-up ran the same step).
  - tensorflow: the peak bytes in use of TF's allocator, ``tf.config.experimental.
    get_memory_info`` after ``reset_memory_stats``, minus the bytes in use at the reset. On CPU
    the default allocator keeps no statistics, so this comes from a *second* process per
    repeat run with ``TF_CPU_ALLOCATOR_USE_BFC=true`` (TF's BFC allocator with statistics on
    the host, same oneDNN kernels; chunk sizes rounded up to 256 B bins). On GPU the same calls
    on ``GPU:0``.
  - torch: on CPU, the peak of live tensor bytes during the measured steps, relative to the
    start, from the allocation / free events of `torch.profiler` (``profile_memory=True``):
    what the c10 CPU allocator hands out (oneDNN's private scratch space is not included). On
    GPU: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
    ``memory_allocated`` before the steps.

* **process peak while stepping** — baseline RSS + step RSS: the resident peak of the whole
  process in steady-state training (libraries, compiled code, pooled buffers included), what
  ``top`` shows; and the **lifetime peak** (``VmHWM`` before the reset, imports and
  compilation included). Both are dominated by the ~0.75–1 GiB the frameworks themselves take,
  so their ratios sit near 1 and say little about the step.

Finally the analytical size of the stacked coalition inputs of one step: with
``coalitions="inputs"`` the trainer stacks the coalitions that still need a forward (the empty
one runs on a single example; the full one is the training pass's prediction for this model,
which behaves the same in training and inference) and runs them in chunks of at most
``COALITION_MEMORY_BUDGET`` (256 MiB) of stacked inputs (`_coalitions_per_forward`, the real
code path); with ``coalitions="features"`` only the (K, B, feature) encoder outputs are stacked.

The project target: peak memory of M-SAM at most 1.5x Joint's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys

BACKENDS = ("jax", "tensorflow", "torch")
VARIANTS = ("joint", "sam", "msam (features)", "msam (inputs)", "msam (k=5)")
RESULT_TAG = "RESULT "
MIB = 2.0**20


# ------------------------------------------------------------------------------------------------
# Child process: one backend, one variant, one measurement


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_high_water_mark() -> bool:
    """Resets VmHWM to the current RSS (Linux ≥ 4.0); False where it is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _malloc_library() -> str:
    with open("/proc/self/maps") as handle:
        maps = handle.read()
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if f"lib{name}" in maps:
            return name
    return "glibc"


def _has_accelerator(backend: str) -> bool:
    if backend == "jax":
        import jax

        return jax.devices()[0].platform != "cpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _build_model(modalities: int):
    import zoo

    if modalities == 2:
        return zoo.models.create("late_fusion_av_cnn", num_classes=10)
    from zoo.models.base import MultimodalClassifier
    from zoo.models.encoders import conv_encoder
    from zoo.models.fusions import late_fusion

    names = [f"m{i}" for i in range(modalities)]
    encoders = {name: conv_encoder(name, (28, 28, 1)) for name in names}
    return MultimodalClassifier(encoders, late_fusion("concat", 10), name=f"m{modalities}")


def _build_trainer(variant: str, model):
    import keras_msam

    return {
        "joint": lambda: keras_msam.Joint(model),
        "sam": lambda: keras_msam.SAM(model, rho=0.05),
        "msam (features)": lambda: keras_msam.MSAM(model, rho=0.05, coalitions="features"),
        "msam (inputs)": lambda: keras_msam.MSAM(model, rho=0.05, coalitions="inputs"),
        "msam (k=5)": lambda: keras_msam.MSAM(model, rho=0.05, shapley_every=5, sam_every=5),
    }[variant]()


def _batch(trainer, batch: int):
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = trainer.structure.input_shapes
    x = {
        name: rng.standard_normal((batch,) + tuple(shapes[name])).astype("float32")
        for name in trainer.structure.names
    }
    y = rng.integers(0, 10, size=batch).astype("int32")
    return x, y


def _coalition_analysis(trainer, model, x) -> dict:
    """Analytical bytes of the stacked coalition inputs of one step (real chunking code path)."""
    import numpy as np
    from keras import ops

    from keras_msam.trainers.base import COALITION_MEMORY_BUDGET

    names = trainer.structure.names
    masks = trainer._plan.masks
    batch = next(iter(x.values())).shape[0]
    has_empty = not masks[0].any()
    reuse_full = trainer._training_invariant and bool(masks[-1].all())
    middle = masks.shape[0] - int(has_empty) - int(reuse_full)
    per_copy = sum(int(np.prod(x[name].shape)) * x[name].dtype.itemsize for name in names)
    chunk = trainer._coalitions_per_forward(x, middle)
    forwards = max(1, -(-middle // chunk)) if middle else 1
    features = model.encode({name: x[name][:1] for name in names}, training=False)
    feature_bytes = sum(
        masks.shape[0] * batch * int(np.prod(ops.shape(features[name])[1:])) * 4 for name in names
    )
    return {
        "coalitions": int(masks.shape[0]),
        "forwarded_coalitions": int(middle),
        "batch_copy_mib": per_copy / MIB,
        "input_stacked_mib": middle * per_copy / MIB,
        "input_largest_forward_mib": min(chunk, middle) * per_copy / MIB,
        "input_forwards": int(forwards),
        "budget_mib": COALITION_MEMORY_BUDGET / MIB,
        "copies_in_budget": int(COALITION_MEMORY_BUDGET // per_copy),
        "feature_stacked_mib": feature_bytes / MIB,
    }


def _jax_allocator(trainer, x, y, run_steps) -> tuple[float, str]:
    import functools

    import jax

    device = jax.devices()[0]
    if device.platform != "cpu" and device.memory_stats():
        before = device.memory_stats()["bytes_in_use"]
        run_steps()
        return (
            (device.memory_stats()["peak_bytes_in_use"] - before) / MIB,
            "jax device.memory_stats() peak_bytes_in_use - bytes_in_use (peak not resettable)",
        )
    state = trainer._get_jax_state(
        trainable_variables=True,
        non_trainable_variables=True,
        optimizer_variables=True,
        metrics_variables=True,
        purge_model_variables=False,
    )
    if trainer._host_schedule() is None:
        functions = [trainer.train_step]
    else:
        functions = [functools.partial(trainer._branch_train_step, flag) for flag in (True, False)]
    sizes = []
    for function in functions:
        stats = jax.jit(function, donate_argnums=0).lower(state, (x, y, None)).compile()
        stats = stats.memory_analysis()
        sizes.append(
            stats.temp_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
        )
    return max(sizes) / MIB, "XLA memory_analysis(): temp + output - aliased (compiled step)"


def _torch_allocator(run_steps) -> tuple[float, str]:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run_steps()
        torch.cuda.synchronize()
        return (
            (torch.cuda.max_memory_allocated() - before) / MIB,
            "torch.cuda.max_memory_allocated - memory_allocated",
        )
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run_steps()
    events = [
        event
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == DeviceType.CPU
    ]
    events.sort(key=lambda event: event.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak / MIB, "torch.profiler memory events: peak live CPU tensor bytes"


def _tensorflow_allocator(run_steps) -> tuple[float | None, str]:
    import tensorflow as tf

    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    tf.config.experimental.reset_memory_stats(device)
    before = tf.config.experimental.get_memory_info(device)["current"]
    run_steps()
    peak = tf.config.experimental.get_memory_info(device)["peak"]
    if peak == 0:
        return None, f"tf get_memory_info({device!r}) not tracked"
    allocator = "BFC (TF_CPU_ALLOCATOR_USE_BFC)" if device == "CPU:0" else "GPU BFC"
    return (peak - before) / MIB, f"tf get_memory_info({device!r}) peak - current, {allocator}"


def _child(args: argparse.Namespace) -> None:
    import keras

    backend = keras.backend.backend()
    keras.utils.set_random_seed(0)
    model = _build_model(args.modalities)
    trainer = _build_trainer(args.variant, model)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x_host, y_host = _batch(trainer, args.batch)
    x = {name: keras.ops.convert_to_tensor(value) for name, value in x_host.items()}
    y = keras.ops.convert_to_tensor(y_host)

    def run_steps(count: int = args.steps) -> None:
        for _ in range(count):
            trainer.train_on_batch(x, y)  # returns host numbers: each step has finished

    run_steps(args.warmup)
    gc.collect()
    result: dict = {
        "backend": backend,
        "variant": args.variant,
        "malloc": _malloc_library(),
        "accelerator": _has_accelerator(backend),
    }
    if args.probe == "rss":
        before_window_kib = _status_kib("VmHWM")  # imports, compilation, warm-up
        baseline_kib = _status_kib("VmRSS")
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        reset = _reset_high_water_mark()
        run_steps()
        if reset:
            peak_kib = _status_kib("VmHWM")
            method = "VmHWM reset via /proc/self/clear_refs"
        else:  # lower bound: a step peak below the warm-up's is invisible
            peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, maxrss_before)
            method = "ru_maxrss growth (no reset possible: lower bound)"
        result.update(
            rss_method=method,
            baseline_mib=baseline_kib / 1024,
            step_rss_mib=(peak_kib - baseline_kib) / 1024,
            process_peak_mib=peak_kib / 1024,
            lifetime_peak_mib=max(peak_kib, before_window_kib) / 1024,
        )
    if args.probe == "allocator" or (args.probe == "rss" and backend != "tensorflow"):
        # After the RSS window: the allocator probe must not run inside it.
        if backend == "jax":
            value, how = _jax_allocator(trainer, x, y, run_steps)
        elif backend == "torch":
            value, how = _torch_allocator(run_steps)
        else:
            value, how = _tensorflow_allocator(run_steps)
        result.update(allocator_mib=value, allocator_method=how)
    if args.variant.startswith("msam"):
        result["coalition_inputs"] = _coalition_analysis(trainer, model, x_host)
    print(RESULT_TAG + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------
# Parent: spawn the processes, take medians, print and save


def _spawn(backend: str, variant: str, modalities: int, probe: str, args) -> dict | None:
    command = [sys.executable, os.path.abspath(__file__), "--child", "--variant", variant]
    command += ["--modalities", str(modalities), "--probe", probe, "--batch", str(args.batch)]
    command += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    env = {**os.environ, "KERAS_BACKEND": backend, "MALLOC_MMAP_THRESHOLD_": "65536"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if probe == "allocator":
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(RESULT_TAG)), None)
    if line is None:
        print(f"{backend} / {variant} / M={modalities}: failed\n{out.stderr[-3000:]}", flush=True)
        return None
    return json.loads(line[len(RESULT_TAG) :])


def _median(runs: list[dict], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def _print_table(title: str, table: dict, variants, fmt: str = "{:>16.2f}") -> None:
    print(f"\n{title}")
    print(f"{'backend':<11}" + "".join(f"{v:>16}" for v in variants))
    for backend, row in table.items():
        cells = "".join(
            fmt.format(row[v]) if row.get(v) is not None else f"{'-':>16}" for v in variants
        )
        print(f"{backend:<11}{cells}")


def _ratios(table: dict, variants) -> dict:
    return {
        backend: {
            v: (row[v] / row["joint"] if row.get(v) is not None and row.get("joint") else None)
            for v in variants
        }
        for backend, row in table.items()
    }


def _headline(run: dict) -> tuple[float | None, str]:
    """The step peak a run is judged by: the most direct view its backend and host allow."""
    if run.get("accelerator"):
        return run.get("allocator_mib"), "allocator (accelerator memory)"
    if run["backend"] == "tensorflow":  # oneDNN's pooling allocator hides the step from RSS
        return run.get("allocator_mib"), "allocator (BFC bytes in use)"
    return run.get("step_rss_mib"), "step RSS"


TABLES = (  # key, title, number format
    ("step_peak_mib", "STEP PEAK (MiB), headline: {headline}", "{:>16.2f}"),
    (
        "step_rss_mib",
        "step RSS (MiB): peak RSS over the measured steps minus RSS before them",
        "{:>16.2f}",
    ),
    (
        "allocator_mib",
        "backend view (MiB): jax XLA memory_analysis; tensorflow BFC get_memory_info; "
        "torch profiler tensor bytes",
        "{:>16.2f}",
    ),
    ("process_peak_mib", "process peak RSS while stepping (MiB)", "{:>16.1f}"),
    ("lifetime_peak_mib", "process lifetime peak RSS, imports + compile (MiB)", "{:>16.1f}"),
)


def _measure_all(backends, modalities: int, variants, args) -> dict:
    runs: dict[str, dict[str, list[dict]]] = {b: {v: [] for v in variants} for b in backends}
    for backend in backends:
        for repeat in range(args.repeats):
            for variant in variants:  # interleaved, so drift hits every variant alike
                run = _spawn(backend, variant, modalities, "rss", args)
                if run is None:
                    continue
                if backend == "tensorflow":
                    extra = _spawn(backend, variant, modalities, "allocator", args)
                    if extra is not None:
                        run["allocator_mib"] = extra.get("allocator_mib")
                        run["allocator_method"] = extra.get("allocator_method")
                run["step_peak_mib"], run["headline"] = _headline(run)
                runs[backend][variant].append(run)
            print(f"M={modalities} {backend}: repeat {repeat + 1}/{args.repeats} done", flush=True)
    summary: dict = {}
    for key, _, _ in TABLES + (("baseline_mib", "", ""),):
        summary[key] = {
            b: {v: _median(runs[b][v], key) for v in variants}
            for b in backends
            if any(runs[b].values())
        }
        if key != "baseline_mib":
            summary[key.replace("_mib", "_ratio")] = _ratios(summary[key], variants)

    def collect(backend: str, field: str) -> list[str]:
        return sorted({str(r.get(field)) for v in variants for r in runs[backend][v]} - {"None"})

    summary["methods"] = {
        b: {
            field: collect(b, field)
            for field in ("headline", "rss_method", "allocator_method", "malloc", "accelerator")
        }
        for b in backends
    }
    summary["coalition_inputs"] = next(
        (
            r["coalition_inputs"]
            for b in backends
            for v in variants
            for r in runs[b][v]
            if "coalition_inputs" in r
        ),
        {},
    )
    summary["runs"] = runs
    return summary


def _report(modalities: int, summary: dict, variants, args) -> None:
    model = "reference model" if modalities == 2 else "synthetic (28, 28, 1) per modality"
    head = (
        f"M = {modalities} ({model}), batch {args.batch}, {args.warmup} warm-up + "
        f"{args.steps} measured steps, median of {args.repeats} processes"
    )
    print(f"\n===== {head} =====")
    headline = "; ".join(f"{b}: {', '.join(m['headline'])}" for b, m in summary["methods"].items())
    for key, title, fmt in TABLES:
        _print_table(title.format(headline=headline), summary[key], variants, fmt)
        ratio_fmt = "{:>16.3f}" if key in ("process_peak_mib", "lifetime_peak_mib") else None
        _print_table(
            "  ratio to joint",
            summary[key.replace("_mib", "_ratio")],
            variants,
            ratio_fmt or "{:>16.2f}",
        )
    coalitions = summary["coalition_inputs"]
    if coalitions:
        print(
            f"\nstacked coalition inputs (analytical): {coalitions['coalitions']} coalitions, "
            f"{coalitions['forwarded_coalitions']} need a forward; one batch copy "
            f"{coalitions['batch_copy_mib']:.3f} MiB; coalitions='inputs' stacks "
            f"{coalitions['input_stacked_mib']:.3f} MiB in {coalitions['input_forwards']} "
            f"forward(s) (largest {coalitions['input_largest_forward_mib']:.3f} MiB) against a "
            f"budget of {coalitions['budget_mib']:.0f} MiB ({coalitions['copies_in_budget']} "
            f"copies); coalitions='features' stacks {coalitions['feature_stacked_mib']:.3f} MiB "
            "of encoder features"
        )
    for backend, methods in summary["methods"].items():
        print(
            f"{backend}: RSS = {', '.join(methods['rss_method'])}; backend view = "
            f"{', '.join(methods['allocator_method'])}; malloc = {', '.join(methods['malloc'])}; "
            f"accelerator = {', '.join(methods['accelerator'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--backend", choices=BACKENDS, help="measure this backend only")
    which.add_argument("--all-backends", action="store_true", help="jax, tensorflow and torch")
    parser.add_argument(
        "--modalities", default="2", help="comma list: 2 = reference model, others synthetic"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=5, help="steps before the baseline")
    parser.add_argument("--steps", type=int, default=5, help="measured steps")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per variant")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="joint", help=argparse.SUPPRESS)
    parser.add_argument(
        "--probe", default="rss", choices=("rss", "allocator"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        args.modalities = int(args.modalities)
        _child(args)
        return
    if args.backend:
        backends = [args.backend]
    elif args.all_backends:
        backends = list(BACKENDS)
    else:
        backends = [os.environ.get("KERAS_BACKEND", "jax")]
    variants = [v.strip() for v in args.variants.split(",")]
    if "joint" not in variants:
        variants.insert(0, "joint")
    counts = [int(m) for m in args.modalities.split(",")]
    results = {}
    for modalities in counts:
        results[str(modalities)] = _measure_all(backends, modalities, variants, args)
    for modalities in counts:
        _report(modalities, results[str(modalities)], variants, args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "command": "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]),
                    "batch": args.batch,
                    "warmup": args.warmup,
                    "steps": args.steps,
                    "repeats": args.repeats,
                    "variants": variants,
                    "modalities": results,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
