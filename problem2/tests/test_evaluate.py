import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import dataset
import evaluate
import train
from codec import decode, encode_heatmaps
from dataset import load_split
from evaluate import (compute_pck, extract_keypoints_from_heatmaps, hand_placement, keypoint_distances,
                      pck_normalizer, plot_pck_curves, predict_all_decoders, predict_map_readouts, spread_ratio,
                      summarize, visualize_predictions)
from common import UsageError
from model import load_checkpoint


def _gt():
    # bbox of the GT keypoints: 30 x 40 -> diagonal 50 px; head-to-mid-feet: 40 px
    return torch.tensor([[[25.0, 10.0], [10.0, 25.0], [40.0, 25.0], [10.0, 50.0], [40.0, 50.0]]])


def test_normalisers():
    assert pck_normalizer(_gt(), "bbox").item() == pytest.approx(50.0)
    assert pck_normalizer(_gt(), "torso").item() == pytest.approx(40.0)
    with pytest.raises(ValueError):
        pck_normalizer(_gt(), "hips")


def test_pck_known_answers_including_exact_threshold():
    gt = _gt()
    pred = gt.clone()
    pred[0, 0, 0] += 5.0      # exactly 0.1 * 50 -> correct at 0.1 (<=), wrong at 0.05
    pred[0, 1, 1] += 3.0      # 0.06 of bbox
    pred[0, 2] += torch.tensor([6.0, 8.0])   # 10 px = 0.2 * 50 exactly
    pred[0, 3, 0] -= 20.0     # 0.4: never correct
    pck = compute_pck(pred, gt, [0.05, 0.1, 0.15, 0.2], "bbox")
    assert pck == {0.05: pytest.approx(1 / 5), 0.1: pytest.approx(3 / 5), 0.15: pytest.approx(3 / 5),
                   0.2: pytest.approx(4 / 5)}
    # torso = 40 px: 5 px is 0.125, 3 px is 0.075, 10 px is 0.25 exactly, 20 px is 0.5
    pck_t = compute_pck(pred, gt, [0.05, 0.1, 0.125, 0.25], "torso")
    assert list(pck_t.values()) == pytest.approx([1 / 5, 2 / 5, 3 / 5, 4 / 5])


def test_symmetric_pck_on_swapped_hands():
    gt = _gt()
    pred = gt.clone()
    pred[0, [1, 2]] = gt[0, [2, 1]]           # hands swapped: 30 px errors each
    strict = compute_pck(pred, gt, [0.1], "bbox")[0.1]
    sym = compute_pck(pred, gt, [0.1], "bbox", symmetric=True)[0.1]
    assert strict == pytest.approx(3 / 5) and sym == 1.0
    assert keypoint_distances(pred, gt)[0, 1] == pytest.approx(30.0)
    assert keypoint_distances(pred, gt, symmetric=True).max() == 0
    # symmetric never reorders a correctly labelled prediction
    assert torch.equal(keypoint_distances(gt, gt, True), keypoint_distances(gt, gt))


def test_hand_placement_known_answers():
    """Hands 30 px apart, PCK@0.05's radius 2.5 px: a predicted hand 1 or 2 px from a true hand is on a hand, 1 px
    from their midpoint near it, far from all three elsewhere; an image whose hands are within 2 radii is left out."""
    gt = _gt().repeat(3, 1, 1)
    gt[2, 2] = torch.tensor([13.0, 25.0])                    # true hands 3 px apart: not counted
    pred = gt.clone()
    pred[0, 1], pred[0, 2] = torch.tensor([11.0, 25.0]), torch.tensor([25.0, 26.0])   # on a hand; near the midpoint
    pred[1, 1], pred[1, 2] = torch.tensor([25.0, 40.0]), torch.tensor([40.0, 27.0])   # elsewhere; on a hand
    pred[2, 1] = pred[2, 2] = torch.tensor([60.0, 60.0])
    assert hand_placement(pred, gt) == {"images": 2, "on_a_hand": 0.5, "near_midpoint": 0.25, "elsewhere": 0.25}
    assert hand_placement(pred[2:], gt[2:]) == {"images": 0, "on_a_hand": None, "near_midpoint": None,
                                                "elsewhere": None}


def test_integralnet_read_at_its_maps_peak_or_by_its_own_soft_argmax(tiny_data):
    """predict_map_readouts: IntegralNet's 'soft-argmax' is its own output; its DECODERS read the peak of its logit
    maps, as they read a heatmap; a heatmap network gets its usual decoders."""
    from codec import DECODERS, decode_heatmaps
    from model import build_model
    torch.manual_seed(0)
    ds = load_split(tiny_data, "test", "regression")
    net = build_model("integral").eval()
    reads = predict_map_readouts(net, ds)
    assert set(reads) == {"mean", *DECODERS}
    assert torch.allclose(reads["mean"], predict_all_decoders(net, ds)["direct"], atol=1e-4)
    with torch.no_grad():
        maps = net.body(torch.stack([ds[i][0] for i in range(len(ds))]))
    assert torch.allclose(reads["argmax"], decode_heatmaps(maps, "argmax"), atol=1e-4)
    assert set(predict_map_readouts(build_model("heatmap").eval(), ds)) == {"mean", *DECODERS}


def test_seed_entry_point_decodes_heatmaps_in_image_px():
    kp = torch.tensor([[[10.0, 20.0], [30.0, 40.0], [50.0, 60.0], [70.0, 80.0], [90.0, 100.0]]])
    assert torch.allclose(extract_keypoints_from_heatmaps(encode_heatmaps(kp, 64, 2.0), refine="quarter"), kp, atol=1e-5)


def test_summarize_and_spread_ratio_known_answers():
    gt = torch.tensor([[[0.0, 0.0]] * 5, [[10.0, 0.0]] * 5, [[20.0, 0.0]] * 5]) + torch.arange(5.0)[:, None]
    assert spread_ratio(gt, gt) == pytest.approx(1.0)
    assert spread_ratio(gt.mean(0).expand_as(gt), gt) == 0.0                  # a constant prediction
    half = gt.mean(0) + 0.5 * (gt - gt.mean(0))
    assert spread_ratio(half, gt) == pytest.approx(0.5)
    pred = gt.clone()
    pred[:, 0] += torch.tensor([3.0, 4.0])                                     # head 5 px off
    pred[:, [1, 2]] = gt[:, [2, 1]]                                            # hands swapped (1 px apart)
    b = summarize(pred, gt)
    assert b["px_head_feet"] == pytest.approx(5 / 3) and b["px_hands_sym"] == 0.0
    assert b["px_hands"] == pytest.approx(2 ** 0.5) and b["px"] == pytest.approx((5 + 2 * 2 ** 0.5) / 5)
    assert b["px_sym"] == pytest.approx(5 / 5) and b["hand_gap_px"] == pytest.approx(2 ** 0.5)
    # bbox diagonal 5.66 px, so even PCK@0.2 allows 1.13 px: the 5-px head fails everywhere, the swapped hands
    # (1.41 px off) fail strictly and are exact symmetrically
    assert b["pck_bbox"] == {"0.05": 0.4, "0.1": 0.4, "0.15": 0.4, "0.2": 0.4} and b["pck_bbox_sym"]["0.2"] == 0.8
    assert set(b) == {"px", "px_sym", "px_head_feet", "px_hands", "px_hands_sym", "pck_bbox", "pck_bbox_sym",
                      "pck_torso", "pck_torso_sym", "spread_ratio", "hand_gap_px"}


def _png_has_content(path):
    from PIL import Image
    with Image.open(path) as im:
        px = np.asarray(im.convert("RGB"))
    return min(px.shape[:2]) > 200 and len(np.unique(px.reshape(-1, 3), axis=0)) > 20


def test_figures_show_what_their_reader_needs(tiny_data, trained, tmp_path, monkeypatch):
    """The evaluation figures as a reader sees them: titles naming the split, labelled axes, one legend entry per
    curve, one panel per method and image."""
    figs = {}
    import figures
    real = evaluate.save_figure
    for module in (evaluate, figures):
        monkeypatch.setattr(module, "save_figure", lambda fig, path: (figs.__setitem__(Path(path).name, fig),
                                                                      real(fig, path)))
    evaluate.main(["--data-dir", str(tiny_data), "--out-dir", str(_copy_run(trained, tmp_path)), "--split", "val",
                   "--num-samples", "3"])
    ax = figs["pck_curves_bbox_val.png"].axes[0]
    assert ax.get_title() == "PCK curves on the val split (bbox-normalised)"
    assert ax.get_xlabel().startswith("threshold") and ax.get_ylabel().startswith("PCK")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "HeatmapNet (as labelled)", "RegressionNet (as labelled)", "HeatmapNet (hands in either order)",
        "RegressionNet (hands in either order)"]
    grid_legend = figs["val_grid.png"].axes[0].get_legend()
    assert [t.get_text() for t in grid_legend.get_texts()] == ["ground truth", "HeatmapNet", "RegressionNet"]
    assert grid_legend.get_title().get_text() == "the first 3 images of the val split"


def test_the_training_stage_figure_shows_every_saved_image_at_every_saved_epoch(tmp_path, monkeypatch):
    """figures.plot_heatmap_stages_all: a row per snapshotted image, the input then one column per epoch, each panel the
    pixelwise largest of the keypoints' heatmaps (a known peak shows at its own place)."""
    import figures
    figs = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: figs.__setitem__(Path(path).name, fig))
    heatmaps = torch.zeros(3, 2, 5, 16, 16)                     # [epochs, images, keypoints, H, W]
    heatmaps[2, 1, 4, 5, 7] = 0.8                               # last epoch, image 1, right_foot
    snapshots = {"epochs": [1, 5, 30], "heatmaps": heatmaps, "images": torch.rand(2, 1, 128, 128),
                 "keypoints": _gt().repeat(2, 1, 1)}
    figures.plot_heatmap_stages_all(snapshots, tmp_path / "stages.png")
    axes = figs["stages.png"].axes
    assert len(axes) == 2 * 4
    assert [ax.get_title() for ax in axes[:4]] == ["input", "epoch 1", "epoch 5", "epoch 30"]
    assert [axes[r * 4].get_ylabel() for r in range(2)] == ["val image 0", "val image 1"]
    shown = axes[1 * 4 + 3].get_images()[0].get_array()
    assert shown[5, 7] == pytest.approx(0.8) and float(shown.sum()) == pytest.approx(0.8)
    assert "all 2 val images" in figs["stages.png"].texts[0].get_text()


def test_figures_write_png(tmp_path):
    pck = {t / 100: min(1.0, t / 10) for t in range(0, 31)}
    plot_pck_curves(pck, {t: v / 2 for t, v in pck.items()}, tmp_path / "pck.png", extra_curves={"sym": pck})
    gt = _gt()[0]
    visualize_predictions(torch.rand(1, 128, 128), gt + 2, gt, tmp_path / "vis.png")
    for name in ("pck.png", "vis.png"):
        assert _png_has_content(tmp_path / name)
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """One tiny train.py run (1 epoch, heatmap + regression) shared by the evaluate tests."""
    out = tmp_path_factory.mktemp("run")
    train.main(["--data-dir", str(tiny_data), "--out-dir", str(out), "--epochs", "1", "--precision", "fp32",
                "--methods", "heatmap", "regression"])
    return out


def _copy_run(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


def test_main_end_to_end(tiny_data, trained, tmp_path):
    out = _copy_run(trained, tmp_path)
    (out / "integral_model.pth").write_bytes(b"left by an earlier run")  # not in this run's log: never read
    metrics = evaluate.main(["--data-dir", str(tiny_data), "--out-dir", str(out)])
    on_disk = json.loads((out / "metrics.json").read_text())
    assert "integral" not in on_disk
    assert on_disk["split"] == "test" and on_disk["num_images"] == 16
    assert set(on_disk["heatmap"]["decoders"]) == {"argmax", "quarter"}
    assert set(on_disk["regression"]["decoders"]) == {"direct"}
    entry = on_disk["heatmap"]["decoders"]["argmax"]
    assert set(entry["pck_torso_sym"]) == set(entry["pck_bbox"]) == {"0.05", "0.1", "0.15", "0.2"}
    assert on_disk["provenance"]["mixed_runs"] is None
    assert on_disk["provenance"]["run_id"] == json.loads((out / "training_log.json").read_text())["run_id"]
    sel = on_disk["decoder_selection"]
    assert sel["best"] == min(sel["px"], key=sel["px"].get)
    # the numbers are those of the checkpoint: recompute one from scratch
    model, _ = load_checkpoint(out / "regression_model.pth")
    ds = load_split(tiny_data, "test", "regression")
    with torch.no_grad():
        direct = decode("regression", model(ds.images))
    assert metrics["regression"]["decoders"]["direct"]["px"] == pytest.approx(
        float((direct - ds.keypoints).norm(dim=-1).mean()), rel=1e-5)
    for name in ("pck_curves_bbox", "pck_curves_torso", "heatmaps_training_stages",
                 "heatmaps_training_stages_keypoints", "training_curves", "example_heatmap_prediction", "test_grid"):
        assert (out / "visualizations" / f"{name}.png").stat().st_size > 5000


def test_missing_checkpoint_names_file_and_command(tiny_data, trained, tmp_path):
    with pytest.raises(UsageError, match="training_log.json not found; run `python problem2/train.py`"):
        evaluate.main(["--out-dir", str(tmp_path / "empty")])
    out = _copy_run(trained, tmp_path)
    (out / "regression_model.pth").unlink()                          # a method the run trained: still an error
    _refused(tiny_data, out, "regression_model.pth not found; run `python problem2/train.py`")


def test_a_run_of_one_method_is_evaluated_alone(tiny_data, tmp_path):
    out = tmp_path / "heatmap_only"
    train.main(["--data-dir", str(tiny_data), "--out-dir", str(out), "--epochs", "1", "--precision", "fp32",
                "--methods", "heatmap"])
    metrics = evaluate.main(["--data-dir", str(tiny_data), "--out-dir", str(out)])
    assert "heatmap" in metrics and "regression" not in metrics
    assert (out / "visualizations" / "pck_curves_bbox.png").exists()


def test_val_split_writes_its_own_files_and_leaves_the_test_results_alone(tiny_data, trained, tmp_path):
    out = _copy_run(trained, tmp_path)
    evaluate.main(["--data-dir", str(tiny_data), "--out-dir", str(out)])
    test_files = {k: v for k, v in _snapshot(out).items() if k != "timings.json"}
    metrics = evaluate.main(["--data-dir", str(tiny_data), "--out-dir", str(out), "--split", "val"])
    after = _snapshot(out)
    assert all(after[k] == v for k, v in test_files.items())          # nothing of the test split rewritten
    assert metrics["split"] == "val" and json.loads((out / "metrics_val.json").read_text())["split"] == "val"
    for name in ("pck_curves_bbox_val", "val_grid"):
        assert (out / "visualizations" / f"{name}.png").exists()


def _refused(tiny_data, out, match, *extra):
    before = _snapshot(out)
    with pytest.raises(UsageError, match=match) as e:
        evaluate.main(["--data-dir", str(tiny_data), "--out-dir", str(out), *extra])
    assert str(e.value).count("\n") == 0               # one line
    assert _snapshot(out) == before                     # nothing rewritten


def test_swapped_checkpoints_are_refused(tiny_data, trained, tmp_path):
    out = _copy_run(trained, tmp_path)
    hm, rg = (out / "heatmap_model.pth").read_bytes(), (out / "regression_model.pth").read_bytes()
    (out / "heatmap_model.pth").write_bytes(rg)
    (out / "regression_model.pth").write_bytes(hm)
    _refused(tiny_data, out, "heatmap_model.pth holds a 'regression' model \\(RegressionNet\\), expected 'heatmap'")


def test_truncated_checkpoint_is_refused(tiny_data, trained, tmp_path):
    out = _copy_run(trained, tmp_path)
    data = (out / "regression_model.pth").read_bytes()
    (out / "regression_model.pth").write_bytes(data[: len(data) // 2])
    _refused(tiny_data, out, "regression_model.pth is truncated or not a checkpoint.*rerun `python problem2/train.py`")


def test_corrupt_training_log_is_refused(tiny_data, trained, tmp_path):
    out = _copy_run(trained, tmp_path)
    (out / "training_log.json").write_text('{"run_id": ')
    _refused(tiny_data, out, "training_log.json is not valid JSON")


def test_checkpoints_of_different_runs_or_data_are_refused(tiny_data, trained, tmp_path):
    """A heatmap model retrained on other data next to the old regression model: refused, naming what
    differs; --allow-mixed-runs evaluates anyway and records the mix."""
    out = _copy_run(trained, tmp_path)
    other = dataset.generate_dataset(tmp_path / "other", {"train": 40, "val": 8, "test": 8}, seed=5)
    train.main(["--data-dir", str(other), "--out-dir", str(tmp_path / "other_run"), "--epochs", "1", "--precision",
                "fp32", "--methods", "heatmap"])
    shutil.copyfile(tmp_path / "other_run" / "heatmap_model.pth", out / "heatmap_model.pth")
    _refused(tiny_data, out, "heatmap_model.pth was not trained by train.py on the data of --data-dir")
    metrics = evaluate.main(["--data-dir", str(tiny_data), "--out-dir", str(out), "--allow-mixed-runs"])
    assert metrics["provenance"]["mixed_runs"] == ["heatmap_model.pth was not trained by train.py on the data of "
                                                   "--data-dir"]


def test_legacy_checkpoint_without_provenance_is_refused(tiny_data, trained, tmp_path):
    out = _copy_run(trained, tmp_path)
    ckpt = torch.load(out / "heatmap_model.pth", weights_only=True)
    del ckpt["provenance"]
    torch.save(ckpt, out / "heatmap_model.pth")
    _refused(tiny_data, out, "heatmap_model.pth was not trained by train.py on the data of --data-dir")


def test_an_interrupted_training_run_is_refused(tiny_data, trained, tmp_path):
    """A log without the regression history (an older run's log beside new checkpoints)."""
    out = _copy_run(trained, tmp_path)
    log = json.loads((out / "training_log.json").read_text())
    del log["regression"]
    (out / "training_log.json").write_text(json.dumps(log))
    _refused(tiny_data, out, "regression_model.pth is not the checkpoint of the train.py run in training_log.json")
    # a run asked for IntegralNet too, killed before it finished: its network is required, not skipped
    log = json.loads((trained / "training_log.json").read_text())
    log["config"]["methods"] = ["heatmap", "regression", "integral"]
    (out / "training_log.json").write_text(json.dumps(log))
    _refused(tiny_data, out, "integral_model.pth not found")


def test_a_checkpoint_of_another_training_of_the_same_recipe_is_refused(tiny_data, trained, tmp_path):
    """Same recipe and best epoch, another training (another machine or thread count): its val loss gives it away."""
    out = _copy_run(trained, tmp_path)
    log = json.loads((out / "training_log.json").read_text())
    log["heatmap"]["best_val_loss"] *= 1.01
    (out / "training_log.json").write_text(json.dumps(log))
    _refused(tiny_data, out, "heatmap_model.pth is not the checkpoint of the train.py run in training_log.json")


def test_one_checkpoint_is_scored_with_every_decoder(tiny_data, trained, tmp_path):
    ckpt = tmp_path / "heatmap_best_model.pth"
    shutil.copyfile(Path(trained) / "heatmap_model.pth", ckpt)
    metrics = evaluate.main(["--data-dir", str(tiny_data), "--checkpoint", str(ckpt), "--split", "val"])
    on_disk = json.loads((tmp_path / "heatmap_best_model_val_metrics.json").read_text())
    assert on_disk["split"] == "val" and set(on_disk["heatmap"]["decoders"]) == {"argmax", "quarter"}
    model, _ = load_checkpoint(ckpt)
    ds = load_split(tiny_data, "val", "regression")
    with torch.no_grad():
        kp = decode("heatmap", model(ds.images), "argmax")
    assert metrics["heatmap"]["decoders"]["argmax"]["px"] == pytest.approx(
        float((kp - ds.keypoints).norm(dim=-1).mean()), rel=1e-5)
    assert not (tmp_path / "metrics.json").exists()                     # the main run's metrics are left alone
