"""The README's Python examples run as written, so they never go stale."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples():
    assert BLOCKS


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(block):
    for extra in ("dask", "torch", "jax"):       # an optional extra's example needs it
        if f"fastbp.{extra}" in block:
            pytest.importorskip(extra)
    exec(compile(block, str(README), "exec"), {})
