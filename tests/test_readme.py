"""The README's Python examples run as written, so they never go stale."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_examples_run():
    assert BLOCKS
    for block in BLOCKS:
        exec(compile(block, str(README), "exec"), {})
