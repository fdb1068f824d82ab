"""The framework examples of docs/examples/ run and learn, compiled (README and docs/api.md
section 8 point to them): the PyTorch loop's loss under torch.compile(fullgraph=True), which
fails on any graph break, the JAX step under jax.jit. Each is skipped where its framework is not
installed."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


@pytest.mark.fresh_process
@pytest.mark.parametrize("script, framework", [("torch_digits.py", "torch"),
                                               ("jax_digits.py", "jax")])
def test_example_training_loop_learns_digits(script, framework):
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    out = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", out.stdout).group(1))
    assert accuracy >= 0.85, out.stdout
