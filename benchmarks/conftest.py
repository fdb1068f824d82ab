import sys
from pathlib import Path

# the shared test data (tests/cases.py) serves the benchmarks too
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
