"""Zoo models on the current backend: build, forward, fit step, `.keras` round trip, structure.

Every registered model is exercised at small input shapes and widths (kept fast on CPU); the
architectures' defaults are checked through parameter counts.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import zoo
from zoo.models import MultimodalClassifier
from zoo.models.encoders import resnet18_encoder

BATCH = 4

# Small configurations of every registered model: (id, registered name, overrides).
TRANSFORMER_SMALL = {
    "audio_shape": (4, 6),
    "visual_shape": (4, 5),
    "text_shape": (4, 7),
    "audio_dim": 10,
    "visual_dim": 10,
    "text_dim": 10,
    "num_layers": 1,
    "num_heads": 5,
    "ff_dim": 16,
}
RESNET_SMALL = {"width": 4, "audio_shape": (32, 32, 1), "visual_shape": (2, 32, 32, 3)}
LENET_SMALL = {
    "channels": 4,
    "audio_shape": (16, 16, 1),
    "visual_shape": (16, 16, 1),
    "audio_layers": 3,
    "visual_layers": 2,
}
CASES = [
    ("late_fusion_av_cnn", "late_fusion_av_cnn", {}),
    ("early_fusion_av_cnn", "early_fusion_av_cnn", {}),
    ("avmnist_late_lenet", "avmnist_late_lenet", LENET_SMALL),
    ("avmnist_early_lenet", "avmnist_early_lenet", {**LENET_SMALL, "maxout_hidden": (16, 8)}),
    (
        "cremad_late_resnet18",
        "cremad_late_resnet18",
        {**RESNET_SMALL, "visual_shape": (1, 32, 32, 3)},
    ),
    (
        "cremad_early_resnet18",
        "cremad_early_resnet18",
        {**RESNET_SMALL, "visual_shape": (1, 32, 32, 3), "maxout_hidden": (16, 8)},
    ),
    ("ks_late_resnet18", "ks_late_resnet18", {**RESNET_SMALL, "audio_shape": (32, 16, 1)}),
    ("ave_late_resnet18", "ave_late_resnet18", RESNET_SMALL),
    ("urfunny_late_transformer", "urfunny_late_transformer", TRANSFORMER_SMALL),
    (
        "urfunny_late_transformer[text_tokens]",
        "urfunny_late_transformer",
        {**TRANSFORMER_SMALL, "text_shape": (4,), "text_vocab_size": 11, "pooling": "mean"},
    ),
    ("mosi_late_transformer", "mosi_late_transformer", TRANSFORMER_SMALL),
    (
        "mosi_early_gru",
        "mosi_early_gru",
        {
            "audio_shape": (4, 6),
            "visual_shape": (4, 5),
            "text_shape": (4, 7),
            "units": 8,
            "hidden": 8,
        },
    ),
    ("late_fusion_av3_cnn", "late_fusion_av3_cnn", {"width": 16}),
    ("late_fusion_avt_cnn", "late_fusion_avt_cnn", {"width": 16, "text_dim": 8}),
    ("early_fusion_av3_cnn", "early_fusion_av3_cnn", {"width": 16}),
    ("early_fusion_av_cnn_grid", "early_fusion_av_cnn", {"pool": "grid"}),
    ("early_fusion_av3_cnn_grid", "early_fusion_av3_cnn", {"width": 16, "pool": "grid"}),
]
CASE_IDS = [case_id for case_id, _, _ in CASES]
_BUILT: dict[str, MultimodalClassifier] = {}


def small_model(case_id: str) -> MultimodalClassifier:
    """The small model of a case, built once per test session."""
    if case_id not in _BUILT:
        _, name, overrides = CASES[CASE_IDS.index(case_id)]
        _BUILT[case_id] = zoo.models.create(name, **overrides)
    return _BUILT[case_id]


def random_inputs(model: MultimodalClassifier, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, shape in model.modality_shapes.items():
        if isinstance(shape, dict):  # token ids + padding mask (a modality of two inputs)
            length = shape["token_ids"][0]
            mask = np.arange(length)[None] < rng.integers(1, length + 1, size=(BATCH, 1))
            inputs[name] = {
                "token_ids": (rng.integers(1, 8, size=(BATCH, length)) * mask).astype("int32"),
                "padding_mask": mask.astype("int32"),
            }
        elif "int" in model.modality_dtypes[name]:
            inputs[name] = rng.integers(0, 2, size=(BATCH, *shape)).astype("int32")
        else:
            inputs[name] = rng.normal(size=(BATCH, *shape)).astype("float32")
    return inputs


def num_classes_of(case_id: str) -> int:
    _, name, overrides = CASES[CASE_IDS.index(case_id)]
    return overrides.get("num_classes", zoo.models.defaults(name)["num_classes"])


def to_numpy(tensor) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(tensor))


def test_every_registered_model_has_a_small_test_case():
    assert sorted({name for _, name, _ in CASES}) == zoo.models.list()


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_forward_pass_gives_finite_logits_of_num_classes(case_id):
    model = small_model(case_id)
    logits = to_numpy(model(random_inputs(model), training=False))
    assert logits.shape == (BATCH, num_classes_of(case_id))
    assert np.all(np.isfinite(logits))
    assert model.modality_names == tuple(sorted(model.modality_names))
    assert model.fusion_kind in ("early", "late")
    assert model.fusion_kind == ("early" if "early" in case_id else "late")


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_fuse_of_encode_equals_call_and_forms_coalitions_on_features(case_id):
    model = small_model(case_id)
    inputs = random_inputs(model, seed=1)
    features = model.encode(inputs)
    assert set(features) == set(model.modality_names)
    np.testing.assert_allclose(
        to_numpy(model.fuse(features)), to_numpy(model(inputs, training=False)), atol=1e-5
    )
    # Dropping a modality on features (its encoder's output for zeros) = zeroing its input.
    dropped = model.modality_names[0]
    zeroed = {**inputs, dropped: np.zeros_like(inputs[dropped])}
    coalition = {**features, dropped: model.encode(zeroed)[dropped]}
    np.testing.assert_allclose(
        to_numpy(model.fuse(coalition)), to_numpy(model(zeroed, training=False)), atol=1e-5
    )


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_modality_and_shared_variables_cover_every_trainable_variable_once(case_id):
    model = small_model(case_id)
    per_modality = model.modality_variables()
    assert tuple(sorted(per_modality)) == model.modality_names
    grouped = [v for name in model.modality_names for v in per_modality[name]]
    grouped += model.shared_variables()
    grouped_ids = [id(v) for v in grouped]
    assert len(grouped_ids) == len(set(grouped_ids)), "a variable is in two groups"
    assert sorted(grouped_ids) == sorted(id(v) for v in model.trainable_variables)
    assert model.shared_variables(), "the fusion head / trunk has trainable variables"
    if case_id != "mosi_early_gru":  # MultiBench early fusion: identity encoders
        assert all(per_modality[name] for name in model.modality_names)
    encoder_paths = {v.path for name in model.modality_names for v in per_modality[name]}
    assert not encoder_paths & {v.path for v in model.shared_variables()}


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_unimodal_logits_plus_bias_sum_to_fused_logits_for_linear_late_fusion(case_id):
    model = small_model(case_id)
    features = model.encode(random_inputs(model, seed=2))
    if not model.supports_unimodal_logits:
        with pytest.raises(ValueError, match="not a linear late fusion"):
            model.unimodal_logits(features)
        return
    assert model.fusion_kind == "late"
    unimodal = model.unimodal_logits(features)
    assert set(unimodal) == set(model.modality_names)
    total = sum(to_numpy(value) for value in unimodal.values()) + to_numpy(model.head_bias())
    np.testing.assert_allclose(total, to_numpy(model.fuse(features)), atol=1e-5)
    # Each term depends on its own modality only.
    other = model.modality_names[-1]
    changed = {**features, other: features[other] * 2.0 + 1.0}
    np.testing.assert_allclose(
        to_numpy(model.unimodal_logits(changed)[model.modality_names[0]]),
        to_numpy(unimodal[model.modality_names[0]]),
        atol=1e-6,
    )


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_wrong_missing_or_extra_inputs_raise_value_errors_naming_the_input(case_id):
    model = small_model(case_id)
    inputs = random_inputs(model)
    shapes = model.modality_shapes
    first, second = [name for name in model.modality_names if not isinstance(shapes[name], dict)][
        :2
    ]
    expected = ", ".join(str(d) for d in model.modality_shapes[first])
    missing = {name: value for name, value in inputs.items() if name != first}
    with pytest.raises(
        ValueError, match=rf"missing input '{first}' of shape \(batch, {expected}\)"
    ):
        model(missing)
    with pytest.raises(ValueError, match=r"unexpected input\(s\) 'depth'"):
        model({**inputs, "depth": inputs[first]})
    wrong = np.zeros((BATCH, *(d + 1 for d in model.modality_shapes[first])), inputs[first].dtype)
    with pytest.raises(
        ValueError, match=rf"input '{first}' has shape .*expected \(batch, {expected}\)"
    ):
        model({**inputs, first: wrong})
    with pytest.raises(ValueError, match=rf"input '{second}'"):
        axis = 1 + [d > 1 for d in model.modality_shapes[second]].index(True)
        model.encode({**inputs, second: np.take(inputs[second], [0], axis=axis)})


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_one_fit_step_updates_weights_with_finite_loss(case_id):
    model = small_model(case_id)
    inputs = random_inputs(model, seed=3)
    labels = np.arange(BATCH) % num_classes_of(case_id)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [to_numpy(v).copy() for v in model.trainable_variables]
    history = model.fit(inputs, labels, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [to_numpy(v) for v in model.trainable_variables]
    changed = [not np.allclose(a, b) for a, b in zip(before, after, strict=True)]
    assert any(changed)
    # The linear head always receives a gradient.
    head_index = [id(v) for v in model.trainable_variables].index(id(model.shared_variables()[0]))
    assert changed[head_index]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_keras_round_trip_gives_identical_outputs_and_keeps_the_protocol(case_id, tmp_path):
    model = small_model(case_id)
    inputs = random_inputs(model, seed=4)
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MultimodalClassifier)
    np.testing.assert_allclose(
        to_numpy(loaded(inputs, training=False)), to_numpy(model(inputs, training=False)), atol=1e-6
    )
    assert loaded.modality_names == model.modality_names
    assert loaded.fusion_kind == model.fusion_kind
    assert loaded.modality_shapes == model.modality_shapes
    assert loaded.supports_unimodal_logits == model.supports_unimodal_logits
    assert {k: len(v) for k, v in loaded.modality_variables().items()} == {
        k: len(v) for k, v in model.modality_variables().items()
    }
    assert len(loaded.shared_variables()) == len(model.shared_variables())
    np.testing.assert_allclose(
        to_numpy(loaded.fuse(loaded.encode(inputs))), to_numpy(model(inputs)), atol=1e-5
    )
    assert loaded.count_params() == model.count_params()


# ----------------------------------------------------------------- fusions, any M ≥ 2


def _dense_encoder(name: str, dim: int) -> keras.Model:
    inputs = keras.Input(shape=(dim,), name=name)
    return keras.Model(inputs, keras.layers.Dense(6, activation="relu")(inputs), name=f"{name}_enc")


@pytest.mark.parametrize("num_modalities", [2, 3])
@pytest.mark.parametrize("kind", sorted(zoo.models.LATE_FUSIONS))
def test_every_late_fusion_runs_trains_and_round_trips(kind, num_modalities, tmp_path):
    names = ["audio", "text", "visual"][:num_modalities]
    encoders = {name: _dense_encoder(name, 3 + index) for index, name in enumerate(names)}
    options = {"transformer": {"dim": 8, "num_heads": 2, "ff_dim": 8}}.get(kind, {})
    fusion = zoo.models.fusions.late_fusion(kind, 5, **options)
    model = MultimodalClassifier(encoders, fusion, name=f"fusion_{kind}")
    inputs = random_inputs(model, seed=5)
    logits = to_numpy(model(inputs))
    assert logits.shape == (BATCH, 5)
    np.testing.assert_allclose(to_numpy(model.fuse(model.encode(inputs))), logits, atol=1e-5)
    assert model.supports_unimodal_logits == (kind in ("concat", "sum"))
    ids = [id(v) for vs in model.modality_variables().values() for v in vs]
    ids += [id(v) for v in model.shared_variables()]
    assert sorted(ids) == sorted(id(v) for v in model.trainable_variables)
    # Every modality influences the fused logits.
    for name in names:
        other = {**inputs, name: inputs[name] + 3.0}
        assert not np.allclose(to_numpy(model(other)), logits), f"{kind} ignores {name}"
    if num_modalities == 3:  # one fit step per fusion (compiling is slow on JAX)
        model.compile(
            optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        model.fit(inputs, np.arange(BATCH) % 5, epochs=1, verbose=0)
    model.save(tmp_path / "fusion.keras")
    loaded = keras.saving.load_model(tmp_path / "fusion.keras")
    np.testing.assert_allclose(to_numpy(loaded(inputs)), to_numpy(model(inputs)), atol=1e-6)


def test_unknown_late_fusion_lists_the_known_ones():
    with pytest.raises(ValueError, match="concat.*sum"):
        zoo.models.fusions.late_fusion("bilinear", 3)


def test_fusion_of_a_single_modality_is_refused():
    encoders = {"audio": _dense_encoder("audio", 3)}
    with pytest.raises(ValueError, match="at least 2 modalities"):
        MultimodalClassifier(encoders, zoo.models.fusions.late_fusion("concat", 2))


# ------------------------------------------------------------ architectures, registry


def test_late_fusion_av_cnn_keeps_the_benchmark_architecture():
    model = zoo.models.create("late_fusion_av_cnn")
    assert model.modality_shapes == {"audio": (40, 40, 1), "visual": (28, 28, 1)}
    for name in ("audio", "visual"):
        layers = [
            layer for layer in model.encoders[name].layers if layer.weights or "pool" in layer.name
        ]
        kinds = [type(layer).__name__ for layer in layers]
        assert kinds == ["Conv2D", "Conv2D", "GlobalAveragePooling2D", "Dense"]
        conv1, conv2, _, dense = layers
        assert (conv1.filters, conv1.kernel_size, conv1.strides) == (16, (3, 3), (2, 2))
        assert (conv2.filters, conv2.kernel_size, conv2.strides) == (32, (3, 3), (2, 2))
        assert conv1.activation.__name__ == conv2.activation.__name__ == "relu"
        assert (dense.units, dense.activation.__name__) == (64, "relu")
    assert type(model.fusion).__name__ == "ConcatFusion"
    assert model.fusion.head.units == 10
    # 2 × (160 + 4640 + 2112) + 128·10 + 10
    assert model.count_params() == 15114


def test_resnet18_encoder_matches_torchvision_parameter_count():
    # torchvision resnet18 without fc: 11,176,512 trainable (3-channel conv1 = 64·3·49).
    rgb = resnet18_encoder("visual", (32, 32, 3))
    spectrogram = resnet18_encoder("audio", (32, 32, 1))

    def trainable(model):
        return sum(math.prod(v.shape) for v in model.trainable_variables)

    assert trainable(rgb) == 11_176_512
    assert trainable(spectrogram) == 11_176_512 - 64 * 2 * 49
    assert rgb.outputs[0].shape[-1] == 512


def test_frames_encoder_averages_the_per_frame_features():
    clip_encoder = resnet18_encoder("visual", (3, 16, 16, 3), width=4)
    frame_encoder = resnet18_encoder("visual", (16, 16, 3), width=4)
    frame_encoder.set_weights(clip_encoder.get_weights())
    clips = np.random.default_rng(6).normal(size=(2, 3, 16, 16, 3)).astype("float32")
    per_frame = [to_numpy(frame_encoder(clips[:, t], training=False)) for t in range(3)]
    np.testing.assert_allclose(
        to_numpy(clip_encoder(clips, training=False)), np.mean(per_frame, axis=0), atol=1e-5
    )


def test_describe_reports_inputs_fusion_and_parameter_counts():
    info = zoo.models.describe("late_fusion_av_cnn")
    assert info["inputs"] == {"audio": (40, 40, 1), "visual": (28, 28, 1)}
    assert (info["fusion"], info["unimodal_logits"]) == ("late", True)
    assert info["parameters"] == info["trainable_parameters"] == 15114
    small = zoo.models.describe("cremad_early_resnet18", **dict(CASES[5][2]))
    assert small["fusion"] == "early" and not small["unimodal_logits"]
    assert small["parameters"] > small["trainable_parameters"] > 0  # BatchNorm statistics
    assert zoo.models.describe("urfunny_late_transformer", **TRANSFORMER_SMALL)["inputs"] == {
        "audio": (4, 6),
        "text": (4, 7),
        "visual": (4, 5),
    }


def test_list_filters_with_wildcards():
    late = zoo.models.list("*late*")
    assert "late_fusion_av_cnn" in late and "cremad_late_resnet18" in late
    assert not [name for name in late if "early" in name]
    assert zoo.models.list("mosi_*") == ["mosi_early_gru", "mosi_late_transformer"]
    required = {
        "avmnist_early_lenet", "avmnist_late_lenet", "cremad_early_resnet18",
        "cremad_late_resnet18", "ks_late_resnet18", "ave_late_resnet18",
        "urfunny_late_transformer", "mosi_early_gru", "mosi_late_transformer",
        "early_fusion_av_cnn", "late_fusion_av_cnn",
    }  # fmt: skip
    assert required <= set(zoo.models.list())


def test_unknown_name_lists_the_closest_names():
    with pytest.raises(ValueError, match="Closest names: cremad_late_resnet18"):
        zoo.models.create("cremad_late_resnet")


def test_unknown_override_names_the_valid_arguments():
    with pytest.raises(TypeError, match="no argument.*depth.*num_classes"):
        zoo.models.create("late_fusion_av_cnn", depth=3)


def test_overrides_change_the_built_model():
    model = zoo.models.create("avmnist_late_lenet", num_classes=3, fusion="sum", **LENET_SMALL)
    assert type(model.fusion).__name__ == "SumFusion"
    assert to_numpy(model(random_inputs(model))).shape == (BATCH, 3)
    assert model.modality_shapes["audio"] == LENET_SMALL["audio_shape"]
