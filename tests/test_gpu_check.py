"""``make gpu-check`` cannot rot between GPU sessions: its speed half runs every path here, on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_gpu_check_tiny_mode_runs_every_measurement_and_writes_the_table_and_json(tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            "--device",
            "cpu",
            "--tiny",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "gpu_check.md").read_text()
    for measurement in ("(a) full fine-tuning step", "(b) whole epoch", "(c) training throughput", "(d) sweep", "(e)",
                        "(f) full fine-tuning step, recipe=timm"):  # fmt: skip
        assert measurement in table
    assert "cache hits per job: [0, 3]" in table, "the sweep's later jobs must hit the shared cache"
    results = json.loads((tmp_path / "gpu_check.json").read_text())["results"]
    assert len(results) == 6 and all(r["value"] > 0 for r in results)


def test_gpu_check_refuses_cuda_where_there_is_none_and_a_missing_subset_with_a_sentence(tmp_path) -> None:
    script = str(ROOT / "benchmarks" / "gpu_check.py")
    missing = subprocess.run([sys.executable, script, "--device", "cpu", "--data", str(tmp_path / "none.npz")],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 2 and "make gpu-check-prepare" in missing.stderr
    assert "Traceback" not in missing.stderr
