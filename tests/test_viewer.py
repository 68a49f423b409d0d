"""The report's interactive viewer: the worst evaluated case's input, prediction, reference, error and uncertainty
as files beside the report, loaded by relative path, the library vendored (nothing from a network). The browser
side is checked by benchmarks/viewer_screenshot.py in headless Chromium (documentation/evaluation.md)."""

from __future__ import annotations

import base64
import re

import numpy as np

from autosr.cli import main
from autosr.evaluation.viewer import ASSETS, LIBRARY, LICENCES
from autosr.io import read_image


def test_report_embeds_a_linked_viewer_of_the_worst_case(trained_phantom, tmp_path):
    raw = trained_phantom["raw"] / "Dataset999_Phantom"
    flags = trained_phantom["flags"]
    predictions, evaluation = tmp_path / "pred", tmp_path / "eval"
    assert main(["predict", "-i", str(raw / "imagesTs"), "-o", str(predictions), "-d", "999", "-c", "2d", "-f", "0",
                 "--uncertainty", "--no-tta", "--device", "cpu", "--num-workers", "0", *flags]) == 0  # fmt: skip
    assert main(["evaluate", str(raw / "targetsTs"), str(predictions), "--input-dir", str(raw / "imagesTs"),
                 "--resample", "--no-pictures", "-o", str(evaluation)]) == 0  # fmt: skip
    report = tmp_path / "site" / "report.html"
    assert main(["report", "999", "--evaluation", "test set", str(evaluation), "-o", str(report), *flags]) == 0

    page = report.read_text()
    files = report.parent / "report_files"
    assert (files / LIBRARY).read_bytes() == (ASSETS / LIBRARY).read_bytes() and (files / LICENCES).is_file()
    sources = re.findall(r'<script src="([^"]+)"', page)
    assert sources[0] == "report_files/niivue.umd.js" and all(not s.startswith(("http", "/")) for s in sources)
    (key,) = set(re.findall(r'data-key="([^"]+)"', page))
    panels = ["input", "prediction", "reference", "error", "uncertainty"]
    assert [s for s in sources[1:]] == [f"report_files/{key}/{p}.js" for p in panels]
    assert f'autosrViewer("{key}", {panels!r})'.replace("'", '"') in page
    case = key.split("-", 1)[1]

    def volume(panel: str) -> bytes:
        text = (files / key / f"{panel}.js").read_text()
        return base64.b64decode(re.search(r'= "([A-Za-z0-9+/=]+)";', text).group(1))

    assert volume("prediction") == (predictions / f"{case}.nii.gz").read_bytes()  # the file on disk, as it is
    assert volume("uncertainty") == (predictions / "uncertainty" / f"{case}.nii.gz").read_bytes()
    assert volume("input") == (raw / "imagesTs" / f"{case}_0000.nii.gz").read_bytes()
    error, geometry = read_image(files / key / "error.nii.gz")
    reference, reference_geometry = read_image(raw / "targetsTs" / f"{case}.nii.gz")
    assert geometry == reference_geometry and error.shape == reference.shape and np.abs(error).max() > 0
