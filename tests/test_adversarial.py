"""The adversarial trainer: discriminator shapes, LSGAN losses, the weight schedule, and end to end on tiny
phantoms (train, checkpoint contents, resume after a real kill, prediction with the result)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import DATASET, NET_2D, NET_3D, kill_training_after_first_checkpoint, make_tiny_dataset

from autosr.checkpoint import load_checkpoint
from autosr.formats.plans import Plans
from autosr.inference.predictor import Predictor
from autosr.inference.settings import PredictionSettings
from autosr.paths import AutosrPaths
from autosr.preprocessing.case_store import list_cases
from autosr.training.adversarial.discriminator import PatchDiscriminator, discriminator_for_plan
from autosr.training.adversarial.losses import discriminator_loss, generator_loss
from autosr.training.adversarial.trainer import ADVERSARIAL_WEIGHT, AdversarialTrainer
from autosr.training.run import FoldRequest, prepare_fold, train_fold
from autosr.training.trainers import TRAINERS

MODEL = "AdversarialTrainer__autosrPlans__3d_fullres"


@pytest.mark.parametrize(("plan", "patch"), [(NET_3D, (16, 16, 16)), (NET_2D, (16, 16)), (NET_3D, (4, 32, 32))])
def test_discriminator_is_conditional_patch_map(plan: dict, patch: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    disc = discriminator_for_plan(plan, patch, in_channels=2)
    inputs, target = torch.randn(2, 2, *patch), torch.randn(2, 1, *patch)
    scores = disc(inputs, target)
    assert scores.shape[:2] == (2, 1) and scores.ndim == len(patch) + 2
    assert all(1 < s <= p for s, p in zip(scores.shape[2:], patch))  # a map of local verdicts, not one number
    convs = [m for m in disc.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs[0].in_channels == 3  # input channels + the (real or generated) target
    assert all(hasattr(c, "parametrizations") and "weight" in c.parametrizations for c in convs)  # spectral norm
    assert not any(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in disc.modules())
    # thin axes are not strided away: a 4-slice patch keeps 4 slices
    if patch == (4, 32, 32):
        assert scores.shape[2] == 4
    # the verdict depends on the condition, not only on the target
    assert not torch.allclose(scores, disc(torch.randn_like(inputs), target))


def test_discriminator_width_follows_plan() -> None:
    wide = discriminator_for_plan({**NET_3D, "features_per_stage": [32, 64]}, (16, 16, 16), 1)
    narrow = discriminator_for_plan(NET_3D, (16, 16, 16), 1)
    assert sum(p.numel() for p in wide.parameters()) > 10 * sum(p.numel() for p in narrow.parameters())
    assert isinstance(narrow, PatchDiscriminator)


def test_lsgan_losses() -> None:
    ones, zeros = torch.ones(2, 1, 3, 3, 3), torch.zeros(2, 1, 3, 3, 3)
    assert float(discriminator_loss(ones, zeros)) == 0.0  # a perfect discriminator
    assert float(discriminator_loss(zeros, ones)) == pytest.approx(1.0)
    assert float(generator_loss(ones)) == 0.0  # a generator that fools it
    assert float(generator_loss(zeros)) == pytest.approx(0.5)
    assert generator_loss(zeros.half()).dtype == torch.float32  # computed in fp32 under autocast


def test_weight_schedule_warms_up_then_ramps(autosr_roots: AutosrPaths) -> None:
    make_tiny_dataset(autosr_roots, n_cases=5)
    run = prepare_fold(
        FoldRequest(901, "3d_fullres", 0, "AdversarialTrainer", "cpu", epochs=10, num_workers=0), autosr_roots
    )
    trainer = run.runner
    assert isinstance(trainer, AdversarialTrainer) and TRAINERS["AdversarialTrainer"] is AdversarialTrainer
    weights = [trainer.weight_at(e) for e in range(10)]
    assert weights[:3] == [0.0, 0.0, 0.0]  # L1 only during warm-up
    assert all(a <= b for a, b in zip(weights, weights[1:]))
    assert 0 < weights[3] < ADVERSARIAL_WEIGHT and weights[-1] == pytest.approx(ADVERSARIAL_WEIGHT)
    disc = trainer.extra_networks["discriminator"]
    assert trainer.extra_optimizers["discriminator"].param_groups[0]["betas"] == (0.5, 0.999)
    assert next(disc.parameters()).device.type == "cpu"
    # one schedule for both optimizers, each from its own initial learning rate
    generator_lr = trainer.schedule.step(5)
    discriminator_lr = trainer.extra_optimizers["discriminator"].param_groups[0]["lr"]
    assert generator_lr / trainer.optimizer.param_groups[0]["initial_lr"] == pytest.approx(
        discriminator_lr / trainer.extra_optimizers["discriminator"].param_groups[0]["initial_lr"]
    )
    assert "discriminator" in trainer.state_dict()["extra_grad_scalers"]  # its scaler is checkpointed too


def _predict_one(model_dir: Path, preprocessed: Path, fold: int) -> np.ndarray:
    """The unchanged predictor on the adversarial model folder: it needs the generator only."""
    predictor = Predictor.from_trained(
        model_dir, folds=[fold], settings=PredictionSettings(device="cpu", use_mirroring=False)
    )
    data_folder = preprocessed / Plans.load(preprocessed / "plans.json").configuration("3d_fullres").data_identifier
    case = list_cases(data_folder)[0]
    image = np.load(data_folder / f"{case}_input.npy")
    prediction, _ = predictor.predict_preprocessed(image)
    assert prediction.shape == image.shape[1:] and np.isfinite(prediction).all()
    return prediction


def test_end_to_end_checkpoint_and_prediction(autosr_roots: AutosrPaths) -> None:
    pre = make_tiny_dataset(autosr_roots, n_cases=5)
    fold_dir = train_fold(
        901, "3d_fullres", 0, "AdversarialTrainer", autosr_roots, "cpu", epochs=3, iters_per_epoch=2, num_workers=0
    )
    assert fold_dir.parent.name == MODEL
    ckpt = torch.load(fold_dir / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"] == "AdversarialTrainer"
    assert set(ckpt["extra_networks"]) == {"discriminator"} == set(ckpt["extra_optimizers"])
    assert ckpt["extra_optimizers"]["discriminator"]["state"]  # it took steps
    assert not any(k.startswith("layers.") for k in ckpt["network_weights"])  # the generator, not the critic
    curves = ckpt["logger_state"]["curves"]
    for name in ("train_loss", "val_loss", "g_adv_loss", "d_loss", "adv_weight"):
        assert len(curves[name]) == 3, name
    assert curves["adv_weight"][0] == 0.0 and curves["adv_weight"][2] > 0
    assert all(v > 0 for v in curves["g_adv_loss"])  # logged during warm-up too (not applied)
    assert (fold_dir / "progress.png").read_bytes()[:4] == b"\x89PNG"
    assert (fold_dir / "validation" / "summary.json").is_file()
    _predict_one(fold_dir.parent, pre, 0)


def test_continue_after_kill_restores_both_networks(autosr_roots: AutosrPaths) -> None:
    """Kill a real `autosr train --trainer AdversarialTrainer` mid-run, resume with --continue, predict."""
    pre = make_tiny_dataset(autosr_roots, n_cases=5)
    fold_dir = autosr_roots.results / DATASET / MODEL / "fold_1"
    latest = fold_dir / "checkpoint_latest.pt"
    train_args = ["901", "3d_fullres", "1", "--trainer", "AdversarialTrainer", "--epochs", "40"]
    kill_training_after_first_checkpoint(train_args + ["--iters-per-epoch", "2"], latest)
    assert not (fold_dir / "checkpoint_final.pt").exists()
    saved = load_checkpoint(latest)
    epoch = saved["epoch"]
    assert 1 <= epoch < 40

    run = prepare_fold(
        FoldRequest(901, "3d_fullres", 1, "AdversarialTrainer", "cpu", continue_training=True, num_workers=0),
        autosr_roots,
    )
    runner = run.runner
    assert runner.current_epoch == epoch and runner.num_epochs == 40
    for name, value in runner.extra_networks["discriminator"].state_dict().items():
        assert torch.equal(value, saved["extra_networks"]["discriminator"][name]), name
    restored = runner.extra_optimizers["discriminator"].state_dict()["state"]
    expected = saved["extra_optimizers"]["discriminator"]["state"]
    assert restored.keys() == expected.keys() and len(restored) > 0
    assert all(torch.equal(restored[k]["exp_avg"], expected[k]["exp_avg"]) for k in expected)

    runner.num_epochs = epoch + 1
    runner.schedule.max_epochs = runner.num_epochs
    runner.fit()
    final = load_checkpoint(fold_dir / "checkpoint_final.pt")
    assert final["epoch"] == epoch + 1 and len(final["logger_state"]["curves"]["d_loss"]) == epoch + 1
    _predict_one(fold_dir.parent, pre, 1)
