"""The segmenter hook end to end: a real segmentation script (thresholds into 3 labels) written by the test,
run by `autosr evaluate` / `autosr find-best` on the phantom dataset, in folders with spaces, failing on
one case; caching, manual reference labels, the command parser and the built-in segmenter."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autosr.cli import main
from autosr.errors import AutosrError
from autosr.evaluation.evaluate import evaluate_folders
from autosr.evaluation.segmenter_hook import Segmenter, load_segmenter, parse_command
from autosr.evaluation.settings import EvaluationSettings
from autosr.evaluation.structure_evaluation import structure_options
from autosr.io import read_image, write_image

# thresholds of the phantom's intensities (fluid 150 / blob 350 -> 1, shell 600 -> 2, core 1000 -> 3); fails
# with exit code 3 on the prediction of one case; logs every call to the file given as 4th argument
SEGMENTER_SCRIPT = """
import sys
import numpy as np
import SimpleITK as sitk

source, output, case, log = sys.argv[1:5]
with open(log, "a") as f:
    f.write(f"{case}\\t{source}\\n")
if case == "phantom_003" and "predictions with space" in source:
    print("simulated crash of the segmenter on", case)
    sys.exit(3)
image = sitk.ReadImage(source)
a = sitk.GetArrayFromImage(image)
labels = np.where(a > 100, 1, 0) + (a > 475) + (a > 800)
out = sitk.GetImageFromArray(labels.astype(np.uint8))
out.CopyInformation(image)
sitk.WriteImage(out, output)
"""
CASES = ("phantom_001", "phantom_002", "phantom_003")
LUT = "# test table\n0 Unknown 0 0 0 0\n1 Fluid 10 10 10 0\n2 Shell 20 20 20 0\n3 Core 30 30 30 0\n"


def write_segmenter(folder: Path) -> tuple[str, Path]:
    """(command template, call log) for the threshold script inside `folder` (a path with a space)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "threshold seg.py"
    script.write_text(SEGMENTER_SCRIPT)
    log = folder / "calls.log"
    return f'"{sys.executable}" "{script}" {{input}} {{output}} {{case}} "{log}"', log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.is_file() else []


def noisy_copies(source: Path, destination: Path, noise: float) -> Path:
    rng = np.random.default_rng(0)
    destination.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.nii.gz")):
        array, geometry = read_image(path)
        write_image(array + rng.normal(0, noise, array.shape).astype(np.float32), geometry, destination / path.name)
    return destination


def test_cli_segmenter_end_to_end_with_a_failing_case_spaces_and_cache(
    phantom_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    command, log = write_segmenter(tmp_path / "my tools")
    references = tmp_path / "references with space"
    references.mkdir()
    for case in CASES:
        shutil.copy(phantom_dataset / "targetsTr" / f"{case}.nii.gz", references)
    predictions = noisy_copies(references, tmp_path / "predictions with space", noise=10.0)
    lut = tmp_path / "my tools" / "labels.txt"
    lut.write_text(LUT)
    out = tmp_path / "eval out"
    args = ["evaluate", str(references), str(predictions), "--mask-dir", str(phantom_dataset / "masksTr"),
            "--input-dir", str(phantom_dataset / "imagesTr"), "--segmenter", command, "--label-names", str(lut),
            "-o", str(out), "-np", "2", "--no-pictures"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    warnings = [line for line in printed.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "phantom_003" in warnings[0] and "exit code 3" in warnings[0]
    assert "simulated crash" in warnings[0] and "Shell" in printed
    assert len(calls(log)) == 9  # 3 cases x (prediction, reference, input)

    table = pd.read_csv(out / "structures.csv")
    assert set(table["source"]) == {"prediction", "input"} and set(table["name"]) == {"Fluid", "Shell", "Core"}
    predicted = table[table["source"] == "prediction"]
    assert sorted(predicted["case"].unique()) == ["phantom_001", "phantom_002"]
    assert table[table["source"] == "input"]["case"].nunique() == 3
    # Dice recomputed from the cached label maps with plain numpy
    reference, _ = read_image(out / "segmentations" / "target" / "phantom_001.nii.gz")
    labels, _ = read_image(out / "segmentations" / "prediction" / "phantom_001.nii.gz")
    row = predicted[(predicted["case"] == "phantom_001") & (predicted["label"] == 2)].iloc[0]
    a, b = reference == 2, labels == 2
    assert row["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert row["volume_mm3"] == pytest.approx(b.sum() * 1.0)  # 1 mm voxels

    summary = json.loads((out / "summary.json").read_text())["structure_agreement"]
    assert len(summary["failures"]) == 1 and summary["segmenter"]["name"].endswith("threshold seg.py")
    shell = summary["structures"]["2"]
    assert shell["name"] == "Shell" and shell["prediction"]["dice"]["n"] == 2 and shell["input"]["dice"]["n"] == 3
    assert shell["prediction"]["dice"]["mean"] > shell["input"]["dice"]["mean"]
    assert shell["prediction"]["icc2_1"] is not None and shell["prediction_minus_input"]["dice_cases"] == 2
    assert sorted(p.name for p in (out / "bland_altman").glob("*.png")) == ["1_Fluid.png", "2_Shell.png", "3_Core.png"]
    assert (out / "segmentations" / "input_on_reference" / "phantom_001.nii.gz").is_file()
    assert not list((out / "segmentations").rglob(".*tmp-*"))  # no temporary files left

    # run again: everything cached except the failed run, which is retried (and fails again)
    args[args.index("-np") + 1] = "1"  # from here on one at a time: the parallel path ran above
    assert main(args) == 0
    assert len(calls(log)) == 10 and "phantom_003" in calls(log)[-1]
    # a changed prediction is segmented again, the rest stays cached
    array, geometry = read_image(predictions / "phantom_001.nii.gz")
    write_image(array + 1.0, geometry, predictions / "phantom_001.nii.gz")
    assert main(args) == 0
    assert sorted(line.split("\t")[0] for line in calls(log)[10:]) == ["phantom_001", "phantom_003"]


def test_manual_reference_labels_shared_cache_and_seg_pred(phantom_dataset: Path, tmp_path: Path) -> None:
    command, log = write_segmenter(tmp_path / "tools")
    manual = tmp_path / "manual"
    for path in sorted((phantom_dataset / "targetsTr").glob("*.nii.gz")):
        target, geometry = read_image(path)
        write_image(((target > 475) & (target <= 800)) * 2, geometry, manual / path.name, dtype=np.uint8)
    predictions = noisy_copies(phantom_dataset / "targetsTr", tmp_path / "pred", noise=10.0)
    cache = tmp_path / "shared cache"
    options = structure_options(command, cache_dir=cache)
    common = dict(mask_dir=phantom_dataset / "masksTr", seg_ref_dir=manual, pictures=False, structures=options,
                  settings=EvaluationSettings(tissue=False, ms_ssim=False, backend="scipy"))  # fmt: skip
    _, summary = evaluate_folders(phantom_dataset / "targetsTr", predictions, out_dir=tmp_path / "a", **common)
    agreement = summary["structure_agreement"]
    assert list(agreement["structures"]) == ["2"]  # only what the manual maps delineate
    assert agreement["sources"] == ["prediction", "target"] and "given label maps" in agreement["reference"]
    assert agreement["structures"]["2"]["target"]["dice"]["mean"] > 0.8
    assert len(calls(log)) == 12
    _, again = evaluate_folders(phantom_dataset / "targetsTr", predictions, out_dir=tmp_path / "b", **common)
    assert len(calls(log)) == 18  # only the predictions (kept per output folder); the targets came from the cache
    assert (cache / "target" / "phantom_000.nii.gz").is_file()
    # label maps for both sides and no segmenter: the structure table still comes, from the given maps
    table, summary = evaluate_folders(
        phantom_dataset / "targetsTr", predictions, out_dir=tmp_path / "c", seg_ref_dir=manual, seg_pred_dir=manual,
        pictures=False, settings=EvaluationSettings(ms_ssim=False, backend="scipy"),
    )  # fmt: skip
    assert summary["structure_agreement"]["structures"]["2"]["prediction"]["dice"]["mean"] == 1.0
    assert (table["seg_dice_2"] == 1.0).all()
    with pytest.raises(AutosrError, match="go together without a segmenter"):
        evaluate_folders(phantom_dataset / "targetsTr", predictions, seg_ref_dir=manual)


def test_command_parsing_and_config_file(tmp_path: Path) -> None:
    segmenter = parse_command(f'"{sys.executable}" --flag "a b" {{input}} --out={{output}} {{case}}')
    argv = segmenter.argv(tmp_path / "in put;$(rm -rf x).nii.gz", "/o ut/x.nii.gz", "c 1")
    assert argv == [sys.executable, "--flag", "a b", str(tmp_path / "in put;$(rm -rf x).nii.gz"),
                    "--out=/o ut/x.nii.gz", "c 1"]  # fmt: skip
    for bad, message in (
        (f"{sys.executable} {{input}}", "lacks {output}"),
        (f"{sys.executable} {{input}} {{output}} {{subject}}", "unknown placeholder"),
        (f"{sys.executable} '{{input}} {{output}}", "quotes"),
        ("no-such-program-xyz {input} {output}", "neither on PATH nor a file"),
        ("", "empty"),
    ):
        with pytest.raises(AutosrError, match=message):
            parse_command(bad)
    masked = parse_command(f"{sys.executable} {{input}} {{output}} --mask {{mask}}")
    with pytest.raises(AutosrError, match="has no mask"):
        masked.argv("i", "o", "c1")
    (tmp_path / "luts").mkdir()
    (tmp_path / "luts" / "names.txt").write_text(LUT)
    config = tmp_path / "seg.json"
    config.write_text(json.dumps({"command": f"{sys.executable} {{input}} {{output}}", "name": "lab tool",
                                  "label_names": "luts/names.txt", "structures": [3, 1]}))  # fmt: skip
    segmenter, table, chosen = load_segmenter(str(config))
    assert segmenter.name == "lab tool" and table == tmp_path / "luts" / "names.txt" and chosen == (1, 3)
    options = structure_options(str(config), structures=[2])
    assert options.label_names[2] == "Shell" and options.structures == (2,)  # the flag wins over the file
    config.write_text(json.dumps({"command": f"{sys.executable} {{input}} {{output}}", "lables": "x"}))
    with pytest.raises(AutosrError, match="unknown key"):
        load_segmenter(str(config))
    assert isinstance(load_segmenter("builtin")[0], Segmenter)


def test_builtin_segmenter_through_the_hook(phantom_dataset: Path, tmp_path: Path) -> None:
    subset = tmp_path / "refs"
    subset.mkdir()
    for case in ("phantom_000", "phantom_001"):
        shutil.copy(phantom_dataset / "targetsTr" / f"{case}.nii.gz", subset)
    predictions = noisy_copies(subset, tmp_path / "pred", noise=20.0)
    _, summary = evaluate_folders(
        subset, predictions, mask_dir=phantom_dataset / "masksTr", input_dir=phantom_dataset / "imagesTr",
        out_dir=tmp_path / "out", pictures=False, settings=EvaluationSettings(ms_ssim=False, backend="scipy"),
        num_processes=2,
        structures=structure_options("builtin"),
    )  # fmt: skip
    agreement = summary["structure_agreement"]
    assert agreement["failures"] == [] and "--mask" in agreement["segmenter"]["command"]
    assert [e["name"] for e in agreement["structures"].values()] == ["csf", "gm", "wm"]
    assert all(e["prediction"]["dice"]["mean"] > 0.8 for e in agreement["structures"].values())


def test_find_best_and_report_show_structures(autosr_roots, phantom_dataset: Path, tmp_path: Path) -> None:
    from test_find_best import fake_model, write_splits

    command, log = write_segmenter(tmp_path / "tools")
    write_splits(autosr_roots)
    fake_model(autosr_roots, phantom_dataset, "3d_fullres", noise=10.0, seed=0)
    args = ["find-best", "999", "--no-pictures", "--segmenter", command, "--structures", "2", "3"]
    assert main(args) == 0
    results = autosr_roots.results / "Dataset999_Phantom"
    crossval = results / "Trainer__autosrPlans__3d_fullres" / "crossval_results"
    table = pd.read_csv(crossval / "structures.csv")
    assert set(table["label"]) == {2, 3} and set(table["source"]) == {"prediction", "input"}
    assert sorted(table["fold"].unique()) == [0, 1, 2, 3, 4]
    assert (results / "segmentations" / "target" / "phantom_000.nii.gz").is_file()  # shared by all candidates
    assert main(["report", "999", "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Structure agreement" in page and "ICC(2,1)" in page and page.count("data:image/png;base64,") == 2
