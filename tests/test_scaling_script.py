"""benchmarks/scaling.py end to end at one thread on the tiny group: the host is named, every
row is checked and timed, and the table shows speed-ups and ratios to the fastest peer."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import fastbp

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.fresh_process
def test_scaling_script_names_the_host_and_times_every_row(tmp_path):
    out = tmp_path / "scaling.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--threads", "1",
                    "--groups", "T", "--json", str(out), "--time-limit", "500"], check=True,
                   capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    host = result["host"]
    assert host["cores"] >= 1 and host["dgemm_gflops"] > 0 and host["vector_bits"] >= 128
    rows = result["times"]["1"]["T float64"]
    assert set(fastbp.available_backends()) <= set(rows)
    assert all(seconds > 0 for seconds in rows.values())
    table = result["table"]
    assert table.startswith("Host: ") and "#### T float64" in table
    assert "| numpy | " in table and "(1.0x)" in table
