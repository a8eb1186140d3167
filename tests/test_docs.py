"""The documentation site's code blocks run, so the guides never go stale: every ```python block
of ``docs/index.md`` and ``docs/guides/*.md`` is executed, page by page in one namespace (with
``keras``, ``keras_msam``, ``zoo`` and ``numpy as np`` imported), in a temporary directory. A
block preceded by ``<!-- docs-test: backends=jax -->`` runs on the listed backends only (the
distributed example uses JAX's ``keras.distribution``); one preceded by
``<!-- docs-test: requires=keras_hub -->`` needs that module (CI installs it). ``mkdocs build
--strict`` runs in CI
(``.ci/run``). Runs on the backend of KERAS_BACKEND."""

from __future__ import annotations

import importlib.util
import os
import re
import textwrap
from pathlib import Path

import keras
import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = [DOCS / "index.md", *sorted((DOCS / "guides").glob("*.md"))]
BLOCK = re.compile(
    r"(?:<!-- docs-test: backends=(?P<backends>[a-z,]+) -->\s*\n)?"
    r"(?:<!-- docs-test: requires=(?P<requires>[a-z_,]+) -->\s*\n)?"
    r"(?P<indent>[ \t]*)```python\n(?P<code>.*?)\n(?P=indent)```",
    re.S,
)


def python_blocks(page: Path) -> list[tuple[str, tuple[str, ...] | None]]:
    """(code, backends or None) of every ```python block of ``page``, in order; a block whose
    ``requires=`` module is not installed is left out (keras-hub is an optional extra)."""
    blocks = []
    for match in BLOCK.finditer(page.read_text()):
        code = textwrap.dedent(
            "\n".join(
                line[len(match["indent"]) :] if line.startswith(match["indent"]) else line
                for line in match["code"].split("\n")
            )
        )
        backends = tuple(match["backends"].split(",")) if match["backends"] else None
        required = match["requires"].split(",") if match["requires"] else []
        if all(importlib.util.find_spec(module) for module in required):
            blocks.append((code, backends))
    return blocks


def test_the_guides_have_code_to_run():
    counted = {page.name: len(python_blocks(page)) for page in PAGES}
    assert counted["index.md"] >= 1 and counted["zoo.md"] >= 1 and counted["distributed.md"] >= 1


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_every_python_block_runs(page, tmp_path, monkeypatch):
    import numpy as np

    import keras_msam
    import zoo

    monkeypatch.chdir(tmp_path)
    environment = dict(os.environ)
    namespace = {"keras": keras, "keras_msam": keras_msam, "zoo": zoo, "np": np}
    ran = 0
    try:
        for number, (code, backends) in enumerate(python_blocks(page)):
            if backends is not None and keras.backend.backend() not in backends:
                continue
            try:
                exec(compile(code, f"{page.name} block {number}", "exec"), namespace)
            except Exception as error:  # noqa: BLE001 - name the page and block
                raise AssertionError(
                    f"{page.name}, python block {number} fails: {error!r}"
                ) from error
            ran += 1
    finally:
        os.environ.clear()
        os.environ.update(environment)  # a block may set KERAS_BACKEND for its reader
        if keras.backend.backend() == "jax":
            keras.distribution.set_distribution(None)
    if page.name != "distributed.md" or keras.backend.backend() == "jax":
        assert ran > 0
