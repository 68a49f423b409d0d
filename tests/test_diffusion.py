"""The diffusion trainer (conditional flow matching): the U-Net's timestep input, the flow and its loss, seamless
and reproducible whole-volume sampling through the Predictor, and end to end through the CLI (train, kill,
resume, predict with samples and uncertainty)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_predictor import plans_dict
from test_training import DATASET, NET_2D, NET_3D, kill_training_after_first_checkpoint, make_tiny_dataset
from torch import nn

from autosr.checkpoint import load_checkpoint
from autosr.cli import main
from autosr.errors import AutosrError
from autosr.formats.plans import Plans
from autosr.inference.predictor import Predictor
from autosr.inference.sampling import (
    DEFAULT_SAMPLING_STEPS,
    DEFAULT_SOURCE,
    SamplerSpec,
    draw_noise,
    flow_path,
    minimum_volume_shape,
    sample_seed,
)
from autosr.inference.settings import PredictionSettings
from autosr.io import read_image
from autosr.network import build_network
from autosr.network.time_embedding import TIME_EMBEDDING_FEATURES, sinusoidal_features
from autosr.paths import AutosrPaths
from autosr.training.diffusion.trainer import DiffusionTrainer, velocity_loss
from autosr.training.loss import OUTSIDE_MASK_WEIGHT
from autosr.training.run import FoldRequest, prepare_fold
from autosr.training.trainers import TRAINERS

MODEL = "DiffusionTrainer__autosrPlans__3d_fullres"
SAMPLER = SamplerSpec(steps=4).to_json()


# --- the network's timestep input ---------------------------------------------------------------------------


def test_sinusoidal_features() -> None:
    t = torch.tensor([0.0, 0.25, 1.0])
    features = sinusoidal_features(t, TIME_EMBEDDING_FEATURES)
    half = TIME_EMBEDDING_FEATURES // 2
    assert features.shape == (3, TIME_EMBEDDING_FEATURES)
    assert torch.all(features[0, :half] == 0) and torch.all(features[0, half:] == 1)  # sin 0, cos 0
    # the lowest frequency is 1 radian per unit of 1000 t: sin(250) at t = 0.25
    assert float(features[1, 0]) == pytest.approx(np.sin(250.0), abs=1e-4)
    assert not torch.allclose(features[1], features[2])


@pytest.mark.parametrize("plan", [NET_3D, NET_2D])
def test_time_embedding_starts_as_the_plain_unet_and_learns_t(plan: dict) -> None:
    plan = {**plan, "deep_supervision": False}
    torch.manual_seed(0)
    plain = build_network(plan, 2, 1).eval()
    timed = build_network({**plan, "time_embedding": True}, 2, 1).eval()
    missing, unexpected = timed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("time_embedding.", "modulations.")) for k in missing)
    assert not any("time" in k or "modulation" in k for k in plain.state_dict())  # plain plans unchanged
    n_stages = len(plan["features_per_stage"])
    assert len(timed.modulations) == 2 * n_stages - 1  # every encoder and decoder stage
    x = torch.randn(3, 2, *([16] * plan["dims"]))
    with torch.no_grad():
        expected = plain(x)
        assert torch.allclose(timed(x, 0.3), expected, atol=1e-6)  # zero-initialized modulation
        for module in timed.modulations:
            nn.init.normal_(module.linear.weight, std=0.1)
        early, late = timed(x, 0.1), timed(x, torch.full((3,), 0.9))
        assert early.shape == expected.shape and not torch.allclose(early, late)
        per_item = timed(x, torch.tensor([0.1, 0.9, 0.1]))  # one time per batch item
        assert torch.allclose(per_item[0], early[0], atol=1e-5) and torch.allclose(per_item[1], late[1], atol=1e-5)
    with pytest.raises(ValueError, match="call it as network"):
        timed(x)
    with pytest.raises(ValueError, match="no time embedding"):
        plain(x, 0.5)
    with pytest.raises(ValueError, match="one per batch item"):
        timed(x, torch.zeros(2))


# --- the flow and its loss ----------------------------------------------------------------------------------


def test_flow_path_and_velocity_loss() -> None:
    noise, goal = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    start, velocity = flow_path(noise, goal, torch.zeros(2, 1, 1, 1))
    end, _ = flow_path(noise, goal, torch.ones(2, 1, 1, 1))
    assert torch.equal(start, noise) and torch.allclose(end, goal) and torch.equal(velocity, goal - noise)
    middle, _ = flow_path(noise, goal, torch.tensor([0.25, 0.5]).view(2, 1, 1, 1))
    assert torch.allclose(middle[0], 0.75 * noise[0] + 0.25 * goal[0])
    # an independent weighted mean of squared errors: weight 1 inside the mask, OUTSIDE_MASK_WEIGHT outside
    prediction = torch.randn(2, 1, 4, 4)
    mask = (torch.rand(2, 1, 4, 4) > 0.5).float()
    p, v, m = prediction.numpy().ravel(), velocity.numpy().ravel(), mask.numpy().ravel()
    w = np.where(m > 0, 1.0, OUTSIDE_MASK_WEIGHT)
    expected = float(np.sum(w * (p - v) ** 2) / np.sum(w))
    assert float(velocity_loss(prediction, velocity, mask)) == pytest.approx(expected, rel=1e-5)


def test_sampler_spec_and_seeds() -> None:
    spec = SamplerSpec(residual=True, steps=3)
    assert SamplerSpec.from_json(spec.to_json()) == spec
    assert SamplerSpec.from_json({"kind": "flow_matching"}).steps == DEFAULT_SAMPLING_STEPS
    with pytest.raises(AutosrError, match="unknown sampler 'ddpm'"):
        SamplerSpec.from_json({"kind": "ddpm"})
    # where the flow starts: checkpoints from before the switch were trained from noise
    assert SamplerSpec.from_json({"kind": "flow_matching", "residual": False, "steps": 8}).source == "noise"
    bridge = SamplerSpec(source="input", source_noise=0.2)
    assert SamplerSpec.from_json(bridge.to_json()) == bridge and bridge.to_json()["source_noise"] == 0.2
    with pytest.raises(AutosrError, match="model.pt: unknown flow source 'image'"):
        SamplerSpec.from_json({"kind": "flow_matching", "source": "image"}, "model.pt")
    with pytest.raises(AutosrError, match="source_noise must be a positive number"):
        SamplerSpec.from_json({"kind": "flow_matching", "source": "input", "source_noise": 0}, "model.pt")
    seeds = {sample_seed(s, m, k) for s in range(3) for m in range(5) for k in range(4)}
    assert len(seeds) == 60  # distinct per (seed, fold, sample)
    assert torch.equal(draw_noise((2, 3), 7), draw_noise((2, 3), 7))
    assert minimum_volume_shape((16, 24, 8), (0,)) == (16, 24, 8)
    assert minimum_volume_shape((16, 24), (0,)) == (1, 16, 24)
    assert minimum_volume_shape((16, 24), (0, 1)) == (16, 16, 24)  # plane y spans (z, x)


# --- seamless, reproducible sampling ------------------------------------------------------------------------


class ConstantDenoiser(nn.Module):
    """The velocity of a network whose estimate of the clean target is `value` everywhere: (value - x_t) / (1 - t).
    Euler sampling then lands exactly on `value` at t = 1, whatever the noise."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        return (self.value - x[:, -1:]) / (1 - t)


class ConstantVelocity(nn.Module):
    """A network that outputs `value` whatever it sees: a sample is then the noise volume + value."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], self.value)


def _predictor(network: nn.Module, configuration: str = "3d_fullres", **options) -> Predictor:
    raw = plans_dict()
    if configuration == "2d":
        raw["configurations"]["2d"]["slice_axes"] = options.pop("slice_axes", [0])
    sampler = options.pop("sampler", SAMPLER)
    settings = PredictionSettings(device="cpu", **options)
    return Predictor([network], Plans(raw), configuration, settings=settings, sampler=sampler)


def test_sampling_several_tiles_wide_is_seamless() -> None:
    """A volume 4 tiles wide per axis, mirrored, on one noise volume: the constant denoiser gives a constant
    (no tile border anywhere), the constant velocity gives exactly the case's noise volume + the constant."""
    image = torch.randn(1, 40, 40, 40)
    prediction, _ = _predictor(ConstantDenoiser(2.5)).predict_preprocessed(image)
    assert prediction.shape == (40, 40, 40)
    np.testing.assert_allclose(prediction, 2.5, rtol=0, atol=1e-5)
    prediction, _ = _predictor(ConstantVelocity(0.5)).predict_preprocessed(image)
    noise = draw_noise((1, 40, 40, 40), sample_seed(0, 0, 0))[0].numpy()
    np.testing.assert_allclose(prediction, noise + 0.5, rtol=0, atol=1e-5)


def test_flow_start() -> None:
    """x_0: the noise; from the input, input channel 0 + source_noise x noise; with residual (the generated
    quantity is the difference to channel 0) just the scaled noise."""
    noise, scan = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    assert torch.equal(SamplerSpec().start(noise, scan), noise)
    assert torch.allclose(SamplerSpec(source="input", source_noise=0.2).start(noise, scan), scan + 0.2 * noise)
    assert torch.allclose(SamplerSpec(source="input", residual=True, source_noise=0.2).start(noise, scan), 0.2 * noise)


def test_sampling_from_the_input_is_seamless() -> None:
    """From the input, on the volume 4 tiles wide per axis, mirrored: the constant denoiser still gives a
    constant; the constant velocity gives exactly input channel 0 + source_noise x the case's noise volume +
    the constant (one noise volume, the start made once for the whole volume, tiles agree)."""
    sampler = SamplerSpec(steps=4, source="input", source_noise=0.3).to_json()
    image = torch.randn(2, 40, 40, 40)  # two input channels: the start uses channel 0
    raw = plans_dict(num_channels=2)

    def predict(network: nn.Module) -> np.ndarray:
        predictor = Predictor(
            [network], Plans(raw), "3d_fullres", settings=PredictionSettings(device="cpu"), sampler=sampler
        )
        return predictor.predict_preprocessed(image)[0]

    np.testing.assert_allclose(predict(ConstantDenoiser(2.5)), 2.5, rtol=0, atol=1e-5)
    noise = draw_noise((1, 40, 40, 40), sample_seed(0, 0, 0))[0].numpy()
    expected = image[0].numpy() + 0.3 * noise + 0.5
    np.testing.assert_allclose(predict(ConstantVelocity(0.5)), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("slice_axes", [[0], [0, 1, 2]])
def test_2d_sampling_pads_small_volumes_and_averages_planes(slice_axes: list[int]) -> None:
    image = torch.randn(1, 6, 12, 40)  # thinner than the 16 x 16 patch along z and y
    predictor = _predictor(ConstantDenoiser(-1.0), "2d", slice_axes=slice_axes)
    prediction, _ = predictor.predict_preprocessed(image)
    assert prediction.shape == (6, 12, 40)
    np.testing.assert_allclose(prediction, -1.0, rtol=0, atol=1e-5)


def test_sampling_from_the_input_is_seeded() -> None:
    """From the input with a real (timed) network: the same seed gives the same sample, another seed another
    one, and every sample stays the input's: it differs from the noise source's sample for the same seed."""
    torch.manual_seed(0)
    plan = {**NET_3D, "deep_supervision": False, "time_embedding": True, "norm": "batch"}
    network = build_network(plan, 2, 1)
    for module in network.modulations:
        nn.init.normal_(module.linear.weight, std=0.1)
    image = torch.randn(1, 16, 20, 24)
    bridge = SamplerSpec(steps=2, source="input").to_json()
    first, _ = _predictor(network, use_mirroring=False, sampler=bridge).predict_preprocessed(image)
    again, _ = _predictor(network, use_mirroring=False, sampler=bridge).predict_preprocessed(image)
    other, _ = _predictor(network, use_mirroring=False, sampler=bridge, seed=1).predict_preprocessed(image)
    from_noise, _ = _predictor(network, use_mirroring=False).predict_preprocessed(image)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4 and np.abs(first - from_noise).max() > 1e-2


def test_fixed_seed_reproduces_and_samples_make_the_uncertainty() -> None:
    torch.manual_seed(0)
    plan = {**NET_3D, "deep_supervision": False, "time_embedding": True, "norm": "batch"}
    network = build_network(plan, 2, 1)
    for module in network.modulations:
        nn.init.normal_(module.linear.weight, std=0.1)
    image = torch.randn(1, 16, 20, 24)
    first, _ = _predictor(network, use_mirroring=False).predict_preprocessed(image)
    again, _ = _predictor(network, use_mirroring=False).predict_preprocessed(image)
    other, _ = _predictor(network, use_mirroring=False, seed=1).predict_preprocessed(image)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3

    samples: list[np.ndarray] = []
    predictor = _predictor(network, num_samples=3, sampling_steps=2, use_mirroring=False)
    assert predictor.num_members == 3
    mean, spread = predictor.predict_preprocessed(image, with_uncertainty=True, samples=samples)
    assert len(samples) == 3 and samples[0].shape == (16, 20, 24)
    np.testing.assert_allclose(mean, np.mean(samples, axis=0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(spread, np.std(samples, axis=0), rtol=0, atol=1e-4)
    assert spread.min() > 0
    # the first of the three samples is the one-sample prediction (same seed, same member)
    single, _ = _predictor(network, sampling_steps=2, use_mirroring=False).predict_preprocessed(image)
    np.testing.assert_array_equal(samples[0], single)


def test_sampling_options_are_for_generative_models_only() -> None:
    regression = build_network({**NET_3D, "deep_supervision": False}, 1, 1)
    with pytest.raises(AutosrError, match="regression model"):
        _predictor(regression, sampler=None, num_samples=2)
    with pytest.raises(AutosrError, match="--sampling-steps must be at least 1"):
        _predictor(ConstantVelocity(0.0), sampling_steps=0)
    with pytest.raises(AutosrError, match="--num-samples must be at least 1"):
        _predictor(ConstantVelocity(0.0), num_samples=0)


# --- end to end ---------------------------------------------------------------------------------------------


def test_trainer_builds_a_timed_network_with_a_state_channel(autosr_roots: AutosrPaths) -> None:
    make_tiny_dataset(autosr_roots, n_cases=5)
    run = prepare_fold(
        FoldRequest(901, "3d_fullres", 0, "DiffusionTrainer", "cpu", epochs=2, num_workers=0), autosr_roots
    )
    trainer = run.runner
    assert isinstance(trainer, DiffusionTrainer) and TRAINERS["DiffusionTrainer"] is DiffusionTrainer
    plan = trainer.network_plan()
    assert plan["time_embedding"] and not plan["deep_supervision"] and not plan["residual"]
    assert trainer.network.encoder[0][0][0].in_channels == 2  # the input channel and the state
    expected = SamplerSpec(residual=False, steps=DEFAULT_SAMPLING_STEPS, source=DEFAULT_SOURCE)
    assert trainer.sampler_spec() == expected.to_json()
    batch = next(trainer.make_iterators()[0])
    losses = trainer.training_step(batch)
    assert np.isfinite(losses["train_loss"]) and losses["train_loss"] > 0
    checked = trainer.validation_step(batch)
    assert set(checked) == {"val_loss", "val_mean_l1_loss"} and all(np.isfinite(v) for v in checked.values())
    # the plan's residual switch makes the generated quantity the difference to input channel 0
    trainer.config.network["residual"] = True
    inputs, target = torch.randn(2, 1, 4, 4, 4), torch.randn(2, 1, 4, 4, 4)
    assert torch.equal(trainer.goal(inputs, target), target - inputs)
    assert trainer.sampler_spec()["residual"] is True and trainer.network_plan()["residual"] is False


def test_train_kill_resume_predict_end_to_end(autosr_roots: AutosrPaths, tmp_path: Path) -> None:
    """`autosr train ... --trainer DiffusionTrainer` (with its cross-validation), a second fold killed after
    its first checkpoint and resumed, then `autosr predict` with samples, uncertainty and a fixed seed."""
    make_tiny_dataset(autosr_roots, n_cases=5)
    train = ["train", "901", "3d_fullres", "0", "--trainer", "DiffusionTrainer", "--device", "cpu"]
    assert main([*train, "--epochs", "2", "--iters-per-epoch", "2", "--num-workers", "0"]) == 0
    model_dir = autosr_roots.results / DATASET / MODEL
    ckpt = torch.load(model_dir / "fold_0" / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"] == "DiffusionTrainer" and ckpt["sampler"]["kind"] == "flow_matching"
    assert ckpt["network_plan"]["time_embedding"] is True
    assert any(k.startswith("modulations.") for k in ckpt["network_weights"])
    assert {"train_loss", "val_loss", "val_mean_l1_loss"} <= set(ckpt["logger_state"]["curves"])
    assert (model_dir / "fold_0" / "validation" / "summary.json").is_file()

    fold_dir = model_dir / "fold_1"
    latest = fold_dir / "checkpoint_latest.pt"
    kill_training_after_first_checkpoint(
        ["901", "3d_fullres", "1", "--trainer", "DiffusionTrainer", "--epochs", "40", "--iters-per-epoch", "2"], latest
    )
    assert not (fold_dir / "checkpoint_final.pt").exists()
    saved = load_checkpoint(latest)
    epoch = saved["epoch"]
    run = prepare_fold(
        FoldRequest(901, "3d_fullres", 1, "DiffusionTrainer", "cpu", continue_training=True, num_workers=0),
        autosr_roots,
    )
    runner = run.runner
    assert runner.current_epoch == epoch and 1 <= epoch < 40
    for name, value in runner.network.state_dict().items():
        assert torch.equal(value, saved["network_weights"][name]), name
    runner.num_epochs = epoch + 1
    runner.schedule.max_epochs = runner.num_epochs
    runner.fit()
    final = load_checkpoint(fold_dir / "checkpoint_final.pt")
    assert final["epoch"] == epoch + 1 and final["sampler"] == saved["sampler"]

    # the fold's cross-validation prediction is what `autosr predict -f 0` writes (same default sampling)
    raw = autosr_roots.raw / DATASET
    (validation_file,) = sorted((model_dir / "fold_0" / "validation").glob("*.nii.gz"))
    case = validation_file.name.removesuffix(".nii.gz")
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(raw / "imagesTr" / f"{case}_0000.nii.gz", scans)
    predict = ["predict", "-i", str(scans), "-d", "901", "-c", "3d_fullres", "--trainer", "DiffusionTrainer"]
    assert main([*predict, "-o", str(tmp_path / "single"), "-f", "0"]) == 0
    predicted, geometry = read_image(tmp_path / "single" / validation_file.name)
    crossval, crossval_geometry = read_image(validation_file)
    assert geometry == crossval_geometry
    np.testing.assert_allclose(predicted, crossval, rtol=0, atol=1e-4 * np.abs(crossval).max())

    options = ["-f", "0", "1", "--num-samples", "2", "--sampling-steps", "2", "--uncertainty", "--no-tta"]
    for out in ("ensemble", "again"):
        assert main([*predict, "-o", str(tmp_path / out), *options, "--save-samples"]) == 0
    first, geometry = read_image(tmp_path / "ensemble" / validation_file.name)
    again, _ = read_image(tmp_path / "again" / validation_file.name)
    np.testing.assert_array_equal(first, again)  # seeded: the same command gives the same prediction
    assert geometry == crossval_geometry and np.isfinite(first).all()
    spread, spread_geometry = read_image(tmp_path / "ensemble" / "uncertainty" / validation_file.name)
    assert spread_geometry == geometry and spread.max() > 0 and spread.min() >= 0
    samples = sorted((tmp_path / "ensemble" / "samples").glob("*.nii.gz"))
    assert [p.name for p in samples] == [f"{case}_sample{i:02d}.nii.gz" for i in range(4)]  # 2 folds x 2
    assert main([*predict, "-o", str(tmp_path / "seed1"), *options, "--seed", "1"]) == 0
    assert np.abs(read_image(tmp_path / "seed1" / validation_file.name)[0] - first).max() > 0


def test_qc_uncertainty_key_names_the_sampling() -> None:
    """The spread of a generative model depends on samples, steps and seed: the quality flags' uncertainty
    reference is kept per sampling, and a regression model's key is unchanged."""
    from autosr.inference.qc import uncertainty_key

    regression = _predictor(build_network({**NET_3D, "deep_supervision": False}, 1, 1), sampler=None)
    assert regression.sampling_key is None
    assert uncertainty_key([0, 1], "final", (0,), 0.5, regression.sampling_key) == uncertainty_key(
        [0, 1], "final", (0,), 0.5
    )
    keys = {
        uncertainty_key([0, 1], "final", (0,), 0.5, _predictor(ConstantVelocity(0.0), **options).sampling_key)
        for options in ({}, {"num_samples": 2}, {"sampling_steps": 2}, {"seed": 1})
    }
    assert len(keys) == 4


def _set_diffusion(paths: AutosrPaths, entry: object) -> None:
    """Write the 3d_fullres configuration's `diffusion` entry into plans.json, as a user's edit would."""
    plans_path = paths.preprocessed / DATASET / "plans.json"
    plans = Plans.load(plans_path)
    plans.raw["configurations"]["3d_fullres"]["diffusion"] = entry
    plans.save(plans_path)


def test_flow_from_the_input_trains_resumes_and_predicts(autosr_roots: AutosrPaths, tmp_path: Path) -> None:
    """plans.json `diffusion: {source: input}`: a bad entry fails before training; a run killed after its
    first checkpoint resumes with the same weights and the same recorded sampler; the fold's cross-validation
    prediction is what `autosr predict -f 0` writes, and a fixed seed reproduces it."""
    make_tiny_dataset(autosr_roots, n_cases=5)
    request = FoldRequest(901, "3d_fullres", 0, "DiffusionTrainer", "cpu", epochs=2, num_workers=0)
    for bad, message in (({"source": "image"}, "unknown flow source 'image'"), ({"sigma": 1}, "expected an object")):
        _set_diffusion(autosr_roots, bad)
        with pytest.raises(AutosrError, match=rf"configurations\.3d_fullres\.diffusion: {message}"):
            prepare_fold(request, autosr_roots)
        shutil.rmtree(autosr_roots.results / DATASET / MODEL)  # the fold had started: plans.json was copied
    _set_diffusion(autosr_roots, {"source": "noise"})  # pure noise stays available
    trainer = prepare_fold(request, autosr_roots).runner
    assert trainer.sampler == SamplerSpec(source="noise") and trainer.sampler_spec()["source"] == "noise"
    assert np.isfinite(trainer.training_step(next(trainer.make_iterators()[0]))["train_loss"])
    shutil.rmtree(autosr_roots.results / DATASET / MODEL)
    _set_diffusion(autosr_roots, {"source": "input", "source_noise": 0.2})
    trainer = prepare_fold(request, autosr_roots).runner
    assert trainer.sampler == SamplerSpec(source="input", source_noise=0.2)
    batch = next(trainer.make_iterators()[0])
    assert np.isfinite(trainer.training_step(batch)["train_loss"])

    fold_dir = autosr_roots.results / DATASET / MODEL / "fold_0"
    latest = fold_dir / "checkpoint_latest.pt"
    kill_training_after_first_checkpoint(
        ["901", "3d_fullres", "0", "--trainer", "DiffusionTrainer", "--epochs", "40", "--iters-per-epoch", "2"], latest
    )
    saved = load_checkpoint(latest)
    assert saved["sampler"]["source"] == "input" and saved["sampler"]["source_noise"] == 0.2
    run = prepare_fold(
        FoldRequest(901, "3d_fullres", 0, "DiffusionTrainer", "cpu", continue_training=True, num_workers=0),
        autosr_roots,
    )
    runner = run.runner
    epoch = saved["epoch"]
    assert runner.current_epoch == epoch
    for name, value in runner.network.state_dict().items():
        assert torch.equal(value, saved["network_weights"][name]), name
    runner.num_epochs = epoch + 1
    runner.schedule.max_epochs = runner.num_epochs
    runner.fit()
    run.release()  # the fold's lock: the command below works on the same fold
    assert load_checkpoint(fold_dir / "checkpoint_final.pt")["sampler"] == saved["sampler"]
    train = [
        "train",
        "901",
        "3d_fullres",
        "0",
        "--trainer",
        "DiffusionTrainer",
        "--device",
        "cpu",
        "--num-workers",
        "0",
    ]
    assert main([*train, "--continue"]) == 0  # the final validation: samples each validation case

    (validation_file,) = sorted((fold_dir / "validation").glob("*.nii.gz"))[:1]
    scans = tmp_path / "scans"
    scans.mkdir()
    case = validation_file.name.removesuffix(".nii.gz")
    shutil.copy(autosr_roots.raw / DATASET / "imagesTr" / f"{case}_0000.nii.gz", scans)
    predict = ["predict", "-i", str(scans), "-d", "901", "-c", "3d_fullres", "--trainer", "DiffusionTrainer", "-f", "0"]
    for out in ("first", "again"):
        assert main([*predict, "-o", str(tmp_path / out)]) == 0
    first, _ = read_image(tmp_path / "first" / validation_file.name)
    np.testing.assert_array_equal(first, read_image(tmp_path / "again" / validation_file.name)[0])
    crossval, _ = read_image(validation_file)
    np.testing.assert_allclose(first, crossval, rtol=0, atol=1e-4 * np.abs(crossval).max())
