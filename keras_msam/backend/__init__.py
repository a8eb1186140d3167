"""Backend-specific trainer pieces, picked once at import from `keras.backend.backend()`.

Each module defines `BackendTrainer`, a mixin that supplies only what truly differs between
backends: how a gradient is taken (`_value_and_grad`), how autograd is switched off
(`_no_gradient`), and how `train_step`/`test_step` thread state and apply the optimizer.
"""

import keras

_BACKEND = keras.backend.backend()

if _BACKEND == "jax":
    from keras_msam.backend.jax_trainer import BackendTrainer
elif _BACKEND == "tensorflow":
    from keras_msam.backend.tensorflow_trainer import BackendTrainer
elif _BACKEND == "torch":
    from keras_msam.backend.torch_trainer import BackendTrainer
else:
    raise ImportError(
        f"keras-msam trains on the jax, tensorflow and torch backends; KERAS_BACKEND is "
        f"{_BACKEND!r}. Set KERAS_BACKEND=jax|tensorflow|torch."
    )

__all__ = ["BackendTrainer"]
