"""benchmarks/gpu_check.py runs end to end on a CPU (--small), so the one prepared GPU run cannot rot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_on_a_cpu_with_small_sizes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        module.main(["--device", "cpu", "--small", "--out", str(tmp_path), "--workers", "0"])
    finally:  # the script sets torch's threads for its timings; later tests compare results bit for bit
        torch.set_num_threads(threads)
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(results["parts"]) == {"plan", "training", "prediction", "compile"}
    training = results["parts"]["training"]["rows"]
    assert {r["trainer"] for r in training} >= {"Trainer", "AdversarialTrainer"}
    assert all(r["step_s"] > 0 and r["bare_step_s"] > 0 and r["ratio"] > 0 for r in training)
    prediction = results["parts"]["prediction"]
    rows = [r for r in prediction["rows"] if "predict" in r]
    assert len(rows) == 4 and all(r["autosr_s"] > 0 and r["bare_network_s"] > 0 for r in rows)
    assert any("compile" in s for s in results["parts"]["compile"]["skipped"])  # GPU-only parts say so
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| predict |" in table and "| trainer |" in table
