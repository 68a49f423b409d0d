"""Model packages: export -> install -> predict gives the original model's outputs bit for bit; unsafe or
damaged archives are refused before anything is written."""

from __future__ import annotations

import json
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from autosr.cli import main
from autosr.errors import AutosrError
from autosr.formats import package_archive as archive
from autosr.formats.package_manifest import MANIFEST_NAME, MODEL_CARD_NAME
from autosr.formats.package_reader import inspect_package, install_model
from autosr.io import read_image
from autosr.paths import AutosrPaths

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_autosr_environment(monkeypatch):
    """Folders come from flags only here, whatever the developer's environment says."""
    for name in ("AUTOSR_RAW", "AUTOSR_PREPROCESSED", "AUTOSR_RESULTS"):
        monkeypatch.delenv(name, raising=False)


def _zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return path


@pytest.mark.parametrize(
    "members, links, message",
    [
        ({"../evil.txt": b"x"}, None, "contains '..'"),
        ({"Dataset999_Phantom/m/../../../evil.txt": b"x"}, None, "contains '..'"),
        ({"/etc/evil.txt": b"x"}, None, "absolute path"),
        ({"C:/evil.txt": b"x"}, None, "absolute path"),
        ({"a\\..\\evil.txt": b"x"}, None, "backslash"),
        ({"ok.txt": b"x"}, {"Dataset999_Phantom/link": "/etc/passwd"}, "symbolic link"),
        ({"ok.txt": b"x"}, {"inside_link": "ok.txt"}, "symbolic link"),
    ],
)
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, members, links, message):
    package = _zip(tmp_path / "evil.zip", members, links)
    destination = tmp_path / "out"
    with pytest.raises(AutosrError, match=message) as caught:
        archive.extract_checked(package, destination)
    assert "refusing to unpack" in str(caught.value) and str(package) in str(caught.value)
    assert not destination.exists() and not (tmp_path / "evil.txt").exists()


def test_zip_bombs_are_refused_by_ratio_and_total_size(tmp_path, monkeypatch):
    package = _zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(3 * 1024**2)})  # deflates about 1000x
    monkeypatch.setattr(archive, "MAX_COMPRESSION_RATIO", 50)
    with pytest.raises(AutosrError, match="zip bomb"):
        archive.extract_checked(package, tmp_path / "out")
    monkeypatch.setattr(archive, "MAX_COMPRESSION_RATIO", 10_000)
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 1024**2)
    with pytest.raises(AutosrError, match="unpacks to more than"):
        archive.extract_checked(package, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_refuses_an_unsafe_package_with_one_clear_message(tmp_path, capsys):
    package = _zip(tmp_path / "evil.zip", {MANIFEST_NAME: b"{}", "../../evil.txt": b"x"})
    results = tmp_path / "results"
    assert main(["install-model", str(package), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "member '../../evil.txt' contains '..'" in err and "Traceback" not in err
    assert not (tmp_path / "evil.txt").exists() and not any(results.rglob("*"))
    (tmp_path / "in").mkdir()
    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model", str(package)]) == 2
    assert "contains '..'" in capsys.readouterr().err


def _export(trained, tmp_path: Path, *extra: str) -> Path:
    package = tmp_path / "phantom_2d.zip"
    args = ["export-model", "-d", "999", "-c", "2d", "-f", "0", "1", "-o", str(package), *extra, *trained["flags"]]
    assert main(args) == 0
    return package


def _predict(tmp_path: Path, name: str, inputs: Path, *model: str) -> dict[str, tuple[np.ndarray, object]]:
    out = tmp_path / name
    args = ["predict", "-i", str(inputs), "-o", str(out), *model, "--device", "cpu", "--num-workers", "0"]
    assert main(args) == 0
    return {p.name: read_image(p) for p in sorted(out.glob("*.nii.gz"))}


def test_export_install_predict_is_bit_identical_to_the_model_folder(trained_phantom, tmp_path, capsys):
    package = _export(trained_phantom, tmp_path)
    with zipfile.ZipFile(package) as z:
        names = sorted(z.namelist())
        card = z.read(MODEL_CARD_NAME).decode()
        manifest = json.loads(z.read(MANIFEST_NAME))
    model = "Dataset999_Phantom/Trainer__autosrPlans__2d"
    # everything prediction needs, nothing else: no validation images, logs, pictures or other checkpoints
    assert set(names) == {
        MANIFEST_NAME,
        MODEL_CARD_NAME,
        *(
            f"{model}/{n}"
            for n in (
                "plans.json",
                "dataset.json",
                "fingerprint.json",
                "splits.json",
                "qc_reference.json",
                "training_provenance.json",
                "fold_0/checkpoint_final.pt",
                "fold_1/checkpoint_final.pt",
                "fold_0/validation/summary.json",
                "fold_1/validation/summary.json",
            )
        ),
    }
    assert manifest["folds"] == [0, 1] and manifest["checkpoint"] == "final"
    for text in ("autosr 0.1.0", "## Training data", "## Cross-validation", "## Intended use", "ssim", "spacing_z"):
        assert text in card
    unpacked = tmp_path / "look"
    archive.extract_checked(package, unpacked)
    reduced = torch.load(unpacked / model / "fold_0/checkpoint_final.pt", weights_only=True)
    assert "optimizer_state" not in reduced and "rng_state" not in reduced and "network_weights" in reduced

    fresh = tmp_path / "fresh_results"
    assert main(["install-model", str(package), "--results", str(fresh)]) == 0
    installed = fresh / model
    assert (installed / "fold_1/checkpoint_final.pt").is_file() and (installed / MODEL_CARD_NAME).is_file()

    inputs = trained_phantom["raw"] / "Dataset999_Phantom" / "imagesTs"
    original = _predict(
        tmp_path, "from_folder", inputs, "-d", "999", "-c", "2d", "-f", "0", "1", *trained_phantom["flags"]
    )
    from_install = _predict(
        tmp_path, "from_install", inputs, "-d", "999", "-c", "2d", "-f", "0", "1", f"--results={fresh}"
    )
    from_zip = _predict(tmp_path, "from_zip", inputs, "--model", str(package))
    assert list(original) == ["phantom_006.nii.gz", "phantom_007.nii.gz"]
    for name, (array, geometry) in original.items():
        for other in (from_install, from_zip):
            assert np.array_equal(other[name][0], array) and other[name][1] == geometry


def test_install_is_idempotent_and_refuses_a_different_model_without_force(trained_phantom, tmp_path, capsys):
    package = _export(trained_phantom, tmp_path)
    paths = AutosrPaths.resolve(results=tmp_path / "results")
    folder = install_model(package, paths)
    stamp = (folder / "plans.json").stat().st_mtime_ns
    assert install_model(package, paths) == folder  # the same model again: nothing changes
    assert (folder / "plans.json").stat().st_mtime_ns == stamp
    (folder / "fold_0" / "checkpoint_final.pt").write_bytes(b"another model")
    assert main(["install-model", str(package), f"--results={paths.results}"]) == 2
    assert "different model of the same name" in capsys.readouterr().err
    assert main(["install-model", str(package), f"--results={paths.results}", "--force"]) == 0
    torch.load(folder / "fold_0" / "checkpoint_final.pt", weights_only=True)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_a_damaged_or_padded_package_is_refused(trained_phantom, tmp_path):
    package = _export(trained_phantom, tmp_path)
    inspect_package(package)
    padded = tmp_path / "padded.zip"
    shutil.copyfile(package, padded)
    with zipfile.ZipFile(padded, "a") as z:
        z.writestr("Dataset999_Phantom/Trainer__autosrPlans__2d/extra.py", "print('hello')")
    with pytest.raises(AutosrError, match="does not list: .*extra.py"):
        inspect_package(padded)
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(damaged, "w") as z:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("plans.json"):
                data = data.replace(b'"2d"', b'"2D"', 1)
            z.writestr(info, data)
    with pytest.raises(AutosrError, match="checksum"):
        install_model(damaged, AutosrPaths.resolve(results=tmp_path / "results"))
    assert not (tmp_path / "results" / "Dataset999_Phantom").exists()
