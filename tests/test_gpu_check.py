"""benchmarks/gpu_check.py runs end to end on a CPU (--small), so the one prepared GPU run cannot rot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture
def torch_threads_restored():
    """The script sets torch's thread count for its own process; in the test process the later tests (which
    compare in-process predictions bit for bit with one-thread subprocesses) must get the old count back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_gpu_check_runs_on_a_cpu_with_small_sizes(tmp_path: Path, torch_threads_restored) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--device", "cpu", "--small", "--out", str(tmp_path), "--workers", "0"])
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
