"""The report's interactive viewer in a real browser: headless Chromium loads report.html from disk, and this
script checks what a unit test cannot:

- every request the page makes is a file:// URL next to the report (anything else is blocked and counted);
- all panels are drawn (the share of non-black pixels of each panel's canvas, from the screenshot);
- a click in the first panel moves the cross in every panel to the same point in mm (NiiVue's crosshair of each
  instance, read back from the page), away from where it was.

It saves the screenshot of the viewer to documentation/images/report_viewer.png and prints the figures as JSON.
Without --report it builds one first: the phantom dataset, a tiny 2d model (fold 0, a few iterations: the
point is the viewer, not the model), predictions with --uncertainty of the two test scans, `autosr evaluate`
against their references, `autosr report --evaluation` (about a minute on a CPU).

Needs Chromium (`apt-get install chromium`) and Playwright's Python client driving it (`pip install playwright`;
its own browser download is not used: --chromium names the system's binary). WebGL runs on SwiftShader, the
CPU renderer, so no GPU is needed.

    python benchmarks/viewer_screenshot.py                      # build, check, save the picture
    python benchmarks/viewer_screenshot.py --report path/report.html --output /tmp/viewer.png
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPOSITORY / "documentation" / "images" / "report_viewer.png"


def build_report(root: Path) -> Path:
    from autosr.cli import main
    from autosr.dataset_conversion.phantom import PhantomSettings, make_phantom_dataset
    from autosr.formats.plans import Plans

    roots = {key: root / key for key in ("raw", "preprocessed", "results")}
    for folder in roots.values():
        folder.mkdir(parents=True)
    raw = make_phantom_dataset(roots["raw"], 999, "Phantom", PhantomSettings(num_train=6, num_test=2))
    flags = [f"--{key}={folder}" for key, folder in roots.items()]
    assert main(["plan", "999", "-c", "2d", "-np", "1", *flags]) == 0
    plans_path = roots["preprocessed"] / raw.name / "plans.json"
    plans = Plans.load(plans_path)
    plans.raw["configurations"]["2d"].update(patch_size=[32, 32], batch_size=4)
    plans.save(plans_path)
    train = ["train", "999", "2d", "0", "--epochs", "2", "--iters-per-epoch", "20", "--num-workers", "0"]
    assert main([*train, "--device", "cpu", *flags]) == 0
    predictions, evaluation = root / "pred", root / "eval"
    assert main(["predict", "-i", str(raw / "imagesTs"), "-o", str(predictions), "-d", "999", "-c", "2d", "-f", "0",
                 "--uncertainty", "--device", "cpu", "--num-workers", "0", *flags]) == 0  # fmt: skip
    assert main(["evaluate", str(raw / "targetsTs"), str(predictions), "--input-dir", str(raw / "imagesTs"),
                 "--resample", "--no-pictures", "-o", str(evaluation)]) == 0  # fmt: skip
    report = root / "report" / "report.html"
    assert main(["report", "999", "--evaluation", "test set", str(evaluation), "-o", str(report), *flags]) == 0
    return report


READ_STATE = """() => {
  const [key, viewers] = Object.entries(window.autosrViewers || {})[0] || [null, []];
  return {key, panels: viewers.map((nv) => ({
    volumes: nv.volumes.length,
    mm: Array.from(nv.frac2mm(nv.scene.crosshairPos)).slice(0, 3),
  }))};
}"""


def check(report: Path, output: Path, chromium: str) -> dict:
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    blocked: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1000})

        def route(r):
            requests.append(r.request.url)
            if r.request.url.startswith("file://"):
                r.continue_()
            else:
                blocked.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        start = time.perf_counter()
        page.goto(report.resolve().as_uri())
        page.wait_for_function(
            "() => { const v = Object.values(window.autosrViewers || {})[0];"
            " return v && v.length > 0 && v.every((nv) => nv.volumes.length === 1); }",
            timeout=120_000,
        )
        loaded_s = time.perf_counter() - start
        page.wait_for_timeout(500)
        before = page.evaluate(READ_STATE)
        viewer = page.locator(".autosr-viewer").first
        viewer.scroll_into_view_if_needed()
        canvases = page.locator(".autosr-viewer canvas")
        first = canvases.nth(0).bounding_box()
        # multiplanar layout: the click lands in the first (axial or coronal) tile, off its centre
        page.mouse.click(first["x"] + first["width"] * 0.18, first["y"] + first["height"] * 0.3)
        page.wait_for_timeout(800)
        after = page.evaluate(READ_STATE)
        # the DevTools capture: Playwright's own screenshot waits for web fonts, which never settle here
        cdp = page.context.new_cdp_session(page)
        area = viewer.bounding_box()
        scroll = page.evaluate("() => [window.scrollX, window.scrollY]")
        clip = {
            "x": area["x"] + scroll[0],
            "y": area["y"] + scroll[1],
            "width": area["width"],
            "height": area["height"],
        }
        shot = cdp.send(
            "Page.captureScreenshot", {"format": "png", "clip": {**clip, "scale": 1}, "captureBeyondViewport": True}
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(base64.b64decode(shot["data"]))
        boxes = [canvases.nth(i).bounding_box() for i in range(canvases.count())]
        browser.close()
    import matplotlib.image as mpimg

    pixels = mpimg.imread(output)[..., :3]
    drawn = []
    for box in boxes:  # each canvas inside the captured viewer
        x0, y0 = int(box["x"] - area["x"]), int(box["y"] - area["y"])
        tile = pixels[y0 : y0 + int(box["height"]), x0 : x0 + int(box["width"])]
        drawn.append(float((tile.max(axis=-1) > 0.05).mean()))
    moved = [not np.allclose(a["mm"], b["mm"]) for a, b in zip(after["panels"], before["panels"])]
    first_mm = np.array(after["panels"][0]["mm"])
    linked = [bool(np.allclose(np.array(p["mm"]), first_mm, atol=1e-3)) for p in after["panels"]]
    return {
        "report": str(report),
        "panels": len(after["panels"]),
        "load_seconds": round(loaded_s, 2),
        "requests": len(requests),
        "non_file_requests_blocked": blocked,
        "page_errors": errors,
        "drawn_fraction_per_panel": [round(d, 3) for d in drawn],
        "cross_moved_per_panel": moved,
        "cross_same_mm_in_all_panels": all(linked),
        "cross_mm_before": before["panels"][0]["mm"],
        "cross_mm_after": after["panels"][0]["mm"],
        "screenshot": str(output),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, help="an existing report.html with a viewer (default: build one)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    root = None
    if args.report is None:
        root = Path(tempfile.mkdtemp(prefix="autosr-viewer-"))
        args.report = build_report(root)
    result = check(args.report, args.output, args.chromium)
    print(json.dumps(result, indent=2))
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
    ok = (
        not result["non_file_requests_blocked"]
        and not result["page_errors"]
        and all(result["cross_moved_per_panel"])
        and result["cross_same_mm_in_all_panels"]
        and min(result["drawn_fraction_per_panel"]) > 0.05
    )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
