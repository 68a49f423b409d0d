"""The planning stage as a notebook calls it: `plan_dataset` verifies, fingerprints, plans and preprocesses.

An existing plans.json is kept (it may hold the user's edits) unless `replan`; an existing fingerprint.json
is reused unless the training cases changed. Preprocessing skips cases already done with the same plans, so
re-running after an interruption or an edit does only the missing work. `autosr plan` (plan_command.py) is
the command-line layer over it.
"""

from __future__ import annotations

from autosr.errors import AutosrError
from autosr.formats.plans import CONFIGURATION_NAMES, Plans
from autosr.io.atomic import atomic_copy, atomic_write_json, read_json
from autosr.paths import AutosrPaths, ensure_writable_folder, path_under


def plans_table(plans: Plans) -> str:
    """One line per configuration: spacing, patch, batch, stages, features, estimated memory."""
    rows = [
        f"{'configuration':<12} {'spacing (mm)':<16} {'patch':<16} {'batch':>5} {'stages':>6} {'features':<22} {'est. GB':>7}"
    ]
    for name in plans.configuration_names:
        c = plans.configuration(name).raw
        net = c["network"]
        spacing = "x".join(f"{s:g}" for s in c["spacing_zyx"])
        patch = "x".join(str(p) for p in c["patch_size"])
        feats = f"{net['features_per_stage'][0]}..{net['features_per_stage'][-1]}"
        rows.append(
            f"{name:<12} {spacing:<16} {patch:<16} {c['batch_size']:>5} {len(net['strides']):>6} {feats:<22} "
            f"{c.get('estimated_vram_gb', float('nan')):>7}"
        )
    return "\n".join(rows)


def plan_dataset(
    dataset: str | int,
    paths: AutosrPaths,
    gpu_memory_gb: float = 8.0,
    configurations: list[str] | None = None,
    num_processes: int = 1,
    preprocess: bool = True,
    replan: bool = False,
    progress: bool = True,
) -> Plans:
    """Verify, fingerprint, plan and (unless `preprocess` is False) preprocess a raw dataset."""
    from autosr.dataset.verify import verify_dataset
    from autosr.formats.dataset_spec import load_dataset_spec
    from autosr.planning.fingerprint import extract_fingerprint
    from autosr.planning.planner import plan_experiment
    from autosr.preprocessing.preprocess import preprocess_dataset

    unknown = [c for c in configurations or [] if c not in CONFIGURATION_NAMES]
    if unknown:
        raise AutosrError(f"unknown configuration(s) {', '.join(unknown)} (valid: {', '.join(CONFIGURATION_NAMES)})")
    raw_dir = paths.raw_dataset(dataset)
    out_dir = path_under(paths.require("preprocessed"), raw_dir.name)
    verify_dataset(raw_dir, num_processes=num_processes).raise_if_problems()
    spec = load_dataset_spec(raw_dir)
    ensure_writable_folder(out_dir, "AUTOSR_PREPROCESSED")
    atomic_copy(raw_dir / "dataset.json", out_dir / "dataset.json")

    fingerprint_path = out_dir / "fingerprint.json"
    from autosr.formats.dataset_spec import discover_cases

    case_ids = sorted(c for c, f in discover_cases(raw_dir, spec, "Tr").items() if f.target is not None)
    fingerprint = read_json(fingerprint_path) if fingerprint_path.is_file() else None
    if fingerprint is None or sorted(c["case_id"] for c in fingerprint["cases"]) != case_ids:
        fingerprint = extract_fingerprint(raw_dir, num_processes=num_processes, progress=progress)
        atomic_write_json(fingerprint, fingerprint_path)
    for warning in fingerprint.get("warnings", []):
        print(f"warning: {warning}")
    if fingerprint.get("median_misalignment_mm") is not None:
        print(
            f"median misalignment of input and target (rigid registration): "
            f"{fingerprint['median_misalignment_mm']:.2f} mm"
        )

    plans_path = out_dir / "plans.json"
    if plans_path.is_file() and not replan:
        plans = Plans.load(plans_path)
        missing = [c for c in configurations or [] if c not in plans.configuration_names]
        if missing:
            raise AutosrError(
                f"{plans_path}: has no configuration {', '.join(missing)}; run with --replan to plan again "
                "(your edits to plans.json are then replaced)"
            )
        print(f"using the existing {plans_path} (--replan plans again)")
    else:
        plans = plan_experiment(fingerprint, spec, gpu_memory_gb=gpu_memory_gb, configurations=configurations)
        plans.save(plans_path)
    print(plans_table(plans))
    if preprocess:
        preprocess_dataset(
            raw_dir, out_dir, plans, configurations or plans.configuration_names, num_processes, progress
        )
    return plans
