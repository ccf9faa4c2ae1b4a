import json

import pytest
import torch

import evaluate
import train
from dataset import encode_heatmaps, hm_to_img, img_to_hm
from evaluate import (compute_pck, extract_keypoints_from_heatmaps, keypoint_distances, pck_auc, pck_normalizer,
                      plot_pck_curves, visualize_predictions)


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


def test_auc_perfect_and_constant_offset():
    gt = _gt()
    assert pck_auc(gt, gt) == pytest.approx(1.0)
    off = gt + torch.tensor([5.0, 0.0])      # every keypoint 0.1 of bbox away -> PCK is 0 below 0.1, 1 above
    assert pck_auc(off, gt) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("hm_size", [32, 64, 128])
def test_argmax_exact_on_one_hot(hm_size):
    hms = torch.zeros(2, 5, hm_size, hm_size)
    cells = torch.randint(0, hm_size, (2, 5, 2))
    for b in range(2):
        for k in range(5):
            hms[b, k, cells[b, k, 1], cells[b, k, 0]] = 1.0
    kp = extract_keypoints_from_heatmaps(hms)
    assert kp.shape == (2, 5, 2)
    assert torch.allclose(kp, hm_to_img(cells.float(), hm_size))
    # decoding inverts encoding at cell centres
    assert torch.allclose(img_to_hm(kp, hm_size), cells.float(), atol=1e-5)


@pytest.mark.parametrize("hm_size", [32, 64, 128])
def test_dark_refinement_recovers_float_centres(hm_size):
    torch.manual_seed(0)
    kp = torch.rand(4, 5, 2) * 100 + 14           # float centres, away from the border
    hms = encode_heatmaps(kp, hm_size, sigma=2.0)
    dark = extract_keypoints_from_heatmaps(hms, refine="dark")
    argmax = extract_keypoints_from_heatmaps(hms)
    assert (dark - kp).abs().max() * hm_size / 128 < 0.05        # in heatmap px
    assert (dark - kp).abs().mean() < (argmax - kp).abs().mean()
    quarter = extract_keypoints_from_heatmaps(hms, refine="quarter")
    assert (quarter - kp).abs().max() * hm_size / 128 <= 0.5 + 1e-5


def test_dark_is_safe_on_flat_and_border_maps():
    hms = torch.zeros(1, 2, 64, 64)
    hms[0, 1, 0, 0] = 1.0
    kp = extract_keypoints_from_heatmaps(hms, refine="dark")
    assert torch.isfinite(kp).all()
    with pytest.raises(ValueError):
        extract_keypoints_from_heatmaps(hms, refine="soft")


def test_figures_write_png(tmp_path):
    pck = {t / 100: min(1.0, t / 10) for t in range(0, 31)}
    plot_pck_curves(pck, {t: v / 2 for t, v in pck.items()}, tmp_path / "pck.png", extra_curves={"sym": pck})
    gt = _gt()[0]
    visualize_predictions(torch.rand(1, 128, 128), gt + 2, gt, tmp_path / "vis.png")
    for name in ("pck.png", "vis.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_main_end_to_end(tiny_data, tmp_path):
    train.main(["--data-dir", str(tiny_data), "--out-dir", str(tmp_path), "--epochs", "1", "--precision", "fp32"])
    metrics = evaluate.main(["--data-dir", str(tiny_data), "--out-dir", str(tmp_path)])
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["split"] == "test" and on_disk["num_images"] == 16
    assert set(on_disk["heatmap"]["decoders"]) == {"argmax", "quarter", "dark"}
    assert set(on_disk["regression"]["decoders"]) == {"direct"}
    entry = on_disk["heatmap"]["decoders"]["dark"]["symmetric"]
    assert set(entry["pck"]) == {"bbox", "torso"} and set(entry["pck"]["bbox"]) == {"0.05", "0.1", "0.15", "0.2"}
    assert metrics["regression"]["decoders"]["direct"]["strict"]["mean_px_error"] > 0
    for name in ("pck_curves_bbox", "pck_curves_torso", "sample_predictions", "heatmaps_training_stages",
                 "training_curves", "example_heatmap_prediction"):
        assert (tmp_path / "visualizations" / f"{name}.png").stat().st_size > 5000


def test_missing_checkpoint_names_file_and_command(tmp_path):
    with pytest.raises(SystemExit, match="heatmap_model.pth not found; run `python problem2/train.py`"):
        evaluate.main(["--out-dir", str(tmp_path)])
