"""``make bench`` cannot rot: its tiny mode runs every measurement path on generated images."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_benchmark_tiny_mode_runs_every_measurement_and_writes_the_table(tmp_path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--tiny", "--data", "none", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = output.read_text()
    for measurement in (
        "(1) feature extraction",
        "(1) full fine-tuning",
        "(2) sweep",
        "(3) feature pass",
        "(4) full",
        "(6) full fine-tuning step, recipe=timm",
        "(7) select probe stage",
    ):
        assert measurement in table
    assert "(5) one cache-hit job" in table and "without the two figures" in table
    assert (
        "| feature cache: plan, key, 3 entries loaded |" in table and "| **the whole job, in the process** |" in table
    )
    assert "cache hits per job: [0, 3]" in table, "the sweep's later jobs must hit the shared cache"
    assert "CPU:" in table and "torch:" in table
