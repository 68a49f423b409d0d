"""`autosr provenance FILE`: which model (package, folds, settings) made a predicted file, from its sidecar.

    autosr provenance predictions/scan01.nii.gz
    autosr provenance bids/derivatives/autosr/sub-01/ses-3T/anat/sub-01_ses-3T_desc-autosr_T1w.nii.gz
    autosr provenance predictions/scan01.nii.gz --json      # the whole record

The record is the `<name>.json` written beside every prediction (autosr/inference/provenance.py).
"""

from __future__ import annotations

import argparse
import json

from autosr.inference.provenance import describe_provenance, read_provenance


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a predicted image (or its .json sidecar)")
    parser.add_argument("--json", action="store_true", help="print the whole record as JSON")


def run(args: argparse.Namespace) -> int:
    record = read_provenance(args.file)
    print(json.dumps(record, indent=2) if args.json else describe_provenance(record))
    return 0
