"""Bad input, crafted files and faults, one table line per case.

Every line of `CASES` prepares one broken situation on a shared, freshly built world (a raw phantom
dataset, a planned dataset, a model folder with inputs, predictions to evaluate), runs the real CLI and
checks three things:

- the exit code (2: refused before any work; 1: `predict` finished the other cases and lists this one);
- one line of the error output holds every expected fragment: the case or file, what is wrong, the fix;
- nothing was written, changed or deleted anywhere in the test's folder except the paths the line allows.

A new failure found by anyone is one more line. Faults that need a real process (kill -9 of a training
with data workers, resume after a kill, temporary files after a kill) are tests of their own below.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_predictor import make_model_folder, plans_dict

from autosr.cli import main
from autosr.paths import AutosrPaths

PHANTOM = "Dataset999_Phantom"


# --- the worlds a case starts from ----------------------------------------------------------------------


@dataclass
class World:
    """Folders of one test: `root` is the test's tmp folder; the others exist where the world built them."""

    root: Path
    paths: AutosrPaths
    dataset: Path  # raw phantom dataset (6 training, 2 test cases, masks)
    model: Path | None = None  # model folder (fold 0) for predict
    inputs: Path | None = None  # input folder for predict
    refs: Path | None = None  # references for evaluate
    preds: Path | None = None  # predictions for evaluate

    @property
    def preprocessed(self) -> Path:
        return self.paths.preprocessed / PHANTOM


def to_nii(dataset: Path) -> None:
    """Re-write every image of a raw dataset as uncompressed .nii (pixel types kept)."""
    for path in sorted(dataset.glob("*/*.nii.gz")):
        sitk.WriteImage(sitk.ReadImage(str(path)), str(path)[: -len(".gz")], useCompression=False)
        path.unlink()
    spec = json.loads((dataset / "dataset.json").read_text())
    spec["file_ending"] = ".nii"
    (dataset / "dataset.json").write_text(json.dumps(spec))


def build_raw(world: World) -> None:
    """The phantom dataset as it is (its fixture already placed it in the raw folder)."""


def build_raw_nii(world: World) -> None:
    to_nii(world.dataset)


def build_planned(world: World) -> None:
    """plans.json, fingerprint.json and dataset.json in the preprocessed folder (no arrays yet)."""
    from autosr.planning.api import plan_dataset

    plan_dataset(999, world.paths, configurations=["3d_fullres"], num_processes=1, preprocess=False, progress=False)


def build_planned_with_cases(world: World) -> None:
    """A planned dataset whose data folder lists the training cases as preprocessed (empty property files and
    tiny sound arrays): enough for `train` to get as far as its splits and model folder."""
    build_planned(world)
    plans = json.loads((world.preprocessed / "plans.json").read_text())
    data = world.preprocessed / plans["configurations"]["3d_fullres"]["data_identifier"]
    data.mkdir()
    for i in range(6):
        for key, dtype in (("input", np.float32), ("target", np.float32), ("mask", np.uint8)):
            np.save(data / f"phantom_{i:03d}_{key}.npy", np.zeros((1, 4, 4, 4), dtype))
        (data / f"phantom_{i:03d}.json").write_text("{}")


def build_model(world: World, file_ending: str = ".nii.gz") -> None:
    """A model folder with one fold of a small real network, and an input folder with the two test scans."""
    from autosr.network import build_network

    plans = plans_dict()
    plans["normalization"]["target"].update(export_mean=0.0, export_std=1.0)
    world.model = make_model_folder(
        world.root / "results", folds=(0,), builder=build_network, file_ending=file_ending, plans=plans
    )
    world.inputs = world.root / "in"
    world.inputs.mkdir()
    for path in sorted((world.dataset / "imagesTs").iterdir()):
        if file_ending == ".nii":
            sitk.WriteImage(sitk.ReadImage(str(path)), str(world.inputs / path.name[: -len(".gz")]), False)
        else:
            shutil.copyfile(path, world.inputs / path.name)


def build_model_nii(world: World) -> None:
    build_model(world, ".nii")


def build_predictions(world: World) -> None:
    """Two references and two 'predictions' (the references plus noise) to evaluate."""
    world.refs, world.preds = world.root / "refs", world.root / "preds"
    world.refs.mkdir()
    world.preds.mkdir()
    rng = np.random.default_rng(0)
    for case in ("phantom_000", "phantom_001"):
        source = world.dataset / "targetsTr" / f"{case}.nii.gz"
        shutil.copyfile(source, world.refs / source.name)
        image = sitk.ReadImage(str(source))
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        noisy = sitk.GetImageFromArray(array + rng.normal(0, 5, array.shape).astype(np.float32))
        noisy.CopyInformation(image)
        sitk.WriteImage(noisy, str(world.preds / source.name))


WORLDS: dict[str, Callable[[World], None]] = {
    "raw": build_raw,
    "raw_nii": build_raw_nii,
    "planned": build_planned,
    "planned_cases": build_planned_with_cases,
    "model": build_model,
    "model_nii": build_model_nii,
    "preds": build_predictions,
}


# --- small edits a case makes ---------------------------------------------------------------------------


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def set_key(path: Path, key: str, value) -> None:
    edit_json(path, lambda d: d.__setitem__(key, value))


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def put_nonfinite(path: Path, value: float = np.nan) -> None:
    """Write a few NaN (or Inf) voxels into a float image, keeping its geometry."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[1, 2, 3] = value
    array[4, 5, 6] = value
    changed = sitk.GetImageFromArray(array)
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(path))


def fill(path: Path, value_of: Callable[[np.ndarray], np.ndarray]) -> None:
    """Replace the voxels of an image by `value_of(voxels)`, keeping its geometry and pixel type."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    changed = sitk.GetImageFromArray(value_of(array).astype(array.dtype))
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(path))


def rename_case(dataset: Path, case: str, new: str) -> None:
    for folder, suffix in (("imagesTr", "_0000"), ("targetsTr", ""), ("masksTr", "")):
        (dataset / folder / f"{case}{suffix}.nii.gz").rename(dataset / folder / f"{new}{suffix}.nii.gz")


def copy_test_case_into_training(dataset: Path, case: str) -> None:
    for split_folder, suffix in (("images", "_0000"), ("targets", ""), ("masks", "")):
        source = dataset / f"{split_folder}Ts" / f"{case}{suffix}.nii.gz"
        shutil.copyfile(source, dataset / f"{split_folder}Tr" / source.name)
    set_key(dataset / "dataset.json", "numTraining", 7)


def read_only(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)


def edit_plans(world: World, change: Callable[[dict], None]) -> None:
    edit_json(world.preprocessed / "plans.json", change)


def rename_configuration(plans: dict, new: str) -> None:
    plans["configurations"][new] = plans["configurations"].pop("3d_fullres")


def verify(world: World) -> list[str]:
    return ["verify", "999"]


def predict(world: World, *extra: str) -> list[str]:
    return ["predict", "-i", str(world.inputs), "-o", str(world.root / "out"), "-m", str(world.model), "-f", "0"] + [
        "--no-tta",
        "--device",
        "cpu",
        *extra,
    ]


def evaluate(world: World) -> list[str]:
    return ["evaluate", str(world.refs), str(world.preds), "--no-pictures", "-np", "1", "-o", str(world.root / "ev")]


def train(world: World, configuration: str = "3d_fullres") -> list[str]:
    return ["train", "999", configuration, "0", "--device", "cpu", "--num-workers", "0"]


# setups: each edits the world and returns the CLI arguments


def verify_after(change: Callable[[World], None]) -> Callable[[World], list[str]]:
    def setup(world: World) -> list[str]:
        change(world)
        return verify(world)

    return setup


def dataset_json(key: str, value) -> Callable[[World], list[str]]:
    return verify_after(lambda w: set_key(w.dataset / "dataset.json", key, value))


def predict_after(change: Callable[[World], None], *extra: str) -> Callable[[World], list[str]]:
    def setup(world: World) -> list[str]:
        change(world)
        return predict(world, *extra)

    return setup


def image(split: str, case: str, ending: str = ".nii.gz") -> Callable[[World], Path]:
    folder, suffix = split.split("/")[0], "_0000" if split.startswith("images") else ""
    return lambda w: w.dataset / folder / f"{case}{suffix}{ending}"


def dangling_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent / "moved_away.nii.gz")


def newline_name(world: World) -> None:
    source = world.dataset / "imagesTr" / "phantom_001_0000.nii.gz"
    shutil.copyfile(source, world.dataset / "imagesTr" / "phantom\n_0000.nii.gz")


def space_name(world: World) -> None:
    rename_case(world.dataset, "phantom_001", "phantom 001")


def two_dimensional_input(world: World) -> None:
    path = world.inputs / "phantom_006_0000.nii.gz"
    volume = sitk.ReadImage(str(path))
    sitk.WriteImage(volume[:, :, volume.GetSize()[2] // 2], str(path))


def single_slice_input(world: World) -> None:
    path = world.inputs / "phantom_006_0000.nii.gz"
    volume = sitk.ReadImage(str(path))
    middle = volume.GetSize()[2] // 2
    sitk.WriteImage(volume[:, :, middle : middle + 1], str(path))


def predict_into_input(world: World) -> list[str]:
    argv = predict(world)
    argv[argv.index("-o") + 1] = str(world.inputs)
    return argv


def predict_input_inside_output(world: World) -> list[str]:
    inner = world.root / "out" / "scans"
    inner.parent.mkdir()
    world.inputs.rename(inner)
    world.inputs = inner
    return predict(world)


def predict_bids(change: Callable[[Path], None] = lambda bids: None, filter_text: str = "ses=3T,suffix=T1w"):
    """`predict --bids` over a two-subject, two-session dataset of the test scans, after `change(bids_dir)`."""

    def setup(world: World) -> list[str]:
        from bids_world import make_bids_dataset

        bids = make_bids_dataset(world.root / "bids", sorted(world.inputs.glob("*_0000.nii.gz")))
        change(bids)
        return ["predict", "--bids", str(bids), "--bids-filter", filter_text, "-m", str(world.model), "-f", "0",
                "--device", "cpu"]  # fmt: skip

    return setup


def predict_into_read_only(world: World) -> list[str]:
    read_only(world.root / "out")
    return predict(world)


def second_prediction_as_mha(world: World) -> list[str]:
    source = world.preds / "phantom_001.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(source)), str(world.preds / "phantom_001.mha"))
    return evaluate(world)


def nan_prediction(ending: str) -> Callable[[World], list[str]]:
    def setup(world: World) -> list[str]:
        path = world.preds / "phantom_001.nii.gz"
        if ending != ".nii.gz":
            sitk.WriteImage(sitk.ReadImage(str(path)), str(path)[: -len(".nii.gz")] + ending)
            path.unlink()
            path = world.preds / f"phantom_001{ending}"
        put_nonfinite(path)
        return evaluate(world)

    return setup


def convert_over_symlink(world: World) -> list[str]:
    elsewhere = world.root / "elsewhere" / "Dataset123_Linked"
    elsewhere.mkdir(parents=True)
    (elsewhere / "keep.txt").write_text("precious")
    (world.paths.raw / "Dataset123_Linked").symlink_to(elsewhere)
    return ["convert", "phantom", "123", "--name", "Linked", "--overwrite", "--num-train", "5", "--num-test", "0"]


def thick_slices(world: World, *options: str, source: Path | None = None) -> list[str]:
    """`convert thick-slices` of the phantom's targets (32^3 at 1 mm) into a new dataset."""
    source = source or world.dataset / "targetsTr"
    return ["convert", "thick-slices", str(source), "--id", "321", "--name", "Thick", *options]


def far_away_input(path: Path) -> None:
    """A tiny input half a metre from its target: no placement of headers or centres of mass overlaps them."""
    image = sitk.GetImageFromArray(np.random.default_rng(0).uniform(1, 100, (3, 3, 3)).astype(np.float32))
    image.SetOrigin((500.0, 500.0, 500.0))
    sitk.WriteImage(image, str(path))


def register_after(change: Callable[[World], None]) -> Callable[[World], list[str]]:
    def setup(world: World) -> list[str]:
        change(world)
        return ["register", "999", "-np", "1"]

    return setup


REGISTERED = ("raw/Dataset000_PhantomRegistered*",)  # the registered copy of the other cases (999 wraps to 000)


def hold_lock(world: World, lock_file: Path, what: str) -> None:
    """Hold `lock_file` from this process (another `autosr` at work) until the test ends."""
    from autosr.io.locks import HeldLock

    world.held_lock = HeldLock(lock_file, what)  # released when the world goes


def training_in_progress(world: World) -> None:
    fold_dir = world.paths.results / PHANTOM / "Trainer__autosrPlans__3d_fullres" / "fold_0"
    hold_lock(world, fold_dir / ".training.lock", f"fold 0 of {fold_dir.parent}")


def registration_in_progress(world: World) -> None:
    copy = world.paths.raw / "Dataset000_PhantomRegistered"
    (copy / "registration").mkdir(parents=True)
    (copy / "registration" / "source.json").write_text(json.dumps({"source": PHANTOM}))
    hold_lock(world, copy / "registration" / ".register.lock", f"the registered copy {copy}")


def train_after(change: Callable[[World], None], configuration: str = "3d_fullres") -> Callable[[World], list[str]]:
    def setup(world: World) -> list[str]:
        change(world)
        return train(world, configuration)

    return setup


# --- round three, part B: worlds and setups for inputs, formats and names --------------------------------


def build_preprocessed(world: World) -> None:
    """The phantom dataset planned (3d_fullres) and preprocessed, as `autosr plan` leaves it."""
    from autosr.planning.api import plan_dataset

    plan_dataset(999, world.paths, configurations=["3d_fullres"], num_processes=1, progress=False)


def build_raw_mhd(world: World) -> None:
    """The phantom dataset re-written as MetaImage: a .mhd header and its .raw voxel file per image."""
    for path in sorted(world.dataset.glob("*/*.nii.gz")):
        image = sitk.ReadImage(str(path))
        for key in image.GetMetaDataKeys():  # NIfTI header entries MetaImage cannot hold (ITK warns about each)
            image.EraseMetaData(key)
        sitk.WriteImage(image, str(path)[: -len(".nii.gz")] + ".mhd", useCompression=False)
        path.unlink()
    set_key(world.dataset / "dataset.json", "file_ending", ".mhd")


WORLDS.update(preprocessed=build_preprocessed, raw_mhd=build_raw_mhd)


def data_folder(world: World) -> Path:
    return world.preprocessed / "autosrPlans_3d_fullres"


def scale_voxels(path: Path, value: float, dtype: type) -> None:
    """Set a few voxels of an image to `value`, stored with pixel type `dtype` (geometry kept)."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(dtype)
    array[4:6, 5:7, 6:8] = value
    changed = sitk.GetImageFromArray(array)
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(path))


def scale_spacing(path: Path, factor: float) -> None:
    image = sitk.ReadImage(str(path))
    image.SetSpacing([s * factor for s in image.GetSpacing()])
    sitk.WriteImage(image, str(path))


def set_spacing(path: Path, spacing_mm: float) -> None:
    image = sitk.ReadImage(str(path))
    image.SetSpacing([spacing_mm] * 3)
    sitk.WriteImage(image, str(path))


def object_npy(path: Path) -> None:
    """An .npy of Python objects in place of a preprocessed array (loading it would unpickle)."""
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def deeply_nested_json(path: Path) -> None:
    path.write_text('{"name": "Phantom", "description": ' + "[" * 100_000 + "]" * 100_000 + "}")


def latin1_json(path: Path) -> None:
    text = path.read_text().replace('"Phantom"', '"Phantom \u00e9t\u00e9"', 1)
    path.write_bytes(text.encode("latin-1"))


def nii_input_in_nii_gz_folder(world: World) -> None:
    path = world.inputs / "phantom_006_0000.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(path)), str(path)[: -len(".gz")], useCompression=False)
    path.unlink()


def package(
    world: World, dataset_name: str = PHANTOM, model_folder: str = "Trainer__autosrPlans__2d", false_size: bool = False
) -> Path:
    """A small package in the layout of `autosr export-model` (manifest, model card, one file), as written by
    someone else: `dataset_name`/`model_folder` as given, or with a false size in the manifest's zip header."""
    import hashlib
    import struct
    import zipfile

    from autosr.formats.package_manifest import MANIFEST_NAME, Manifest

    data = b'{"plans_name": "autosrPlans"}\n'
    files = {"plans.json": {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}
    manifest = Manifest(dataset_name, model_folder, [0], "final", "0", "today", files).to_json()
    path = world.root / "model.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(MANIFEST_NAME, json.dumps(manifest))
        z.writestr("README.md", "a model")
        z.writestr(f"{dataset_name}/{model_folder}/plans.json", data)
    if false_size:  # the manifest member's uncompressed size, in its local and its central header, 100 bytes short
        content = bytearray(path.read_bytes())
        size = len(json.dumps(manifest)) - 100
        struct.pack_into("<I", content, content.find(b"PK\x03\x04") + 22, size)
        struct.pack_into("<I", content, content.find(b"PK\x01\x02") + 24, size)
        path.write_bytes(bytes(content))
    return path


def small_member_bomb(world: World) -> Path:
    """80 members of 1 MiB of zeros each (1 KiB compressed): each below the per-member ratio check."""
    import zipfile

    path = world.root / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i in range(80):
            z.writestr(f"{PHANTOM}/Trainer__autosrPlans__2d/zeros_{i:03d}.bin", bytes(1024**2))
    return path


def install(path: Path) -> list[str]:
    return ["install-model", str(path)]


def predict_package(world: World, path: Path) -> list[str]:
    return ["predict", "-i", str(world.inputs), "-o", str(world.root / "out"), "--model", str(path), "--device", "cpu"]


# --- the table ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    world: str
    setup: Callable[[World], list[str]]
    exit_code: int
    expect: tuple[str, ...]  # fragments that must appear together on one line of the error output
    writes: tuple[str, ...] = ()  # globs (relative to the test folder) the command may write
    unprivileged: bool = False  # run without root's power to ignore file permissions


# what every predict run writes besides predictions: the per-scan summary rows (failed scans get one too),
# the thresholds used, and the model's quality reference (measured once from the raw training cases)
# and each prediction's provenance sidecar (out/<case>.json)
RUN_RECORDS = (
    "out/qc", "out/qc/*", "out/qc_thresholds.json", "out/summary.csv", "out/*.json", "results/*/*/qc_reference.json"
)  # fmt: skip
PREDICTED = ("out", "out/phantom_007.nii.gz", *RUN_RECORDS)  # predict writes the good case and nothing else

CASES = [
    # --- one reader for every command: NaN/Inf, truncated files, broken links, 2D images
    Case("verify-truncated-nii-gz", "raw", verify_after(lambda w: truncate(image("imagesTr", "phantom_001")(w))),
         2, ("phantom_001 (Tr)", "phantom_001_0000.nii.gz", "truncated", "copy or export the file again")),
    Case("verify-truncated-nii", "raw_nii",
         verify_after(lambda w: truncate(image("targetsTr", "phantom_002", ".nii")(w))),
         2, ("phantom_002 (Tr)", "phantom_002.nii", "truncated", "copy or export the file again")),
    Case("plan-truncated-nii-gz", "raw", lambda w: (truncate(image("targetsTr", "phantom_003")(w)), ["plan", "999"])[1],
         2, ("phantom_003.nii.gz", "truncated", "copy or export the file again")),
    Case("verify-dangling-symlink", "raw", verify_after(lambda w: dangling_link(image("imagesTr", "phantom_004")(w))),
         2, ("phantom_004 (Tr)", "phantom_004_0000.nii.gz", "broken symbolic link", "moved_away.nii.gz")),
    Case("predict-nan-input", "model",
         predict_after(lambda w: put_nonfinite(w.inputs / "phantom_006_0000.nii.gz")),
         1, ("phantom_006", "phantom_006_0000.nii.gz", "NaN/Inf voxels", "re-save"), PREDICTED),
    Case("predict-inf-input", "model",
         predict_after(lambda w: put_nonfinite(w.inputs / "phantom_006_0000.nii.gz", np.inf)),
         1, ("phantom_006", "phantom_006_0000.nii.gz", "2 NaN/Inf voxels", "re-save"), PREDICTED),
    Case("predict-truncated-nii-gz", "model", predict_after(lambda w: truncate(w.inputs / "phantom_006_0000.nii.gz")),
         1, ("phantom_006", "phantom_006_0000.nii.gz", "truncated", "copy or export the file again"), PREDICTED),
    Case("predict-truncated-nii", "model_nii", predict_after(lambda w: truncate(w.inputs / "phantom_006_0000.nii")),
         1, ("phantom_006", "phantom_006_0000.nii", "truncated", "copy or export the file again"),
         ("out", "out/phantom_007.nii", *RUN_RECORDS)),
    Case("predict-2d-image", "model", predict_after(two_dimensional_input),
         1, ("phantom_006", "phantom_006_0000.nii.gz", "is a 2D image", "3D"), PREDICTED),
    Case("predict-hidden-input-file", "model",
         predict_after(lambda w: (w.inputs / "phantom_006_0000.nii.gz").rename(w.inputs / ".phantom_006_0000.nii.gz")),
         0, ("hidden file", "not predicted", ".phantom_006_0000.nii.gz", "rename"), PREDICTED),
    Case("predict-single-slice-3d", "model", predict_after(single_slice_input),
         1, ("phantom_006", "phantom_006_0000.nii.gz", "single slice", "whole 3D scan"), PREDICTED),
    Case("predict-dangling-symlink", "model",
         predict_after(lambda w: dangling_link(w.inputs / "phantom_006_0000.nii.gz")),
         1, ("phantom_006", "broken symbolic link", "moved_away.nii.gz"), PREDICTED),
    # --- the distilled student (autosr distill)
    Case("predict-distilled-before-distill", "model", lambda w: predict(w, "-f", "distilled"),
         2, ("fold_distilled", "checkpoint_final.pt", "autosr distill")),
    Case("predict-distilled-with-folds", "model", lambda w: predict(w, "-f", "0", "distilled"),
         2, ("-f 0 distilled", "predicts alone", "without the numbered folds")),
    # --- the dataset: hidden cases, leakage, dataset.json types, empty or constant images, names
    Case("verify-hidden-case-id", "raw", verify_after(lambda w: rename_case(w.dataset, "phantom_002", ".phantom_002")),
         2, (".phantom_002_0000.nii.gz", "starts with '.'", "rename it")),
    Case("verify-case-in-train-and-test", "raw", verify_after(lambda w: copy_test_case_into_training(w.dataset, "phantom_006")),
         2, ("case phantom_006", "imagesTr/", "imagesTs/", "remove it from one")),
    Case("dataset-json-modality-list", "raw", dataset_json("target_modality", ["CT"]),
         2, ("dataset.json", "'target_modality'", "a list", "fix dataset.json")),
    Case("dataset-json-normalization-list", "raw", dataset_json("normalization", ["zscore"]),
         2, ("dataset.json", "'normalization'", "a list", "fix dataset.json")),
    Case("dataset-json-normalization-value", "raw", dataset_json("normalization", {"0": ["zscore"]}),
         2, ("dataset.json", "'normalization'", "\"0\"", "fix dataset.json")),
    Case("dataset-json-name-number", "raw", dataset_json("name", 7),
         2, ("dataset.json", "'name'", "a number", "fix dataset.json")),
    Case("dataset-json-target-name-null", "raw", dataset_json("target_name", None),
         2, ("dataset.json", "'target_name'", "null", "fix dataset.json")),
    Case("dataset-json-channel-name-list", "raw", dataset_json("channel_names", {"0": ["T1w"]}),
         2, ("dataset.json", "'channel_names'", "\"0\"", "fix dataset.json")),
    Case("dataset-json-ending-list", "raw", dataset_json("file_ending", [".nii.gz"]),
         2, ("dataset.json", "'file_ending'", "a list", "fix dataset.json")),
    Case("dataset-json-ending-escape", "raw", dataset_json("file_ending", ".nii.gz/../../x"),
         2, ("dataset.json", "'file_ending'", "'/'", "fix dataset.json")),
    Case("dataset-json-num-training-text", "raw", dataset_json("numTraining", "6"),
         2, ("dataset.json", "'numTraining'", "a text", "fix dataset.json")),
    Case("dataset-json-num-training-bool", "raw", dataset_json("numTraining", True),
         2, ("dataset.json", "'numTraining'", "true", "fix dataset.json")),
    Case("dataset-json-description-list", "raw", dataset_json("description", ["a", "b"]),
         2, ("dataset.json", "'description'", "a list", "fix dataset.json")),
    Case("verify-all-zero-target", "raw",
         verify_after(lambda w: fill(image("targetsTr", "phantom_001")(w), np.zeros_like)),
         2, ("phantom_001 (Tr)", "targetsTr/phantom_001.nii.gz", "all zero", "remove the case")),
    Case("verify-constant-target", "raw",
         verify_after(lambda w: fill(image("targetsTr", "phantom_001")(w), lambda a: np.full_like(a, 7))),
         2, ("phantom_001 (Tr)", "targetsTr/phantom_001.nii.gz", "same value (7)", "remove the case")),
    Case("verify-target-constant-in-mask", "raw",
         verify_after(lambda w: fill(image("targetsTr", "phantom_001")(w), lambda a: np.where(a != 0, 100, 0))),
         2, ("phantom_001 (Tr)", "targetsTr/phantom_001.nii.gz", "same value (100) everywhere inside", "masksTr/phantom_001.nii.gz")),
    Case("verify-target-constant-in-foreground", "raw",
         verify_after(lambda w: (shutil.rmtree(w.dataset / "masksTr"), shutil.rmtree(w.dataset / "masksTs"),
                                 fill(image("targetsTr", "phantom_001")(w), lambda a: np.where(a > 0, 100, 0)))),
         2, ("phantom_001 (Tr)", "targetsTr/phantom_001.nii.gz", "same value (100) everywhere inside", "foreground")),
    Case("verify-all-zero-input", "raw",
         verify_after(lambda w: fill(image("imagesTr", "phantom_003")(w), np.zeros_like)),
         2, ("phantom_003 (Tr)", "imagesTr/phantom_003_0000.nii.gz", "all zero", "remove the case")),
    Case("verify-constant-input", "raw",
         verify_after(lambda w: fill(image("imagesTs", "phantom_007")(w), lambda a: np.full_like(a, 3))),
         2, ("phantom_007 (Ts)", "imagesTs/phantom_007_0000.nii.gz", "same value (3)", "remove the case")),
    Case("verify-newline-in-file-name", "raw", verify_after(newline_name),
         2, ("'phantom\\n_0000.nii.gz'", "line break", "rename")),
    Case("verify-space-in-case-id", "raw", verify_after(space_name),
         2, ("'phantom 001_0000.nii.gz'", "a space", "rename")),
    # --- predict: folders and options
    Case("predict-output-is-input", "model", predict_into_input, 2, ("-o", "is the input folder", "choose another -o")),
    # --- predict --bids: the dataset, the filter, the sidecars (nothing written before the error)
    Case("bids-no-dataset-description", "model", predict_bids(lambda b: (b / "dataset_description.json").unlink()),
         2, ("bids: no dataset_description.json", "not the root of a BIDS dataset", "give the folder that holds")),
    Case("bids-filter-matches-nothing", "model", predict_bids(filter_text="ses=1p5T,suffix=T1w"),
         2, ("no .nii.gz scan matches", "'session': '1p5T'", "sessions 3T, 7T", "change --bids-filter")),
    Case("bids-filter-syntax", "model", predict_bids(filter_text="ses=3T,T1w"),
         2, ("--bids-filter", "'T1w' is not entity=value", "'session=3T,suffix=T1w'")),
    Case("bids-filter-unknown-entity", "model", predict_bids(filter_text="sesion=3T"),
         2, ("--bids-filter: unknown BIDS entity sesion", "session")),
    Case("bids-broken-sidecar", "model",
         predict_bids(lambda b: (b / "sub-02/ses-3T/anat/sub-02_ses-3T_T1w.json").write_text("{\"Manufacturer\": ")),
         2, ("sub-02_ses-3T_T1w.json", "fix the JSON of this BIDS sidecar")),
    Case("bids-output-among-raw-scans", "model",
         lambda w: [*predict_bids()(w), "-o", str(w.root / "bids" / "predictions")],
         2, ("-o", "bids/predictions lies inside the BIDS dataset", "not under its derivatives/ folder", "derivatives/autosr")),
    Case("predict-input-inside-output", "model", predict_input_inside_output,
         2, ("-i", "inside the output folder", "choose another -o"), ("out",)),
    Case("predict-read-only-output", "model", predict_into_read_only,
         2, ("out", "is not writable", "choose another -o"), ("out",), unprivileged=True),
    Case("predict-tile-batch-size-negative", "model",
         lambda w: predict(w, "--tile-batch-size", "-1") + ["-m", str(w.root / "no_model_here")],
         2, ("--tile-batch-size", "at least 1", "-1")),
    # --- evaluate
    Case("evaluate-nan-prediction-nii-gz", "preds", nan_prediction(".nii.gz"),
         2, ("case phantom_001", "phantom_001.nii.gz", "NaN/Inf voxels", "re-save")),
    Case("evaluate-nan-prediction-mha", "preds", nan_prediction(".mha"),
         2, ("case phantom_001", "phantom_001.mha", "NaN/Inf voxels", "re-save")),
    Case("evaluate-two-predictions-one-case", "preds", second_prediction_as_mha,
         2, ("case phantom_001", "phantom_001.mha", "phantom_001.nii.gz", "keep one")),
    Case("evaluate-read-only-output", "preds", lambda w: (read_only(w.root / "ev"), evaluate(w))[1],
         2, ("ev: is not writable", "choose another -o"), unprivileged=True),
    Case("ensemble-output-is-an-input", "preds",
         lambda w: ["ensemble", "-i", str(w.refs), str(w.preds), "-o", str(w.preds), "--overwrite"],
         2, ("is one of the input folders", "choose another -o")),
    # --- register: a pair that cannot be registered is named, the other cases are registered
    Case("register-empty-input", "raw", register_after(lambda w: fill(image("imagesTr", "phantom_003")(w), np.zeros_like)),
         2, ("case phantom_003 (Tr)", "phantom_003_0000.nii.gz", "is empty", "fix or remove the case"), REGISTERED),
    Case("register-no-overlap", "raw", register_after(lambda w: far_away_input(image("imagesTr", "phantom_001")(w))),
         2, ("case phantom_001 (Tr)", "do not overlap", "fix or remove the case"), REGISTERED),
    Case("register-unsafe-case-id", "raw", register_after(lambda w: rename_case(w.dataset, "phantom_002", "phantom 002")),
         2, ("case phantom 002 (Tr)", "holds a space", "rename its files"), REGISTERED),
    # --- escapes from the working folders
    Case("plan-data-identifier-escape", "planned",
         lambda w: (edit_plans(w, lambda p: p["configurations"]["3d_fullres"].__setitem__("data_identifier", "../../x")),
                    ["plan", "999", "-np", "1"])[1],
         2, ("data_identifier", "'../../x'", "cannot be used as a file or folder name"),
         ("preprocessed/Dataset999_Phantom/dataset.json",)),
    Case("train-plans-name-escape", "planned_cases",
         train_after(lambda w: edit_plans(w, lambda p: p.__setitem__("plans_name", "x/../../../y"))),
         2, ("plans_name", "'x/../../../y'", "cannot be used as a file or folder name")),
    Case("train-configuration-escape", "planned_cases",
         train_after(lambda w: edit_plans(w, lambda p: rename_configuration(p, "../../../z")), "../../../z"),
         2, ("configuration", "'../../../z'", "cannot be used as a file or folder name")),
    Case("convert-overwrite-symlinked-dataset", "raw", convert_over_symlink,
         2, ("Dataset123_Linked", "symbolic link", "remove the link")),
    # --- read-only folders, checked before any work
    Case("train-read-only-results", "planned_cases", train_after(lambda w: read_only(w.paths.results)),
         2, ("results: is not writable", "AUTOSR_RESULTS"), unprivileged=True),
    Case("train-read-only-preprocessed", "planned_cases", train_after(lambda w: w.preprocessed.chmod(0o555)),
         2, ("Dataset999_Phantom", "is not writable", "splits.json"), ("results", "results/*"), unprivileged=True),
    # round three: one overwrite policy for every -o (autosr/io/outputs.py)
    Case("report-output-over-dataset-json", "raw",
         lambda w: ["report", "--predictions", "P", str(w.root), "-o", str(w.dataset / "dataset.json")],
         2, ("dataset.json", "not a HTML report written by autosr", "choose another -o", "--overwrite")),
    Case("export-model-over-a-file", "raw",
         lambda w: (w.root.joinpath("existing.zip").write_bytes(b"someone's archive"),
                    ["export-model", "-d", "999", "-c", "2d", "-o", str(w.root / "existing.zip")])[1],
         2, ("existing.zip", "not a model package written by autosr", "--overwrite")),
    Case("export-model-over-a-package", "raw",
         lambda w: ["export-model", "-d", "999", "-c", "2d", "-o", str(package(w))],
         2, ("model.zip", "an existing model package", "not replaced without asking", "--overwrite")),
    Case("predict-into-the-references", "model",
         lambda w: ["predict", "-i", str(w.inputs), "-o", str(w.dataset / "targetsTs"), "-m", str(w.model), "-f", "0",
                    "--no-tta", "--device", "cpu"],
         2, ("targetsTs", "2 image file(s) that autosr predict did not write", "choose another -o")),
    # round three, part A: writes, locks, resume
    Case("train-fold-in-use", "planned_cases", train_after(training_in_progress),
         2, ("fold 0 of", "Trainer__autosrPlans__3d_fullres is in use by another process", "pid", ".training.lock",
             "wait for it to finish or stop it")),
    Case("register-copy-in-use", "raw", register_after(registration_in_progress),
         2, ("the registered copy", "Dataset000_PhantomRegistered is in use by another process", ".register.lock",
             "wait for it to finish or stop it")),
    Case("predict-truncated-input-in-a-worker", "model",
         predict_after(lambda w: truncate(w.inputs / "phantom_007_0000.nii.gz"), "--num-workers", "1"),
         1, ("phantom_007", "phantom_007_0000.nii.gz", "truncated", "copy or export the file again"),
         ("out", "out/phantom_006.nii.gz", *RUN_RECORDS)),
    # round three, part B: inputs, names
    Case("plan-raw-target-replaced", "preprocessed",
         lambda w: (fill(image("targetsTr", "phantom_001")(w), lambda a: a * 2), ["plan", "999", "-np", "1"])[1],
         0, ("autosrPlans_3d_fullres/phantom_001", "raw files changed", "targetsTr/phantom_001.nii.gz",
             "preprocessing it again"),
         ("preprocessed/Dataset999_Phantom/dataset.json", "preprocessed/Dataset999_Phantom/fingerprint.json",
          "preprocessed/Dataset999_Phantom/autosrPlans_3d_fullres/phantom_001*")),
    Case("plan-redoes-truncated-npy", "preprocessed",
         lambda w: (truncate(data_folder(w) / "phantom_002_target.npy"), ["plan", "999", "-np", "1"])[1],
         0, ("autosrPlans_3d_fullres/phantom_002", "phantom_002_target.npy is truncated", "preprocessing it again"),
         ("preprocessed/Dataset999_Phantom/dataset.json", "preprocessed/Dataset999_Phantom/autosrPlans_3d_fullres/phantom_002*")),
    Case("train-truncated-npy", "planned_cases",
         train_after(lambda w: truncate(data_folder(w) / "phantom_002_input.npy")),
         2, ("phantom_002_input.npy is truncated", "run `autosr plan Dataset999_Phantom` again")),
    Case("train-object-npy", "planned_cases", train_after(lambda w: object_npy(data_folder(w) / "phantom_003_target.npy")),
         2, ("phantom_003_target.npy", "Python objects", "never unpickles", "run `autosr plan Dataset999_Phantom` again")),
    Case("install-model-small-member-bomb", "raw", lambda w: install(small_member_bomb(w)),
         2, ("bomb.zip", "80 members", "more than 100x", "zip bomb")),
    Case("install-model-false-size", "raw", lambda w: install(package(w, false_size=True)),
         2, ("model.zip", "member 'autosr_model.json' is damaged", "fetch or export it again")),
    Case("predict-model-false-size", "model", lambda w: predict_package(w, package(w, false_size=True)),
         2, ("model.zip", "member 'autosr_model.json' is damaged", "fetch or export it again")),
    Case("verify-float64-1e300", "raw",
         verify_after(lambda w: scale_voxels(image("targetsTr", "phantom_001")(w), 1e300, np.float64)),
         2, ("phantom_001 (Tr)", "targetsTr/phantom_001.nii.gz", "up to 1e+300", "beyond the 1e+12", "rescale it")),
    Case("plan-float32-3e38", "raw",
         lambda w: (scale_voxels(image("imagesTr", "phantom_003")(w), 3e38, np.float32), ["plan", "999"])[1],
         2, ("phantom_003 (Tr)", "imagesTr/phantom_003_0000.nii.gz", "up to 3e+38", "rescale it")),
    Case("verify-mhd-dataset", "raw_mhd", verify, 0, ("problems: none",)),
    Case("predict-nii-in-nii-gz-folder", "model", predict_after(nii_input_in_nii_gz_folder),
         0, ("phantom_006_0000.nii:", "not predicted", "file ending .nii, the model reads .nii.gz", "convert it"),
         PREDICTED),
    Case("dataset-json-not-utf8", "raw", verify_after(lambda w: latin1_json(w.dataset / "dataset.json")),
         2, ("dataset.json", "is not UTF-8 text", "byte 0xe9", "save it as UTF-8")),
    Case("dataset-json-nested-deep", "raw", verify_after(lambda w: deeply_nested_json(w.dataset / "dataset.json")),
         2, ("dataset.json", "nests lists or objects too deeply", "fix the file")),
    Case("verify-spacing-1e4x", "raw", verify_after(lambda w: scale_spacing(image("imagesTr", "phantom_001")(w), 1e4)),
         2, ("phantom_001 (Tr)", "imagesTr/phantom_001_0000.nii.gz", "outside the 0.001 to 100 mm", "set the spacing in mm")),
    Case("predict-spacing-1e4x", "model",
         predict_after(lambda w: scale_spacing(w.inputs / "phantom_006_0000.nii.gz", 1e4)),
         1, ("phantom_006", "more than autosr's budget", "spacing or size in the image's header", "check it"), PREDICTED),
    Case("verify-15-m-voxels", "raw", verify_after(lambda w: set_spacing(image("targetsTr", "phantom_002")(w), 15000.0)),
         2, ("phantom_002 (Tr)", "targetsTr/phantom_002.nii.gz", "15000 x 15000 x 15000 mm", "set the spacing in mm")),
    Case("install-model-nested-model-folder", "raw",
         lambda w: install(package(w, model_folder="ESC/Trainer__autosrPlans__2d")),
         2, ("autosr_model.json", "'ESC/Trainer__autosrPlans__2d'", "holds '/'", "refusing the package")),
    Case("install-model-dataset-name-newline", "raw", lambda w: install(package(w, dataset_name=PHANTOM + "\n")),
         2, ("autosr_model.json", "'Dataset999_Phantom\\n'", "DatasetXXX_Name", "refusing the package")),
    Case("verify-case-id-starts-with-dash", "raw",
         verify_after(lambda w: rename_case(w.dataset, "phantom_001", "--mask")),
         2, ("'--mask_0000.nii.gz'", "starts with '-'", "rename it")),
    Case("plan-dataset-folder-two-digit-id", "raw",
         lambda w: (w.dataset.rename(w.paths.raw / "Dataset50_Ph"), ["plan", str(w.paths.raw / "Dataset50_Ph")])[1],
         2, ("Dataset50_Ph", "not a dataset folder name", "three-digit id", "rename the folder")),
    Case("convert-id-taken", "raw",
         lambda w: ["convert", "phantom", "999", "--name", "Other", "--num-train", "5", "--num-test", "0"],
         2, ("dataset id 999 is taken by", "Dataset999_Phantom", "choose another id")),
    # --- convert thick-slices: every source is checked before anything is written
    Case("convert-thick-factor-one", "raw", lambda w: thick_slices(w, "--factor", "1"),
         2, ("--factor 1", "at least 2")),
    Case("convert-thick-gap-fills-slice", "raw", lambda w: thick_slices(w, "--factor", "4", "--gap", "4"),
         2, ("phantom_", "--gap 4 mm leaves no slice", "choose a smaller gap")),
    Case("convert-thick-too-few-slices", "raw", lambda w: thick_slices(w, "--factor", "12"),
         2, ("phantom_", "fewer than 3 thick slices", "choose a smaller factor")),
    Case("convert-thick-too-many-slabs", "raw", lambda w: thick_slices(w, "--slabs", "5"),
         2, ("phantom_", "cannot be cut into 5 slabs", "lower --slabs")),
    Case("convert-thick-no-reference-isotropic", "raw", lambda w: thick_slices(w, "--no-reference", "--factor", "3"),
         2, ("phantom_", "not --factor 3", "--no-reference needs thick-slice scans")),
    Case("convert-thick-all-cases-test", "raw", lambda w: thick_slices(w, "--num-test", "6"),
         2, ("--num-test 6", "leaves no training case", "lower --num-test")),
    Case("convert-thick-empty-source", "raw",
         lambda w: ((w.root / "empty").mkdir(), thick_slices(w, source=w.root / "empty"))[1],
         2, ("empty", "holds no image", "folder of high-resolution scans"), ("empty",)),
    Case("evaluate-reference-folder-twice", "preds",
         lambda w: ["evaluate", str(w.refs), str(w.refs), "--no-pictures", "-np", "1", "-o", str(w.root / "ev")],
         2, ("refs", "is the reference folder", "give the folder of the predictions")),
    Case("stress-test-max-cases-zero", "raw",
         lambda w: ["stress-test", "999", "-c", "2d", "-o", str(w.root / "st"), "--max-cases", "0"],
         2, ("--max-cases must be at least 1", "got 0")),
    Case("stress-test-no-targets", "raw",
         lambda w: ([shutil.rmtree(w.dataset / f) for f in ("targetsTr", "targetsTs")],
                    ["stress-test", "999", "-c", "2d", "-o", str(w.root / "st"), "--device", "cpu"])[1],
         2, ("Dataset999_Phantom", "no case with input and target", "put the held-out cases' targets into targetsTs/"),
         ("st", "raw/*/targets*")),
]  # fmt: skip


# --- running a case -------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file, folder and link under `root` with what identifies its content."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            key = str(path.relative_to(root))
            if stat.S_ISDIR(info.st_mode) and not path.is_symlink():
                found[key] = ("dir",)
            else:
                found[key] = (info.st_size, info.st_mtime_ns, stat.S_IFMT(info.st_mode))
    return found


def drop_permission_override() -> None:
    """In a child before exec: give up root's power to ignore file permissions (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH leave the bounding set, so the executed program never has them)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_cli(argv: list[str], unprivileged: bool, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    if not (unprivileged and os.geteuid() == 0):
        code = main(argv)
        captured = capsys.readouterr()
        return code, captured.err + captured.out
    if not sys.platform.startswith("linux"):
        pytest.skip("running as root: permissions can only be enforced by dropping capabilities on Linux")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "autosr.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=drop_permission_override,
        timeout=300,
    )
    return result.returncode, result.stderr + result.stdout


def restore_permissions(root: Path) -> None:
    for folder, dirs, _ in os.walk(root):
        for name in dirs:
            path = Path(folder) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, autosr_roots: AutosrPaths, phantom_dataset: Path, capsys) -> None:
    world = World(tmp_path, autosr_roots, phantom_dataset)
    WORLDS[case.world](world)
    try:
        argv = case.setup(world)
        before = snapshot(tmp_path)
        code, output = run_cli(argv, case.unprivileged, capsys)
        after = snapshot(tmp_path)
    finally:
        restore_permissions(tmp_path)
    assert "Traceback" not in output, output
    assert code == case.exit_code, output
    lines = output.splitlines()
    assert any(all(fragment in line for fragment in case.expect) for line in lines), (case.expect, output)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    unexpected = [k for k in changed if not any(fnmatch(k, pattern) for pattern in case.writes)]
    assert not unexpected, f"written, changed or deleted: {unexpected}"


# --- faults: killed processes ---------------------------------------------------------------------------


def start_training(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """A real `autosr train` process on the CPU (one thread), output to a pipe."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "autosr.cli", "train", *args, "--device", "cpu"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while not path.is_file():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.time() < deadline, f"no {path.name} within {seconds} s"
        time.sleep(0.05)


def process_state(pid: int) -> str | None:
    """The state letter of a process from /proc ('R', 'S', 'Z', ...), None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()[0]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat_line = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_data_workers_exit_when_training_is_killed(autosr_roots: AutosrPaths) -> None:
    """kill -9 of `autosr train` with data-loading workers: the workers notice and exit on their own."""
    from test_training import DATASET, make_tiny_dataset

    make_tiny_dataset(autosr_roots)
    latest = autosr_roots.results / DATASET / "Trainer__autosrPlans__3d_fullres" / "fold_0" / "checkpoint_latest.pt"
    process = start_training(
        ["901", "3d_fullres", "0", "--epochs", "40", "--iters-per-epoch", "3", "--num-workers", "2"]
    )
    try:
        wait_for(latest, process)
        workers = children_of(process.pid)
        assert len(workers) >= 3, workers  # 2 training workers and 1 validation worker
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    deadline = time.time() + 20
    while any(process_state(pid) not in (None, "Z") for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if process_state(pid) not in (None, "Z")]
    for pid in left:  # do not leave them behind for the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, f"worker processes {left} outlived the killed training"


def weights_and_curves(checkpoint: Path) -> tuple[dict, dict]:
    from autosr.checkpoint import load_checkpoint

    saved = load_checkpoint(checkpoint)
    return saved["network_weights"], saved["logger_state"]["curves"]


def test_resume_after_kill_is_bit_exact_on_cpu(autosr_roots: AutosrPaths, tmp_path: Path) -> None:
    """Train 12 epochs without a break; train the same fold again, kill it after a checkpoint with kill -9,
    continue it: final weights and every logged loss are identical bit for bit (CPU, no data workers)."""
    import torch
    from test_training import DATASET, make_tiny_dataset

    from autosr.training.run import FoldRequest, prepare_fold

    make_tiny_dataset(autosr_roots)
    schedule = dict(device="cpu", epochs=12, iters_per_epoch=2, num_workers=0)
    straight = prepare_fold(FoldRequest(901, "3d_fullres", 0, **schedule), autosr_roots)
    straight.runner.fit()

    interrupted = AutosrPaths.resolve(autosr_roots.raw, autosr_roots.preprocessed, tmp_path / "results_killed")
    fold_dir = interrupted.results / DATASET / "Trainer__autosrPlans__3d_fullres" / "fold_0"
    args = ["901", "3d_fullres", "0", "--epochs", "12", "--iters-per-epoch", "2", "--num-workers", "0"]
    process = start_training(args + ["--results", str(interrupted.results)])
    try:
        wait_for(fold_dir / "checkpoint_latest.pt", process)
        time.sleep(0.3)  # into the next epoch
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (fold_dir / "checkpoint_final.pt").exists()
    resumed = prepare_fold(FoldRequest(901, "3d_fullres", 0, continue_training=True, **schedule), interrupted)
    resumed_at = resumed.runner.current_epoch
    assert 1 <= resumed_at < 12
    resumed.runner.fit()

    expected_weights, expected_curves = weights_and_curves(straight.fold_dir / "checkpoint_final.pt")
    weights, curves = weights_and_curves(fold_dir / "checkpoint_final.pt")
    assert expected_weights.keys() == weights.keys()
    different = [name for name in weights if not torch.equal(weights[name], expected_weights[name])]
    assert not different, f"weights differ after resuming at epoch {resumed_at}: {different}"
    for name in ("train_loss", "val_loss"):
        assert curves[name] == expected_curves[name], name


# --- faults: temporary files left by a kill -------------------------------------------------------------

KILLED_WRITER = """
import sys, time
from pathlib import Path
from autosr.io.atomic import atomic_path

with atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half a checkpoint")
    print(tmp, flush=True)
    time.sleep(60)
"""


def test_stale_temporary_files_of_a_target_are_removed_by_its_next_write(tmp_path: Path) -> None:
    """A writer killed between writing its temporary file and renaming it leaves `.name.tmp-*`; the next
    write of the same file removes it. Temporaries of other files, and of a writer still running, stay."""
    from autosr.io.atomic import atomic_write_json, is_temporary

    target, other = tmp_path / "plans.json", tmp_path / "splits.json"

    def start_writer(path: Path) -> tuple[subprocess.Popen, Path]:
        writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        return writer, Path(writer.stdout.readline().strip())

    def kill(writer: subprocess.Popen) -> None:
        writer.send_signal(signal.SIGKILL)
        writer.wait()

    running, in_progress = start_writer(target)
    try:
        killed, stale = start_writer(target)  # a writer's own start leaves a running writer's file alone
        kill(killed)
        killed_other, other_stale = start_writer(other)
        kill(killed_other)
        assert all(p.is_file() and is_temporary(p) for p in (stale, other_stale, in_progress))
        atomic_write_json({"a": 1}, target)
        assert json.loads(target.read_text()) == {"a": 1}
        assert not stale.exists()
        assert other_stale.exists() and in_progress.exists()
    finally:
        kill(running)
    atomic_write_json({"a": 2}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["plans.json", other_stale.name])


# --- the NIfTI voxel check never refuses a good file ----------------------------------------------------


def nifti_bytes(array: np.ndarray, tmp_path: Path) -> bytes:
    path = tmp_path / "raw.nii"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=False)
    return path.read_bytes()


def gzip_members(data: bytes, cuts: int) -> bytes:
    """`data` as `cuts + 1` concatenated gzip members (as block-gzip tools write them): a valid .gz."""
    import gzip

    step = len(data) // (cuts + 1) + 1
    return b"".join(gzip.compress(data[i : i + step]) for i in range(0, len(data), step))


@pytest.mark.parametrize(
    "kind, truncated, nonfinite",
    [
        ("float32 one member", False, 0),
        ("float32 three members", False, 0),
        ("int16 one member (trailer only)", False, 0),
        ("int16 three members", False, 0),
        ("float32 with NaN", False, 3),
        ("float32 voxels cut, then compressed whole", True, 0),
        ("int16 voxels cut, then compressed whole", True, 0),
        ("float32 gzip trailer cut", True, 0),
    ],
)
def test_nifti_voxel_check(kind: str, truncated: bool, nonfinite: int, tmp_path: Path) -> None:
    import gzip

    from autosr.io.nifti_integrity import check_nifti_voxels

    rng = np.random.default_rng(0)
    array = rng.normal(100, 20, (7, 9, 11)).astype(np.float32)
    if "int16" in kind:
        array = array.astype(np.int16)
    if nonfinite:
        array.flat[[3, 50, 400]] = [np.nan, np.inf, -np.inf]
    data = nifti_bytes(array, tmp_path)
    if "voxels cut" in kind:
        data = data[: len(data) - 100]
    compressed = gzip_members(data, 2) if "three members" in kind else gzip.compress(data)
    if "trailer cut" in kind:
        compressed = compressed[:-3]
    path = tmp_path / "image.nii.gz"
    path.write_bytes(compressed)
    check = check_nifti_voxels(path)
    assert check.truncated == truncated and check.num_nonfinite == nonfinite
    if not truncated:
        assert check.bytes_found == check.bytes_expected == array.size * array.itemsize
