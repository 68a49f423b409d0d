"""Faults of writing that need a real process: a full disk (a file-size limit, `ulimit -f`, set in a child
process: past it every write fails with EFBIG, as on a full disk), kill -9 at a chosen point, two processes
at once. Each test starts from the situation a user met (issue 28, part A) and checks the message, the
exit code, that nothing half-written keeps a final name, and that running the same command again finishes
the work.

Processes are synchronised through files they write (polled, with generous deadlines), never by sleeping
for a guessed time, so the tests hold on a loaded machine.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_bad_inputs import PHANTOM, World, build_model, predict
from test_training import DATASET, make_tiny_dataset

from autosr.checkpoint import load_checkpoint
from autosr.cli import main
from autosr.io import read_image
from autosr.io.atomic import is_temporary
from autosr.io.locks import read_holder
from autosr.paths import AutosrPaths

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ulimit, kill -9 and flock (Linux)")

FULL_DISK = ("could not be written completely", "the disk is full or a file-size limit is set", "run the same command")
TINY_MODEL = "Trainer__autosrPlans__3d_fullres"


def autosr(args: list[str], file_size_kib: int | None = None, **popen) -> subprocess.Popen:
    """`autosr ARGS` in a child process on one CPU thread; with `file_size_kib`, under `ulimit -f` (KiB)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUTOSR_NUM_WORKERS": "0"}
    command = [sys.executable, "-m", "autosr.cli", *args]
    if file_size_kib is not None:
        command = ["bash", "-c", f"ulimit -f {file_size_kib} && exec {shlex.join(command)}"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(process: subprocess.Popen, seconds: float = 600) -> tuple[int, str]:
    out, err = process.communicate(timeout=seconds)
    return process.returncode, err + out


def run_autosr(args: list[str], file_size_kib: int | None = None) -> tuple[int, str]:
    return finish(autosr(args, file_size_kib))


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, what: str, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the process ended before {what}: {process.stderr.read()}")
        assert time.time() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.05)


def kill_9(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def one_line_with(output: str, *fragments: str) -> None:
    assert "Traceback" not in output, output
    assert any(all(f in line for f in fragments) for line in output.splitlines()), (fragments, output)


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if is_temporary(p) or p.name.startswith(".autosr-")]


# --- predict: a full disk fails the cases it hits, and a rerun predicts them --------------------------------


def test_predict_past_a_file_size_limit_fails_the_cases_and_a_rerun_predicts_them(
    tmp_path: Path, autosr_roots: AutosrPaths, phantom_dataset: Path
) -> None:
    """Issue 28.1: under `ulimit -f 16` every prediction (about 100 KiB) is cut short. SimpleITK's writer
    says nothing; autosr checks the file before its rename: each case fails with one message, exit code 1,
    no prediction keeps its name, and the same command without the limit predicts both."""
    world = World(tmp_path, autosr_roots, phantom_dataset)
    build_model(world)
    args = predict(world, "--num-workers", "1")  # the first scan finishes in the main process, the other in a worker
    out = tmp_path / "out"
    code, output = run_autosr(args, file_size_kib=16)
    assert code == 1, output
    for case in ("phantom_006", "phantom_007"):
        one_line_with(output, case, f"{case}.nii.gz", *FULL_DISK)
        assert not (out / f"{case}.nii.gz").exists()
    assert not temporaries(out)
    code, output = run_autosr(args)
    assert code == 0, output
    assert "2 predicted" in output, output
    for case in ("phantom_006", "phantom_007"):
        read_image(out / f"{case}.nii.gz")  # whole: the reader refuses a truncated NIfTI


def test_predict_redoes_a_truncated_prediction_left_by_an_unchecked_write(
    tmp_path: Path, autosr_roots: AutosrPaths, phantom_dataset: Path, capsys
) -> None:
    """A prediction cut short under its final name (what versions without the check left) is not a finished
    case: the rerun predicts it again instead of skipping it."""
    world = World(tmp_path, autosr_roots, phantom_dataset)
    build_model(world)
    args = predict(world, "--num-workers", "0")
    assert main(args) == 0
    cut = tmp_path / "out" / "phantom_006.nii.gz"
    cut.write_bytes(cut.read_bytes()[:8192])
    capsys.readouterr()
    assert main(args) == 0
    assert "1 predicted" in capsys.readouterr().out
    read_image(cut)


# --- train: one writer per fold, a full disk during a checkpoint, the epoch line of a stopped run -----------


def train_args(fold: int = 0, *extra: str) -> list[str]:
    return ["train", "901", "3d_fullres", str(fold), "--device", "cpu", "--num-workers", "0", *extra]


def start_and_checkpoint(fold_dir: Path, args: list[str]) -> subprocess.Popen:
    """Start a training and return once it holds the fold's lock and wrote its first checkpoint."""
    process = autosr(args)
    latest = fold_dir / "checkpoint_latest.pt"
    wait_until(lambda: latest.is_file() and read_holder(fold_dir / ".training.lock").get("pid") == process.pid,
               process, "lock and first checkpoint")  # fmt: skip
    return process


def test_two_trainings_of_one_fold_the_second_is_refused_and_a_dead_holder_is_taken_over(
    autosr_roots: AutosrPaths,
) -> None:
    """Issue 28.5: while one `autosr train` runs a fold, a second one of the same fold stops at once with a
    message naming the first (exit 2) and writes nothing; after the first is killed (kill -9: its lock file
    stays), `--continue` takes the fold over and finishes it."""
    make_tiny_dataset(autosr_roots)
    fold_dir = autosr_roots.results / DATASET / TINY_MODEL / "fold_0"
    first = start_and_checkpoint(fold_dir, train_args(0, "--epochs", "200", "--iters-per-epoch", "2"))
    try:
        for second in (train_args(0), train_args(0, "--continue")):
            code, output = run_autosr(second)
            assert code == 2, output
            one_line_with(output, f"fold 0 of {fold_dir.parent}", "in use by another process", f"pid {first.pid}",
                          "train 901 3d_fullres 0", "wait for it to finish or stop it")  # fmt: skip
    finally:
        kill_9(first)
    assert (fold_dir / ".training.lock").is_file()  # left by the killed holder
    epoch = load_checkpoint(fold_dir / "checkpoint_latest.pt")["epoch"]
    code, output = run_autosr(train_args(0, "--continue", "--epochs", str(epoch + 1), "--iters-per-epoch", "2"))
    assert code == 0, output
    assert load_checkpoint(fold_dir / "checkpoint_final.pt")["epoch"] == epoch + 1
    assert not (fold_dir / ".training.lock").exists()


def test_train_full_disk_at_a_checkpoint_keeps_the_previous_one_and_continue_resumes(
    autosr_roots: AutosrPaths,
) -> None:
    """Issue 28.10: a checkpoint (about 150 KiB) written past `ulimit -f 64` is one message and a non-zero
    exit, not torch's RuntimeError; the checkpoint already there is untouched and `--continue` resumes."""
    make_tiny_dataset(autosr_roots)
    fold_dir = autosr_roots.results / DATASET / TINY_MODEL / "fold_0"
    kill_9(start_and_checkpoint(fold_dir, train_args(0, "--epochs", "200", "--iters-per-epoch", "2")))
    latest = fold_dir / "checkpoint_latest.pt"
    before = latest.read_bytes()
    epoch = load_checkpoint(latest)["epoch"]
    resume = train_args(0, "--continue", "--epochs", str(epoch + 1), "--iters-per-epoch", "2")
    left_by_the_kill = set(temporaries(fold_dir))
    code, output = run_autosr(resume, file_size_kib=64)
    assert code != 0, output
    one_line_with(output, "autosr train: error:", str(fold_dir / "checkpoint_"), *FULL_DISK)
    assert latest.read_bytes() == before
    assert not set(temporaries(fold_dir)) - left_by_the_kill
    code, output = run_autosr(resume)
    assert code == 0, output
    assert load_checkpoint(fold_dir / "checkpoint_final.pt")["epoch"] == epoch + 1


def test_ctrl_c_between_checkpoint_and_log_line_keeps_the_epoch_line(
    autosr_roots: AutosrPaths, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Issue 28.14: Ctrl-C after an epoch's checkpoint is saved but before its line reaches
    training_log.txt: `--continue` resumes after that epoch and the log holds its line exactly once."""
    from autosr.training.logger import TrainingLogger

    make_tiny_dataset(autosr_roots)
    plot = TrainingLogger.plot

    def interrupted_after_epoch_0(self, path):  # called between the checkpoint and the line
        if self.curves.get("train_loss") and len(self.curves["train_loss"]) == 1:
            signal.raise_signal(signal.SIGINT)
        plot(self, path)

    monkeypatch.setattr(TrainingLogger, "plot", interrupted_after_epoch_0)
    assert main(train_args(0, "--epochs", "2", "--iters-per-epoch", "1")) == 130
    monkeypatch.setattr(TrainingLogger, "plot", plot)
    log = autosr_roots.results / DATASET / TINY_MODEL / "fold_0" / "training_log.txt"
    assert load_checkpoint(log.parent / "checkpoint_latest.pt")["epoch"] == 1
    assert main(train_args(0, "--continue", "--epochs", "2", "--iters-per-epoch", "1")) == 0
    lines = log.read_text().splitlines()
    assert sum(": epoch 0: train_loss" in line for line in lines) == 1, lines
    assert sum(": epoch 1: train_loss" in line for line in lines) == 1, lines
    assert [i for i, line in enumerate(lines) if ": epoch 0:" in line][0] < next(
        i for i, line in enumerate(lines) if "resuming at epoch 1" in line
    )


# --- register: resumes after kill -9, and a full disk leaves no cut-short image ---------------------------


REGISTERED = "Dataset000_PhantomRegistered"  # 999 + 1 wraps to 000


def registered_copies(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir() if p.name != PHANTOM)


def test_register_resumes_after_kill_9(autosr_roots: AutosrPaths, phantom_dataset: Path) -> None:
    """Issue 28.4: `autosr register` killed after its first case; the same command continues into the same
    copy (the case done is not redone) and finishes it with its dataset.json."""
    copy = autosr_roots.raw / REGISTERED
    first_record = copy / "registration" / "Tr" / "phantom_000.json"
    process = autosr(["register", "999", "-np", "1"])
    try:
        wait_until(first_record.is_file, process, "first registered case")
    finally:
        kill_9(process)
    assert not (copy / "dataset.json").exists()
    stamp = first_record.stat().st_mtime_ns
    code, output = run_autosr(["register", "999", "-np", "1"])
    assert code == 0, output
    assert registered_copies(autosr_roots.raw) == [REGISTERED]
    assert json.loads((copy / "dataset.json").read_text())["numTraining"] == 6
    assert first_record.stat().st_mtime_ns == stamp
    assert "(done before)" in next(line for line in output.splitlines() if line.startswith("phantom_000"))
    assert not temporaries(copy)


def test_register_past_a_file_size_limit_stops_with_one_message_and_resumes(
    autosr_roots: AutosrPaths, phantom_dataset: Path
) -> None:
    """Issue 28.2: the registered inputs (about 33 KiB) cannot be written under `ulimit -f 16`: one message,
    no traceback, no image cut short under its name; without the limit the same command finishes the copy."""
    copy = autosr_roots.raw / REGISTERED
    code, output = run_autosr(["register", "999", "-np", "1"], file_size_kib=16)
    assert code == 2, output
    one_line_with(output, "autosr register: error:", str(copy / "imagesTr"), *FULL_DISK)
    for image in copy.rglob("*.nii.gz"):
        read_image(image)  # whatever got its name is whole
    assert not temporaries(copy)
    code, output = run_autosr(["register", "999", "-np", "1"])
    assert code == 0, output
    assert registered_copies(autosr_roots.raw) == [REGISTERED]
    assert len(list((copy / "imagesTr").glob("*.nii.gz"))) == 6


# --- temporaries of a killed run are removed by the next one ----------------------------------------------


HOLD_UNPACKED = """
import sys, time
from autosr.formats.package_reader import open_model_package
with open_model_package(sys.argv[1]) as unpacked:
    print(unpacked.model_dir, flush=True)
    time.sleep(600)
"""

HOLD_INSTALL_STAGING = """
import sys, time
from pathlib import Path
import autosr.formats.package_reader as reader
from autosr.paths import AutosrPaths

unpack = reader.unpack_package

def unpack_then_wait(package, destination):
    unpacked = unpack(package, destination)
    print(destination, flush=True)
    time.sleep(600)
    return unpacked

reader.unpack_package = unpack_then_wait
reader.install_model(sys.argv[1], AutosrPaths.resolve(results=Path(sys.argv[2])))
"""


def hold(script: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    """Run `script` until it prints the temporary folder it holds; (process, that folder)."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args], env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, text=True
    )
    return process, Path(process.stdout.readline().strip())


@pytest.fixture
def package(trained_phantom: dict, tmp_path: Path) -> Path:
    path = tmp_path / "model.zip"
    args = ["export-model", "-d", "999", "-c", "2d", "-f", "0", "-o", str(path), *trained_phantom["flags"]]
    assert main(args) == 0
    return path


def test_unpacked_model_of_a_killed_predict_is_removed_by_the_next(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 28.12: `predict --model x.zip` killed with kill -9 leaves `$TMPDIR/autosr-model-*`; the next run
    that unpacks a package removes it, and leaves alone the folder of a run still going."""
    import tempfile

    from autosr.formats.package_reader import open_model_package

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    running, in_use = hold(HOLD_UNPACKED, str(package), env={"TMPDIR": str(temp)})
    killed, left = hold(HOLD_UNPACKED, str(package), env={"TMPDIR": str(temp)})
    try:
        kill_9(killed)
        assert left.is_dir() and in_use.is_dir()
        with open_model_package(package) as unpacked:
            assert unpacked.model_dir.is_dir()
        assert not (temp / left.relative_to(temp).parts[0]).exists()
        assert in_use.is_dir()
    finally:
        kill_9(running)
    with open_model_package(package):
        pass
    assert list(temp.iterdir()) == []


def test_install_staging_of_a_killed_install_is_removed_by_the_next(package: Path, tmp_path: Path) -> None:
    """Issue 28.12: `install-model` killed while unpacking leaves `$AUTOSR_RESULTS/.autosr-install-*`; the next
    install removes it."""
    results = tmp_path / "installed"
    results.mkdir()
    killed, staging = hold(HOLD_INSTALL_STAGING, str(package), str(results))
    kill_9(killed)
    assert staging.is_dir() and staging.parent == results
    assert main(["install-model", str(package), "--results", str(results)]) == 0
    assert not staging.exists()
    assert [p.name for p in results.iterdir()] == [PHANTOM]


SLOW_SEGMENTER = 'cp "$0" "$1" && touch "$2" && exec sleep 600'


def test_segmentation_of_a_killed_evaluation_is_removed_by_the_next(tmp_path: Path, phantom_dataset: Path) -> None:
    """Issue 28.12: a run killed while its segmenter writes leaves `segmentations/target/.<case>.tmp-*`; the
    next run over that cache removes it (the segmenter's output is never taken for a result)."""
    source = phantom_dataset / "targetsTr" / "phantom_001.nii.gz"
    cache = tmp_path / "segmentations" / "target"
    started = tmp_path / "started"
    script = f"""
import sys
from pathlib import Path
from autosr.evaluation.segmenter_hook import Segmenter, SegmenterRun, run_segmenter_jobs
segmenter = Segmenter(("sh", "-c", {SLOW_SEGMENTER!r}, "{{input}}", "{{output}}", {str(started)!r}))
cache = Path({str(cache)!r})
run_segmenter_jobs(segmenter, [SegmenterRun("phantom_001", "target", Path({str(source)!r}),
                                            cache / "phantom_001.nii.gz", cache / "phantom_001.log")])
"""
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stderr=subprocess.PIPE)
    try:
        wait_until(started.is_file, process, "the segmenter's output")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # autosr and its segmenter, like kill -9 of a job
        process.wait()
    (left,) = [p for p in cache.iterdir() if is_temporary(p)]
    from autosr.evaluation.segmenter_hook import Segmenter, SegmenterRun, run_segmenter_jobs

    copy = Segmenter(("cp", "{input}", "{output}"))
    run = SegmenterRun("phantom_001", "target", source, cache / "phantom_001.nii.gz", cache / "phantom_001.log")
    assert run_segmenter_jobs(copy, [run]) == {}
    assert not left.exists()
    assert sorted(p.name for p in cache.iterdir()) == ["phantom_001.json", "phantom_001.log", "phantom_001.nii.gz"]
    shutil.rmtree(cache)
