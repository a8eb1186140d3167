"""JAX's persistent compilation cache for experiment runs (JAX only; a no-op elsewhere).

An experiment trains the same step (same model, method and shapes) once per seed and trial; on
this 2-core CPU compiling the M-SAM step takes seconds, longer than a short run itself. With
the cache on, each distinct step is compiled once per machine and read back afterwards.
"""

from __future__ import annotations

import os


def enable_compilation_cache(directory: str | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache, unless the user configured one already.

    Args:
        directory: Where compiled steps are kept; default ``$KERAS_MSAM_CACHE_DIR/jax`` or
            ``~/.cache/keras-msam/jax``.

    Returns:
        The cache directory in use, or None on other backends.
    """
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    root = os.environ.get("KERAS_MSAM_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras-msam"
    )
    directory = directory or os.path.join(root, "jax")
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return directory
