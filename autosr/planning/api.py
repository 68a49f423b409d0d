"""The planning stage as a notebook calls it: `plan_dataset` verifies, fingerprints, plans and preprocesses.

An existing plans.json is kept (it may hold the user's edits) unless `replan`; an existing fingerprint.json
is reused unless the training cases or their raw files changed (then it is measured again, and the user is
told that kept plans were made from the old one). Preprocessing skips cases already done with the same plans, so
re-running after an interruption or an edit does only the missing work. `autosr plan` (plan_command.py) is
the command-line layer over it.
"""

from __future__ import annotations

from autosr.errors import AutosrError
from autosr.formats.plans import CONFIGURATION_NAMES, Plans
from autosr.io.atomic import atomic_copy, atomic_write_json
from autosr.io.json_file import read_json_file
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
    from autosr.planning.fingerprint import extract_fingerprint, outdated_because
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

    cases = {c: f for c, f in discover_cases(raw_dir, spec, "Tr").items() if f.target is not None}
    fingerprint, why = None, None
    if fingerprint_path.is_file():
        try:
            fingerprint = read_json_file(fingerprint_path, "")
            why = outdated_because(fingerprint, cases)
        except AutosrError:
            why = "it cannot be read"
    remeasured = fingerprint is None or why is not None
    if remeasured:
        if why is not None:
            print(f"{fingerprint_path}: {why}; measuring the dataset again")
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
        if remeasured:
            print(
                f"note: {plans_path.name} was made from the fingerprint as it was before; pass --replan to plan from "
                "the new one (edits to plans.json are then replaced)"
            )
    else:
        plans = plan_experiment(fingerprint, spec, gpu_memory_gb=gpu_memory_gb, configurations=configurations)
        plans.save(plans_path)
    print(plans_table(plans))
    if preprocess:
        preprocess_dataset(
            raw_dir, out_dir, plans, configurations or plans.configuration_names, num_processes, progress
        )
    return plans
