"""A small BIDS dataset built from phantom scans, for the tests of `predict --bids` (test_bids.py and the
bad-input table): importable without pybids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def make_bids_dataset(root: Path, scans: list[Path]) -> Path:
    """Two subjects x two sessions of T1w (scans[0], scans[1] as the 3T ones; the 7T ones copies), each with a raw
    sidecar, plus files that must be ignored: a T2w, a functional run, sourcedata/, another derivative."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "two sessions", "BIDSVersion": "1.10.0"}))
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    for number, scan in enumerate(scans[:2], start=1):
        for session in ("3T", "7T"):
            anat = root / f"sub-{number:02d}" / f"ses-{session}" / "anat"
            anat.mkdir(parents=True)
            stem = f"sub-{number:02d}_ses-{session}_T1w"
            shutil.copyfile(scan, anat / f"{stem}.nii.gz")
            (anat / f"{stem}.json").write_text(json.dumps({"MagneticFieldStrength": 3 if session == "3T" else 7}))
    extra_anat = root / "sub-01" / "ses-3T" / "anat"
    shutil.copyfile(scans[0], extra_anat / "sub-01_ses-3T_T2w.nii.gz")
    func = root / "sub-01" / "ses-3T" / "func"
    func.mkdir()
    shutil.copyfile(scans[0], func / "sub-01_ses-3T_task-rest_bold.nii.gz")
    for extra in (root / "sourcedata" / "sub-01", root / "derivatives" / "other" / "sub-01" / "anat"):
        extra.mkdir(parents=True)
        shutil.copyfile(scans[1], extra / "sub-01_ses-3T_T1w.nii.gz")
    return root
