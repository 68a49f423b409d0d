"""An interactive viewer in the HTML report: input / prediction / reference / error / uncertainty of one case,
each in three planes, the cursor linked across them (a click in one panel moves the cross in all, in mm).

The viewer is NiiVue (BSD-2-Clause, the npm package @niivue/niivue, its single-file UMD build vendored in
`viewer_assets/` with its and its bundled packages' licences in LICENSES.txt). Nothing is fetched from a
network: the report gets a folder beside it, `<report>_files/`, holding the library, its licences and, per
case, one small script per volume that puts the volume's NIfTI bytes (base64) into the page. Scripts, not
`fetch`: a browser refuses `fetch` of a file:// URL, but loads a `<script src>` by relative path, so the report
works opened from disk, copied elsewhere with its folder, or served. The volumes are the files on disk as they
are (NIfTI read as bytes; another format converted to NIfTI first); the error map is prediction minus reference,
the prediction resampled (linearly) onto the reference grid when the two grids differ.

    section = viewer_section(report_path, "test_worst", {"input": ..., "prediction": ..., "reference": ...})
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from autosr.io import read_image, resample_to_geometry, write_image
from autosr.io.atomic import atomic_copy, atomic_write_text
from autosr.io.image_io import file_ending_of

ASSETS = Path(__file__).parent / "viewer_assets"
LIBRARY = "niivue.umd.js"
LICENCES = "LICENSES.txt"
PANELS = ("input", "prediction", "reference", "error", "uncertainty")
KEY_PATTERN = re.compile(r"[^A-Za-z0-9_.-]")

# defined once per page: one NiiVue instance per panel, all broadcasting their cursor to the others
SCRIPT = """
<script>
async function autosrViewer(key, panels) {
  const viewers = [];
  for (const panel of panels) {
    const nv = new niivue.Niivue({backColor: [0, 0, 0, 1], crosshairWidth: 1, crosshairColor: [1, 0.2, 0.2, 0.9],
                                  isResizeCanvas: true});
    await nv.attachTo("autosr-" + key + "-" + panel);
    nv.setSliceType(nv.sliceTypeMultiplanar);
    const text = atob(window.AUTOSR_VOLUMES[key + "/" + panel]);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    await nv.loadFromArrayBuffer(bytes.buffer, panel + ".nii.gz");
    if (panel === "error") {
      const volume = nv.volumes[0];
      const limit = Math.max(Math.abs(volume.robust_min), Math.abs(volume.robust_max)) || 1;
      volume.cal_min = -limit; volume.cal_max = limit;  // gray: zero error mid-gray, too bright / too dark
      nv.updateGLVolume();
    }
    viewers.push(nv);
  }
  for (const nv of viewers) nv.broadcastTo(viewers.filter((other) => other !== nv), {"2d": true, "3d": true});
  window.autosrViewers = window.autosrViewers || {};
  window.autosrViewers[key] = viewers;
}
</script>
"""
STYLE = """
.autosr-viewer{display:grid;grid-template-columns:1fr;gap:6px;margin:1em 0}.autosr-viewer figure{margin:0}
.autosr-panel{height:230px;position:relative;background:#000}
.autosr-panel canvas{position:absolute;top:0;left:0;width:100%;height:100%;display:block}
.autosr-viewer figcaption{font-size:90%;color:#333;margin:2px 0}
"""


def files_folder(report: Path) -> Path:
    """`<report stem>_files/` beside the report: the viewer's library and volumes."""
    return report.with_name(f"{report.stem}_files")


def _nifti_bytes(path: Path) -> bytes:
    if file_ending_of(path) in (".nii.gz", ".nii"):
        return path.read_bytes()
    array, geometry = read_image(path)
    with tempfile.TemporaryDirectory() as tmp:
        converted = Path(tmp) / "volume.nii.gz"
        write_image(array, geometry, converted)
        return converted.read_bytes()


def error_map(prediction: Path, reference: Path, destination: Path) -> Path:
    """Prediction minus reference on the reference grid (float32 NIfTI), written to `destination`."""
    predicted, predicted_geometry = read_image(prediction)
    expected, geometry = read_image(reference)
    if not predicted_geometry.same_grid(geometry):
        predicted = resample_to_geometry(predicted, predicted_geometry, geometry, order=1)
    write_image((predicted - expected).astype(np.float32), geometry, destination)
    return destination


def viewer_section(report: Path, key: str, volumes: dict[str, Path], title: str | None = None) -> str:
    """The HTML of one case's viewer (`volumes`: panel -> image file, any of `PANELS`; an `error` panel is made
    from prediction and reference when both are given), its files written under `files_folder(report)`."""
    key = KEY_PATTERN.sub("_", key)
    folder = files_folder(report)
    (folder / key).mkdir(parents=True, exist_ok=True)
    _ensure_library(folder)
    volumes = {panel: Path(p) for panel, p in volumes.items() if p is not None and Path(p).is_file()}
    if "prediction" in volumes and "reference" in volumes and "error" not in volumes:
        volumes["error"] = error_map(volumes["prediction"], volumes["reference"], folder / key / "error.nii.gz")
    panels = [p for p in PANELS if p in volumes]
    scripts = []
    for panel in panels:
        data = base64.b64encode(_nifti_bytes(volumes[panel])).decode("ascii")
        script = folder / key / f"{panel}.js"
        atomic_write_text(
            "window.AUTOSR_VOLUMES = window.AUTOSR_VOLUMES || {};\n"
            f'window.AUTOSR_VOLUMES[{json.dumps(key + "/" + panel)}] = "{data}";\n',
            script,
        )
        scripts.append(f'<script src="{html.escape(_relative(script, report))}"></script>')
    figures = "".join(
        f"<figure><figcaption>{panel}: {html.escape(volumes[panel].name)}</figcaption>"
        f'<div class="autosr-panel"><canvas id="autosr-{key}-{panel}"></canvas></div></figure>'
        for panel in panels
    )
    heading = f"<h3>{html.escape(title)}</h3>" if title else ""
    return (
        f"{heading}<p>Interactive viewer (click or drag in any panel: the cross moves in all of them; NiiVue, "
        f"offline, from <code>{html.escape(folder.name)}/</code>)</p>"
        f'<div class="autosr-viewer" data-key="{key}">{figures}</div>'
        + "".join(scripts)
        + f"<script>autosrViewer({json.dumps(key)}, {json.dumps(panels)});</script>"
    )


def page_head(report: Path) -> str:
    """What a page with viewers needs once in its <head>: the library (by relative path) and the viewer code."""
    library = _relative(files_folder(report) / LIBRARY, report)
    return f'<style>{STYLE}</style><script src="{html.escape(library)}"></script>{SCRIPT}'


def _ensure_library(folder: Path) -> None:
    for name in (LIBRARY, LICENCES):
        target = folder / name
        if not target.is_file() or target.stat().st_size != (ASSETS / name).stat().st_size:
            atomic_copy(ASSETS / name, target)


def _relative(path: Path, report: Path) -> str:
    return Path(os.path.relpath(path, report.parent)).as_posix()


def evaluated_case_volumes(summary: dict, case: str) -> dict[str, Path]:
    """The files of `case` in an evaluation's folders (an `autosr evaluate` summary.json names them): the input
    (channel 0), the prediction, the reference and, when the prediction folder has one, the uncertainty map."""
    from autosr.evaluation.folder_matching import images_in

    volumes: dict[str, Path] = {}
    for panel, key, subfolder, suffix in (
        ("input", "input_dir", "", "_0000"),
        ("prediction", "prediction_dir", "", ""),
        ("reference", "reference_dir", "", ""),
        ("uncertainty", "prediction_dir", "uncertainty", ""),
    ):
        if summary.get(key):
            found = images_in(Path(summary[key]) / subfolder, suffix).get(case)
            if found is not None:
                volumes[panel] = found
    return volumes
