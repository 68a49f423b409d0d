"""Predicting the scans of a BIDS dataset into a BIDS derivatives dataset (`autosr predict --bids`).

    from autosr.inference.bids_outputs import BidsQuery, predict_bids
    predict_bids("study/", ModelSource(package="brain7T.zip"), BidsQuery.parse("session=3T,suffix=T1w"))

The scans are found with pybids (the `bids` extra): by default every anatomical image (`datatype=anat`) in the
model's file ending; `--bids-filter` narrows them by BIDS entities (`sub`/`subject`, `ses`/`session`, `acq`,
`run`, `suffix`, ...). Derivatives, `sourcedata/`, `code/` and hidden files are never read. The output
(default `BIDS_DIR/derivatives/autosr/`) is a derivatives dataset that passes the BIDS validator:

    dataset_description.json   DatasetType "derivative", GeneratedBy (autosr version; the model's name and,
                               for a package, its SHA-256), DatasetLinks {"raw": the BIDS dataset}
    sub-01/ses-3T/anat/sub-01_ses-3T_desc-autosr_T1w.nii.gz    the prediction (source entities kept, desc-)
    sub-01/ses-3T/anat/sub-01_ses-3T_desc-autosr_T1w.json      Sources (bids:raw: URIs), SkullStripped, the
                               model, folds, trainer, sampling, seed, QC flag, expected error; the whole
                               provenance record (autosr/inference/provenance.py) under "autosr"
    sub-01/.../sub-01_ses-3T_desc-autosrStd_T1w.nii.gz (+.json) the uncertainty map (--uncertainty)
    summary.csv, qc_thresholds.json, README, .bidsignore       one row per scan as for a folder (.bidsignore
                               keeps autosr's own tables out of the validator's way)
    .autosr/                   the working folders (hidden: BIDS tools ignore them)

How: each scan of this run's part is linked into `.autosr/inputs-part<k>of<n>/<bids stem>_0000<ending>` and the
folder prediction runs on it (workers, QC flags, provenance sidecars: everything `autosr predict -i` does) into
`.autosr/predictions/`; then each prediction is *published*: the derivative sidecar first, the uncertainty
map, and the prediction last (a rename), so a present derivative image is complete with its sidecar. A scan
is done when its derivative image exists: a rerun skips it (`0 predicted, N already done`) and leaves it
untouched; a run killed between prediction and publishing publishes on the next run without predicting again.
`--num-parts/--part-id` split the sorted scans as for a folder.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autosr import __version__
from autosr.errors import AutosrError
from autosr.inference.folder import FolderSummary, output_file, select_part, uncertainty_file
from autosr.inference.provenance import sidecar_path
from autosr.inference.settings import FolderSettings, ModelSource, OpenedModel, PredictionSettings
from autosr.io.atomic import atomic_copy, atomic_write_json, atomic_write_text
from autosr.io.image_io import image_file_problem
from autosr.io.json_file import read_json_file
from autosr.paths import AutosrPaths

BIDS_VERSION = "1.10.0"
DERIVATIVE_NAME = "autosr"
WORK_FOLDER = ".autosr"
RAW_LINK = "raw"  # the name of the source dataset in bids:raw:... URIs (DatasetLinks)
UNCERTAINTY_DESC_SUFFIX = "Std"
IGNORED_BY_VALIDATOR = ("summary.csv", "qc_thresholds.json")
DEFAULT_FILTERS = {"datatype": "anat"}
# the short entity names of BIDS file names, as pybids spells them
ENTITY_NAMES = {
    "sub": "subject",
    "ses": "session",
    "acq": "acquisition",
    "ce": "ceagent",
    "rec": "reconstruction",
    "dir": "direction",
    "run": "run",
    "echo": "echo",
    "flip": "flip",
    "inv": "inv",
    "mt": "mt",
    "part": "part",
    "task": "task",
    "space": "space",
}
FILTER_SYNTAX = "entity=value[,entity=value...], e.g. 'session=3T,suffix=T1w' (or 'ses=3T,suffix=T1w')"
DESC_PATTERN = re.compile(r"[A-Za-z0-9]+")


@dataclass(frozen=True)
class BidsQuery:
    """Which scans of a BIDS dataset are predicted, and how the derivatives are named.

    `filters`: pybids entity -> value, applied on top of `DEFAULT_FILTERS` (an entity given replaces its
    default); `desc`: the `desc-` label of the predictions (letters and digits)."""

    filters: dict[str, str] = field(default_factory=dict)
    desc: str = DERIVATIVE_NAME

    def __post_init__(self) -> None:
        if not DESC_PATTERN.fullmatch(self.desc):
            raise AutosrError(f"the desc- label must be letters and digits only (a BIDS label), got {self.desc!r}")

    @classmethod
    def parse(cls, text: str | None, desc: str = DERIVATIVE_NAME) -> BidsQuery:
        """`--bids-filter` text: comma-separated `entity=value` pairs; short BIDS names are accepted."""
        filters: dict[str, str] = {}
        for item in (text or "").split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key or not value:
                raise AutosrError(
                    f"--bids-filter {text!r}: {item.strip()!r} is not entity=value; write {FILTER_SYNTAX}"
                )
            filters[ENTITY_NAMES.get(key, key)] = value
        return cls(filters, desc)

    def all_filters(self) -> dict[str, str]:
        return {**DEFAULT_FILTERS, **self.filters}


@dataclass
class BidsScan:
    """One scan to predict: its file, its path in the dataset, the case id of the working folder and the
    derivative files it becomes."""

    source: Path
    relpath: str
    case_id: str
    output: Path
    uncertainty: Path
    skull_stripped: bool


def check_bids_dataset(bids_dir: Path) -> dict[str, Any]:
    """The dataset's dataset_description.json; a missing folder or description is one message with the fix."""
    if not bids_dir.is_dir():
        raise AutosrError(f"--bids {bids_dir}: no such folder (the root of a BIDS dataset)")
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise AutosrError(
            f"--bids {bids_dir}: no dataset_description.json, so this is not the root of a BIDS dataset; give the "
            'folder that holds dataset_description.json (or create one: {"Name": "...", "BIDSVersion": "1.10.0"})'
        )
    data = read_json_file(description, 'fix the JSON (at least {"Name": "...", "BIDSVersion": "1.10.0"})')
    if not isinstance(data, dict):
        raise AutosrError(f'{description}: not a JSON object; write at least {{"Name": ..., "BIDSVersion": ...}}')
    return data


def find_scans(bids_dir: Path, query: BidsQuery, file_ending: str, output_dir: Path) -> list[BidsScan]:
    """The scans `query` selects, sorted by path, each with its derivative names; no match is an error that
    lists what the dataset holds."""
    try:
        from bids import BIDSLayout
        from bids.layout import BIDSLayoutIndexer
    except ImportError as e:
        raise AutosrError("predicting a BIDS dataset needs pybids: pip install 'autosr[bids]'") from e

    layout = BIDSLayout(str(bids_dir), validate=False, indexer=BIDSLayoutIndexer(validate=False, index_metadata=False))
    known = set(layout.get_entities())
    unknown = sorted(set(query.filters) - known)
    if unknown:
        raise AutosrError(
            f"--bids-filter: unknown BIDS entit{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; use one "
            f"of {', '.join(sorted(known | set(ENTITY_NAMES)))} ({FILTER_SYNTAX})"
        )
    files = layout.get(return_type="object", extension=[file_ending], **query.all_filters())
    if not files:
        present = layout.get(return_type="object", extension=[file_ending])
        suffixes = sorted({f.get_entities().get("suffix", "?") for f in present})
        sessions = sorted({str(s) for s in layout.get_sessions()})
        raise AutosrError(
            f"--bids {bids_dir}: no {file_ending} scan matches {query.all_filters()} ({len(present)} {file_ending} "
            f"file(s) in the dataset; suffixes {', '.join(suffixes) or 'none'}; sessions {', '.join(sessions) or 'none'}"
            "); change --bids-filter (e.g. 'suffix=T1w'), or convert the scans to the model's file ending"
        )
    scans = []
    for f in sorted(files, key=lambda f: f.relpath):
        source = Path(f.path)
        stem = source.name[: -len(file_ending)]
        sidecar = source.with_name(stem + ".json")
        metadata: Any = {}
        if sidecar.is_file():
            metadata = read_json_file(sidecar, "fix the JSON of this BIDS sidecar (or remove it) and run again")
        relative = Path(f.relpath).parent
        name = derivative_stem(stem, query.desc)
        scans.append(
            BidsScan(
                source=source,
                relpath=Path(f.relpath).as_posix(),
                case_id=stem,
                output=output_dir / relative / f"{name}{file_ending}",
                uncertainty=output_dir / relative / f"{derivative_stem(stem, query.desc + UNCERTAINTY_DESC_SUFFIX)}"
                f"{file_ending}",
                skull_stripped=bool(metadata.get("SkullStripped", False)) if isinstance(metadata, dict) else False,
            )
        )
    return scans


def check_output_place(bids_dir: Path, output_dir: Path) -> None:
    """Inside the dataset, derivatives belong under derivatives/: anywhere else the query would find the
    predictions as raw scans and predict them again (and the raw dataset would stop being valid BIDS)."""
    root, out = bids_dir.resolve(), output_dir.resolve()
    if out == root or (root in out.parents and root / "derivatives" not in out.parents):
        raise AutosrError(
            f"-o {output_dir} lies inside the BIDS dataset {bids_dir} but not under its derivatives/ folder: the "
            f"predictions would be read as raw scans; use -o {bids_dir / 'derivatives' / DERIVATIVE_NAME} (the "
            "default) or a folder outside the dataset"
        )


def derivative_stem(stem: str, desc: str) -> str:
    """`sub-01_ses-3T_T1w` -> `sub-01_ses-3T_desc-<desc>_T1w`: the source's entities, `desc-` last before the
    suffix (BIDS entity order), replacing a `desc-` the source had."""
    parts = stem.split("_")
    suffix, entities = parts[-1], [p for p in parts[:-1] if not p.startswith("desc-")]
    return "_".join([*entities, f"desc-{desc}", suffix])


def dataset_description(bids_dir: Path, output_dir: Path, source: dict[str, Any], identity: str) -> dict:
    raw_link = os.path.relpath(bids_dir.resolve(), output_dir.resolve())
    return {
        "Name": f"autosr predictions of {source.get('Name', bids_dir.name)}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "autosr", "Version": __version__, "Description": identity}],
        "SourceDatasets": [{"URL": f"bids:{RAW_LINK}:"}],
        "DatasetLinks": {RAW_LINK: raw_link.rstrip("/") + "/"},
    }


def model_identity(opened: OpenedModel) -> str:
    """One line naming the model of a run: its package and SHA-256, or its folder; folds and checkpoint."""
    model_dir = Path(opened.model_dir)
    text = f"model {model_dir.parent.name}/{model_dir.name}, folds {list(opened.folds)}, checkpoint {opened.checkpoint}"
    if opened.package is not None:
        return f"{text}, package {opened.package.name} sha256 {opened.package.sha256}"
    return f"{text}, folder {model_dir.resolve()}"


def check_one_model(output_dir: Path, description: dict[str, Any]) -> None:
    """One derivatives folder names one model: another model's folder is refused before anything is predicted."""
    path = output_dir / "dataset_description.json"
    if not path.is_file():
        return
    existing = read_json_file(path, "delete it to have it rewritten")
    generated = existing.get("GeneratedBy") if isinstance(existing, dict) else None
    before = generated[0].get("Description") if isinstance(generated, list) and generated else None
    now = description["GeneratedBy"][0]["Description"]
    if before != now:
        raise AutosrError(
            f"{path}: these derivatives were made by another model or autosr run ({before}), this run uses {now}; "
            "one derivatives folder must name one model: predict into another -o (e.g. derivatives/autosr-v2)"
        )


def derivative_sidecar(scan: BidsScan, record: dict[str, Any], uncertainty: bool) -> dict[str, Any]:
    """The BIDS sidecar of a prediction (or of its uncertainty map): BIDS keys, a summary, the whole record."""
    model, prediction, qc = record["model"], record["prediction"], record["qc"]
    error = record.get("expected_error")
    what = "per-voxel standard deviation over the ensemble members of" if uncertainty else "prediction of"
    return {
        "Description": f"autosr {what} {scan.relpath}",
        "Sources": [f"bids:{RAW_LINK}:{scan.relpath}"],
        "SkullStripped": scan.skull_stripped,  # the prediction covers what the input covers
        "Model": f"{model['dataset']}/{model['model_folder']}",
        "ModelPackage": model.get("package"),
        "ModelPackageSHA256": model.get("package_sha256"),
        "Trainer": model.get("trainer"),
        "Configuration": model.get("configuration"),
        "Folds": model.get("folds"),
        "Checkpoint": model.get("checkpoint"),
        "Sampling": {k: prediction[k] for k in ("generative", "sampling_steps", "num_samples") if k in prediction},
        "Seed": prediction.get("seed"),
        "QualityFlag": qc.get("flag"),
        "QualityFlagReason": qc.get("reason"),
        "ExpectedError": error["metrics"] if error else None,
        "ExpectedErrorOfThisScan": (record.get("calibrated_error") or {}).get("expected_error"),
        "autosr": record,
    }


def _link(source: Path, destination: Path) -> None:
    if destination.is_symlink() or destination.exists():
        if destination.resolve() == source.resolve():
            return
        destination.unlink()
    try:
        os.symlink(source.resolve(), destination)
    except OSError:  # no symlinks (some file systems): a checked copy
        atomic_copy(source, destination)


def publish(scan: BidsScan, staged: Path, staged_uncertainty: Path) -> None:
    """Move one staged prediction to its derivative names: sidecars first, the uncertainty map, the image last."""
    record = read_json_file(sidecar_path(staged), "delete the staged prediction and run again")
    record["prediction_file"] = scan.output.name  # the published names, not the working folder's
    record["uncertainty_file"] = scan.uncertainty.name if staged_uncertainty.is_file() else None
    scan.output.parent.mkdir(parents=True, exist_ok=True)
    if staged_uncertainty.is_file():
        atomic_write_json(derivative_sidecar(scan, record, uncertainty=True), sidecar_path(scan.uncertainty))
        os.replace(staged_uncertainty, scan.uncertainty)
    atomic_write_json(derivative_sidecar(scan, record, uncertainty=False), sidecar_path(scan.output))
    os.replace(staged, scan.output)
    sidecar_path(staged).unlink(missing_ok=True)


def is_published(scan: BidsScan) -> bool:
    return scan.output.is_file() and sidecar_path(scan.output).is_file() and image_file_problem(scan.output) is None


def predict_bids(
    bids_dir: str | os.PathLike,
    model: ModelSource,
    query: BidsQuery | None = None,
    output_dir: str | os.PathLike | None = None,
    prediction: PredictionSettings | None = None,
    folder: FolderSettings | None = None,
    paths: AutosrPaths | None = None,
) -> FolderSummary:
    """Predict the scans of the BIDS dataset `bids_dir` that `query` selects into a derivatives dataset
    (`output_dir`, default `bids_dir/derivatives/autosr`); see the module docstring."""
    from autosr.formats.dataset_spec import load_dataset_spec
    from autosr.formats.plans import Plans

    query = query or BidsQuery()
    folder = folder or FolderSettings()
    paths = paths or AutosrPaths.resolve()
    bids_dir = Path(bids_dir)
    source_description = check_bids_dataset(bids_dir)
    output_dir = Path(output_dir) if output_dir is not None else bids_dir / "derivatives" / DERIVATIVE_NAME
    check_output_place(bids_dir, output_dir)
    with model.opened(paths) as opened:  # once: a package is unpacked and hashed once per run
        spec = load_dataset_spec(opened.model_dir)
        if Plans.load(opened.model_dir / "plans.json").num_input_channels != 1:
            raise AutosrError(
                "--bids predicts one scan per case: this model takes several input channels; predict a folder "
                "of <case>_<XXXX> files with -i instead"
            )
        ending = spec.file_ending
        description = dataset_description(bids_dir, output_dir, source_description, model_identity(opened))
        check_one_model(output_dir, description)
        scans = find_scans(bids_dir, query, ending, output_dir)
        mine = set(select_part([s.case_id for s in scans], folder.num_parts, folder.part_id))
        scans = [s for s in scans if s.case_id in mine]
        staged_dir = output_dir / WORK_FOLDER / "predictions"
        done = [s for s in scans if not folder.overwrite and is_published(s)]
        todo = [s for s in scans if s not in done]
        summary = FolderSummary(skipped=[s.case_id for s in done])
        if todo:
            run = _predict_scans(opened, todo, output_dir / WORK_FOLDER, ending, prediction, folder, paths)
            summary.predicted, summary.failed, summary.flagged = run.predicted, run.failed, run.flagged
            summary.skipped += run.skipped  # predicted by a run stopped before publishing
            summary.timings = run.timings
    for scan in todo:
        staged = output_file(staged_dir, scan.case_id, ending)
        if staged.is_file():
            publish(scan, staged, uncertainty_file(staged_dir, scan.case_id, ending))
    _write_dataset_files(output_dir, description, staged_dir if todo else None)
    return summary


def _predict_scans(
    opened: OpenedModel,
    todo: list[BidsScan],
    work: Path,
    ending: str,
    prediction: PredictionSettings | None,
    folder: FolderSettings,
    paths: AutosrPaths,
) -> FolderSummary:
    """The folder prediction of `todo`, each scan linked into this part's working input folder, into
    `work/predictions`; each provenance record names the dataset's file, not the link (which the next run
    replaces)."""
    from autosr.inference.api import predict_opened

    inputs = work / f"inputs-part{folder.part_id}of{folder.num_parts}"
    if inputs.exists():
        shutil.rmtree(inputs)
    inputs.mkdir(parents=True)
    for scan in todo:
        _link(scan.source, inputs / f"{scan.case_id}_0000{ending}")
    sources = {scan.case_id: (str(scan.source),) for scan in todo}
    run_folder = replace(folder, num_parts=1, part_id=0, input_sources=sources)
    run = predict_opened(opened, inputs, work / "predictions", prediction, run_folder, paths)
    shutil.rmtree(inputs, ignore_errors=True)
    return run


def _write_dataset_files(output_dir: Path, description: dict[str, Any], staged_dir: Path | None) -> None:
    """dataset_description.json, README and .bidsignore when missing; summary.csv (with the QC limits used) from
    the working folder after a run that predicted (`staged_dir`): a run with nothing to do changes nothing."""
    from autosr.inference.scan_summary import SUMMARY_NAME, THRESHOLDS_NAME

    output_dir.mkdir(parents=True, exist_ok=True)
    if not (output_dir / "dataset_description.json").is_file():
        atomic_write_json(description, output_dir / "dataset_description.json")
    if not (output_dir / "README").is_file():
        atomic_write_text(
            "Predictions written by autosr predict --bids. Each image's JSON sidecar names the source scan "
            "(Sources), the model (package SHA-256), the folds and settings, the quality flag and the expected "
            "error; `autosr provenance FILE` prints it.\n",
            output_dir / "README",
        )
    ignore = "".join(f"{name}\n" for name in IGNORED_BY_VALIDATOR)
    if not (output_dir / ".bidsignore").is_file() or (output_dir / ".bidsignore").read_text() != ignore:
        atomic_write_text(ignore, output_dir / ".bidsignore")
    for name in (SUMMARY_NAME, THRESHOLDS_NAME):
        if staged_dir is not None and (staged_dir / name).is_file():
            atomic_copy(staged_dir / name, output_dir / name)
