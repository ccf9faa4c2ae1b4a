import json

import pytest
import torch
import torch.nn.functional as F

import train
from dataset import load_split, make_loader
from evaluate import decode_outputs
from model import HeatmapNet, autocast, pick_precision, prepare_input


def test_one_batch_overfit_heatmap(tiny_data):
    """Targets, loss and decoding agree: the spec HeatmapNet fits 8 images to < 1 px (image space).
    Measured here: ~1.4 px after 300 steps, < 1 px by ~350-450 (bf16 autocast, channels_last, lr 1e-3)."""
    torch.manual_seed(0)
    ds = load_split(tiny_data, "train", "heatmap")
    images, targets, kp = prepare_input(ds.images[:8], "cpu"), ds.targets[:8], ds.keypoints[:8]
    precision = pick_precision("auto", "cpu")
    model = HeatmapNet().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(800):
        with autocast("cpu", precision):
            out = model(images)
        loss = F.mse_loss(out.float(), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 24:
            err = (decode_outputs(out.detach().float(), "heatmap") - kp).norm(dim=-1).mean()
            if err < 1.0:
                break
    assert err < 1.0, f"pixel error {err:.2f} after {step + 1} steps"


LOG_EPOCH_KEYS = {"epoch", "train_loss", "val_loss", "val_px_error", "seconds"}


def _run(tiny_data, out_dir, *extra):
    return train.main(["--data-dir", str(tiny_data), "--out-dir", str(out_dir), "--epochs", "2",
                       "--precision", "fp32", *extra])


def test_main_end_to_end_writes_checkpoints_and_log(tiny_data, tmp_path):
    _run(tiny_data, tmp_path)
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert {"config", "heatmap", "regression", "total_seconds"} <= set(log)
    for method in ("heatmap", "regression"):
        h = log[method]
        assert len(h["epochs"]) == 2 and set(h["epochs"][0]) == LOG_EPOCH_KEYS
        assert {"best_epoch", "best_val_loss", "best_val_px_error", "train_seconds", "images_per_second"} <= set(h)
        ckpt = torch.load(tmp_path / f"{method}_model.pth", weights_only=True)
        assert ckpt["config"]["method"] == method and ckpt["epoch"] == h["best_epoch"]
        assert ckpt["val_loss"] == pytest.approx(h["best_val_loss"])
    snaps = torch.load(tmp_path / "heatmap_snapshots.pt", weights_only=True)
    assert snaps["epochs"] == [1, 2] and snaps["heatmaps"].shape == (2, 4, 5, 64, 64)
    assert not list(tmp_path.glob(".*tmp*"))


def test_same_seed_same_log(tiny_data, tmp_path):
    a = _run(tiny_data, tmp_path / "a", "--methods", "heatmap", "regression")
    b = _run(tiny_data, tmp_path / "b", "--methods", "regression", "heatmap")  # order must not matter
    for method in ("heatmap", "regression"):
        for ea, eb in zip(a[method]["epochs"], b[method]["epochs"]):
            for key in ("train_loss", "val_loss", "val_px_error"):
                assert ea[key] == pytest.approx(eb[key], rel=1e-5, abs=1e-7)


def test_non_finite_loss_stops_with_message_and_keeps_checkpoint(tiny_data, tmp_path):
    ds = load_split(tiny_data, "train", "regression")
    loader = make_loader(ds, 16)
    quiet = dict(out_dir=tmp_path, precision="fp32", log=lambda *a: None)
    train.train_regression_model(train.RegressionNet(), loader, loader, 1, **quiet)
    good = (tmp_path / "regression_model.pth").read_bytes()
    ds.targets[3] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite training loss at epoch 1.*last good checkpoint"):
        train.train_regression_model(train.RegressionNet(), loader, loader, 1, **quiet)
    assert (tmp_path / "regression_model.pth").read_bytes() == good


def test_unwritable_out_dir_fails_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match="cannot write results"):
        train.main(["--out-dir", str(blocker / "sub")])
