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
    assert set(result["times"]["1"]["_gemm"]) == {"float32", "float64"}
    assert all(rate > 1e8 for rate in result["times"]["1"]["_gemm"].values())
    assert result["provenance"]["commit"] and "numpy" in result["provenance"]["versions"]
    assert "GEMM rate per thread count" in table and "at commit" in table
    assert result["host"]["isa"] in ("AVX-512", "AVX2", "SSE") and result["host"]["uarch"]


def test_efficiency_is_the_three_products_flops_over_the_gemm_rate():
    """C float32 (256 x 3072 x 10): 6 B d n = 47.2 MFLOP; at 1 ms against a 94.4 GFLOP/s
    GEMM rate the efficiency is 0.50 (and 0.25 at 2 ms), for fastbp's rows and peers'."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scaling
    flops = 6 * 256 * 3072 * 10
    result = {"host": {"cpu": "x", "cores": 2, "dgemm_gflops": 1.0, "isa": "AVX2",
                       "uarch": "Zen 3", "fma512_full": None, "bf16": []},
              "threads": [1], "groups": ["C float32"],
              "times": {"1": {"_gemm": {"float32": flops / 0.5e-3, "float64": 1.0},
                              "C float32": {"c": 1e-3, "jax jit": 2e-3}}}}
    table = scaling.report(result)
    assert "| c | 1,000 (1.0x), eff 0.50, 2.00x |" in table
    assert "| jax jit | 2,000 (1.0x), eff 0.25 |" in table
    assert "Zen 3), AVX2, bf16: no" in table


@pytest.mark.parametrize("vendor, family, model, name, full", [
    ("AuthenticAMD", 25, 1, "Zen 3", None), ("AuthenticAMD", 25, 17, "Zen 4", False),
    ("AuthenticAMD", 26, 2, "Zen 5", True), ("GenuineIntel", 6, 207, "Emerald Rapids", True)])
def test_the_micro_architecture_by_cpuid(vendor, family, model, name, full):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scaling
    assert scaling.uarch(vendor, family, model) == (name, full)


def test_report_splices_a_scaling_run_into_results_md(tmp_path):
    """report.py --threads: RESULTS.md's Threads section is replaced by the run's (its host,
    date and commit with it) and every other line kept."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import report
    run = tmp_path / "scaling.json"
    run.write_text(json.dumps({"table": "Host: here\n\nRun 2026-12-07 at commit abc\n\n#### T"}))
    results = ["# Benchmark results", "", "## Targets", "x", report.THREADS_HEADING, "", "old",
               "#### T float64", "| c | 1 |", "## All groups", "", "### dgemm"]
    out = report.splice_threads(results, run)
    assert out[:4] == results[:4] and out[-3:] == results[-3:]
    assert "old" not in out and "Run 2026-12-07 at commit abc" in out
    assert out.count(report.THREADS_HEADING) == 1
    fresh = report.splice_threads([line for line in results if line not in results[4:9]], run)
    assert fresh.index(report.THREADS_HEADING) < fresh.index("## All groups")
