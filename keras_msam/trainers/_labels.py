"""Label checks of a `MultimodalTrainer` (a mixin): labels outside ``[0, num_classes)`` or not
finite are named before training, with the model's output width read from its outputs or a
symbolic trace."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_msam.absence import map_leaves


def _describe_bad(values: np.ndarray, bad: np.ndarray, limit: int = 5) -> str:
    """``"12 (index 3), -1 (index 7) and 4 more"`` for the flagged entries of ``values``."""
    indices = np.flatnonzero(bad)
    shown = ", ".join(f"{values[i].tolist()!r} (index {i})" for i in indices[:limit])
    more = len(indices) - limit
    return shown + (f" and {more} more" if more > 0 else "")


class LabelChecks:
    """``_check_labels`` and the output width it needs (uses the trainer's model, structure and
    compiled loss)."""

    def _num_classes(self) -> int | None:
        """Width of the wrapped model's single output, or None when unknown (cached)."""
        if not hasattr(self, "_output_width"):
            self._output_width = self._find_num_classes()
        return self._output_width

    def _find_num_classes(self) -> int | None:
        try:
            outputs = self.model.outputs
        except (AttributeError, ValueError):
            outputs = None
        if outputs:
            spec = outputs[0] if len(outputs) == 1 else None
        else:  # a subclassed model (zoo models): trace it symbolically on the declared inputs
            shapes = self._structure.input_shapes
            if any(shapes.get(name) is None for name in self._structure.names):
                return None
            try:
                dtypes = getattr(self.model, "modality_dtypes", None) or {}

                def symbolic(shape: tuple, dtype: Any = None) -> Any:
                    return keras.KerasTensor((None, *shape), dtype=dtype or self.compute_dtype)

                inputs = {
                    name: map_leaves(symbolic, shapes[name])
                    if dtypes.get(name) is None
                    else map_leaves(symbolic, shapes[name], dtypes[name])
                    for name in self._structure.names
                }
                spec = self.model.compute_output_spec(inputs)
            except Exception:  # noqa: BLE001  (no symbolic trace: leave the labels unchecked)
                return None
        width = getattr(spec, "shape", (None,))[-1] if spec is not None else None
        return None if width is None else int(width)

    def _sparse_loss(self) -> bool:
        loss = getattr(self, "loss", None)
        if isinstance(loss, str):
            name = loss
        else:
            name = getattr(loss, "name", None) or getattr(loss, "__name__", None) or ""
        return "sparse_categorical" in str(name)

    def _check_labels(self, labels: Any, where: str) -> None:
        """Raises a `ValueError` naming labels outside ``[0, num_classes)`` or not finite."""
        if labels is None or isinstance(labels, dict) or not hasattr(labels, "__array__"):
            return
        if keras.utils.is_keras_tensor(labels):
            return
        try:
            array = np.asarray(labels)
        except Exception:  # noqa: BLE001  (a tensor that cannot be read on the host)
            return
        if array.dtype.kind not in "biuf" or array.size == 0:
            return
        flat = array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)
        if array.dtype.kind == "f":
            bad = ~np.isfinite(flat).all(axis=1)
            if bad.any():
                raise ValueError(
                    f"{type(self).__name__}: non-finite labels in {where}: "
                    f"{_describe_bad(array, bad)}."
                )
        num_classes = self._num_classes()
        sparse = flat.shape[1] == 1 and (array.dtype.kind in "biu" or self._sparse_loss())
        if not sparse or num_classes is None or num_classes < 2:
            return
        values = flat[:, 0]
        bad = (values < 0) | (values >= num_classes) | (values != np.round(values))
        if bad.any():
            raise ValueError(
                f"{type(self).__name__}: labels outside [0, {num_classes}) in {where} (the model "
                f"{self.model.name!r} has {num_classes} classes): {_describe_bad(values, bad)}."
            )
