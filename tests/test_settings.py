"""Options travel as settings objects declared once: the CLI's defaults are the classes' defaults, every
option is checked where it is declared, no API function takes more than 12 parameters, and no function
re-declares a default for an option that a settings class owns."""

from __future__ import annotations

import argparse
import ast
from dataclasses import fields, replace
from pathlib import Path

import pytest

from autosr.cli import build_parser
from autosr.commands import convert_command, evaluate_command, predict_command, qc_reference_command
from autosr.commands.model_arguments import model_source_from_args
from autosr.dataset_conversion.bids import BidsPairSelection
from autosr.dataset_conversion.phantom import PhantomSettings
from autosr.dataset_conversion.synthetic_brain import SyntheticBrainSettings
from autosr.errors import AutosrError
from autosr.evaluation.settings import EvaluationSettings
from autosr.inference.settings import ALL_FOLDS, FolderSettings, ModelSource, PredictionSettings
from autosr.training.data import PatchSampling

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_CLASSES = (
    PredictionSettings,
    FolderSettings,
    ModelSource,
    EvaluationSettings,
    PhantomSettings,
    SyntheticBrainSettings,
    BidsPairSelection,
    PatchSampling,
)
MAX_PARAMETERS = 12


def _parse(command: str, *argv: str) -> argparse.Namespace:
    return build_parser(command).parse_args([command, *argv])


def test_predict_flags_left_out_give_the_classes_defaults():
    args = _parse("predict", "-i", "in", "-o", "out", "-d", "1", "-c", "2d")
    assert predict_command.prediction_settings(args) == PredictionSettings()
    assert predict_command.folder_settings(args) == FolderSettings()
    assert model_source_from_args(args) == ModelSource(dataset="1", configuration="2d")


def test_predict_flags_reach_their_fields():
    args = _parse(
        "predict", "-i", "in", "-o", "out", "--model", "m.zip", "-f", "1", "3", "--checkpoint", "best",
        "--step-size", "0.25", "--tile-batch-size", "3", "--no-tta", "--keep-background", "--device", "cpu",
        "--seed", "7", "--uncertainty", "--num-parts", "3", "--part-id", "2", "--overwrite", "--num-workers", "0",
        "--on-input-grid",
    )  # fmt: skip
    assert predict_command.prediction_settings(args) == PredictionSettings(
        step_fraction=0.25, tile_batch_size=3, use_mirroring=False, background_fill=False, device="cpu", seed=7
    )
    assert predict_command.folder_settings(args) == FolderSettings(
        uncertainty=True, overwrite=True, num_parts=3, part_id=2, num_workers=0, on_input_grid=True
    )
    assert model_source_from_args(args) == ModelSource(package="m.zip", folds=(1, 3), checkpoint="best")


def test_qc_reference_and_evaluate_flags_left_out_give_the_classes_defaults():
    args = _parse("qc-reference", "-m", "folder")
    assert model_source_from_args(args) == ModelSource(model_dir="folder")
    assert (args.step_size, args.no_tta, args.device) == (PredictionSettings().step_fraction, False, None)
    args = _parse("evaluate", "ref", "pred")
    made = EvaluationSettings(args.modality, args.normalization, args.data_range, args.resample)
    assert made == EvaluationSettings()


def test_generator_flags_left_out_give_the_classes_defaults():
    brain = _parse("convert", "synthetic-brain", "5")
    defaults = SyntheticBrainSettings()
    assert (brain.num_train, brain.num_test, brain.target_spacing, brain.input_spacing, brain.slice_axis) == (
        defaults.num_train, defaults.num_test, defaults.target_spacing_mm, defaults.input_spacing_mm, defaults.slice_axis
    )  # fmt: skip
    assert (brain.contrast, brain.seed, brain.misalign) == (defaults.contrast, defaults.seed, defaults.misalign)
    phantom = _parse("convert", "phantom", "5")
    defaults = PhantomSettings()
    assert (phantom.num_train, phantom.num_test, (phantom.size,) * 3, phantom.modality, phantom.seed) == (
        defaults.num_train, defaults.num_test, defaults.shape_zyx, defaults.modality, defaults.seed
    )  # fmt: skip
    bids = _parse("convert", "bids", "root", "--id", "5", "--name", "B", "--suffix", "T1w")
    assert bids.datatype == BidsPairSelection("T1w", "a", "b").datatype
    assert convert_command and evaluate_command and qc_reference_command  # the modules the CLI runs


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PredictionSettings(step_fraction=0), "--step-size must be in (0, 1]"),
        (lambda: PredictionSettings(step_fraction=1.5), "--step-size must be in (0, 1]"),
        (lambda: PredictionSettings(tile_batch_size=0), "--tile-batch-size must be at least 1"),
        (lambda: PredictionSettings(num_samples=0), "--num-samples must be at least 1"),
        (lambda: PredictionSettings(sampling_steps=0), "--sampling-steps must be at least 1"),
        (lambda: FolderSettings(num_parts=0), "--num-parts must be at least 1"),
        (lambda: FolderSettings(num_parts=2, part_id=2), "--part-id must be in 0 .. 1"),
        (lambda: FolderSettings(num_workers=-1), "--num-workers must be 0 or more"),
        (lambda: ModelSource(), "name the model"),
        (lambda: ModelSource(dataset=1), "name the model"),
        (lambda: ModelSource(package="m.zip", dataset=1), "--model names the model by itself"),
        (lambda: ModelSource(model_dir="m", checkpoint="last"), "unknown checkpoint 'last'"),
        (lambda: EvaluationSettings(modality="PET"), "--modality must be one of MR, CT"),
        (lambda: EvaluationSettings(normalization="nope"), "unknown normalization 'nope'"),
        (lambda: EvaluationSettings(data_range=(5, 1)), "--data-range LO HI needs LO < HI"),
        (lambda: PhantomSettings(num_train=0), "--num-train must be at least 1"),
        (lambda: SyntheticBrainSettings(contrast="high"), "--contrast must be one of"),
        (lambda: SyntheticBrainSettings(slice_axis=3), "--slice-axis must be 0"),
        (lambda: SyntheticBrainSettings(misalign=(1.0, -1.0)), "--misalign takes two non-negative numbers"),
        (lambda: BidsPairSelection("T1w"), "input and target would be the same files"),
        (lambda: PatchSampling((8, 8), batch_size=0), "batch size must be at least 1"),
    ],
)
def test_each_option_is_checked_where_it_is_declared(make, message):
    with pytest.raises(AutosrError) as raised:
        make()
    assert message in str(raised.value)


def test_variants_are_replacements_and_defaults_resolve_in_one_place():
    fast = replace(PredictionSettings(), use_mirroring=False)
    assert fast.use_mirroring is False and fast.step_fraction == PredictionSettings().step_fraction
    with pytest.raises(AutosrError):
        replace(fast, step_fraction=2.0)  # a variant is checked like the original
    with ModelSource(model_dir="somewhere").opened() as opened:
        assert opened.folds == ALL_FOLDS and opened.checkpoint == "final" and opened.manifest is None
    assert FolderSettings(num_parts=4, part_id=1).part == "1/4"


def _functions():
    for path in sorted((ROOT / "autosr").rglob("*.py")):
        if "network" in path.relative_to(ROOT / "autosr").parts[:1]:
            continue  # network blocks mirror torch's own constructors
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(ROOT), node


def test_no_function_takes_more_than_twelve_parameters():
    too_many = []
    for path, node in _functions():
        a = node.args
        names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [x.arg for x in (a.vararg, a.kwarg) if x]
        names = [n for n in names if n not in ("self", "cls")]
        if len(names) > MAX_PARAMETERS:
            too_many.append(f"{path}:{node.lineno} {node.name} ({len(names)})")
    assert not too_many, "group the options into a settings object: " + ", ".join(too_many)


# the functions an option travels through, and the settings classes whose fields they must not take one by one
OPTION_PATHS = {
    ("autosr/inference/api.py", "predict"): (PredictionSettings, FolderSettings, ModelSource),
    ("autosr/inference/predictor.py", "__init__"): (PredictionSettings, FolderSettings),
    ("autosr/inference/predictor.py", "from_trained"): (PredictionSettings, FolderSettings),
    ("autosr/inference/predictor.py", "predict_folder"): (PredictionSettings, FolderSettings),
    ("autosr/inference/pipeline.py", "predict_folder"): (PredictionSettings, FolderSettings),
    ("autosr/inference/pipeline.py", "run_folder"): (PredictionSettings, FolderSettings),
    ("autosr/inference/qc_reference.py", "qc_reference"): (PredictionSettings,),
    ("autosr/evaluation/evaluate.py", "evaluate_folders"): (EvaluationSettings,),
    ("autosr/dataset_conversion/phantom.py", "make_phantom_dataset"): (PhantomSettings,),
    ("autosr/dataset_conversion/phantom.py", "make_phantom_case"): (PhantomSettings,),
    ("autosr/dataset_conversion/synthetic_brain.py", "make_synthetic_brain_dataset"): (SyntheticBrainSettings,),
    ("autosr/dataset_conversion/bids.py", "convert_bids"): (BidsPairSelection,),
    ("autosr/training/data.py", "__init__"): (PatchSampling,),
    ("autosr/training/data.py", "make_batch_iterator"): (PatchSampling,),
}


def test_the_functions_an_option_travels_through_take_the_object():
    """Each option is a field of one settings class; the functions it passes through take the object, so the
    option's default and its check are written once (in the class), never again as a parameter default."""
    seen, loose = set(), []
    for path, node in _functions():
        classes = OPTION_PATHS.get((str(path), node.name))
        if classes is None:
            continue
        seen.add((str(path), node.name))
        owned = {f.name for cls in classes for f in fields(cls)}
        a = node.args
        for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs):
            if arg.arg in owned:
                loose.append(f"{path}:{node.lineno} {node.name}({arg.arg})")
    assert seen == set(OPTION_PATHS), set(OPTION_PATHS) - seen
    assert not loose, "take the settings object instead: " + ", ".join(loose)
