import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dataset
from common import UsageError
from codec import KEYPOINT_NAMES, canonicalize_hands, encode_heatmaps, hm_to_img, img_to_hm, img_to_unit, unit_to_img
from dataset import (COURSE_CENTER_RANGE, KeypointDataset, data_fingerprint, figure_centre, generate_dataset,
                     load_split, make_loader, resolve_keypoints_dir, sample_shifted_figure, split_paths)

# data_fingerprint of the default dataset (1000/200/200, seed 0) as made by the reference generator (code
# 0340f35, which produced the committed results): the generator must keep reproducing it byte for byte.
REFERENCE_DEFAULT_ANNOTATIONS_SHA256 = "9f0cbf123ac0cf5c"
REFERENCE_DEFAULT_PIXELS_SHA256 = "e02f4186272ae2f3"  # the images every stored run trained on


def test_coordinate_convention_round_trip_and_known_values():
    x = torch.tensor([0.0, 10.0, 63.5, 127.0])
    for s in (32, 64, 128):
        assert torch.allclose(hm_to_img(img_to_hm(x, s), s), x)
    assert img_to_hm(torch.tensor(10.0), 64) == 4.75          # pixel centres: (10 + .5) / 2 - .5
    assert hm_to_img(torch.tensor(5.0), 64) == 10.5
    assert img_to_hm(torch.tensor(10.0), 128) == 10.0          # identity at full resolution
    assert img_to_unit(torch.tensor(-0.5)) == 0 and img_to_unit(torch.tensor(127.5)) == 1
    assert torch.allclose(unit_to_img(img_to_unit(x)), x)


def _centroid(hm):
    ys, xs = torch.meshgrid(torch.arange(hm.shape[0], dtype=torch.float64),
                            torch.arange(hm.shape[1], dtype=torch.float64), indexing="ij")
    w = hm.double()
    return float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())


@pytest.mark.parametrize("hm_size", [32, 64, 128])
def test_gaussian_peak_at_float_keypoint(hm_size):
    kp = torch.tensor([[50.3, 61.7], [70.0, 40.25], [64.9, 64.1]])
    hms = encode_heatmaps(kp, hm_size, sigma=2.0)
    assert hms.shape == (3, hm_size, hm_size) and hms.dtype == torch.float32
    assert float(hms.max()) <= 1.0
    for k in range(3):
        cx, cy = _centroid(hms[k])
        ex, ey = img_to_hm(kp[k], hm_size).tolist()
        assert abs(cx - ex) < 0.05 and abs(cy - ey) < 0.05


def test_gaussian_integer_centre_has_peak_one():
    hm = encode_heatmaps(torch.tensor([[10.0, 20.0]]), 128, sigma=2.0)[0]
    assert hm[20, 10] == 1.0 and hm.argmax() == 20 * 128 + 10


def test_border_and_outside_keypoints_give_clipped_gaussians():
    kp = torch.tensor([[0.0, 0.0], [127.0, 64.0], [-6.0, 64.0], [200.0, 200.0]])
    hms = encode_heatmaps(kp, 64, sigma=2.0)
    assert torch.isfinite(hms).all()
    assert hms[0].argmax() == 0                                        # corner cell
    assert hms[1].flatten().argmax() % 64 == 63                          # right edge column
    assert hms[2, :, 0].max() < 0.5 and hms[2].flatten().argmax() % 64 == 0  # clipped, peak at the edge
    assert hms[3].max() < 1e-6                                           # far outside: ~empty map
    # the clipped map is exactly the tail of the full Gaussian: no shifted peak
    x_hm = img_to_hm(torch.tensor(-6.0), 64)
    assert torch.allclose(hms[2, 32, :3], torch.exp(-(torch.arange(3.0) - x_hm) ** 2 / 8) * hms[2, 32, 0] /
                          torch.exp(-(0 - x_hm) ** 2 / 8))


def test_generate_heatmap_method_matches_encoder(tiny_data):
    ds = load_split(tiny_data, "train", "heatmap", 64, 2.0)
    hm = ds.generate_heatmap(ds.keypoints[3], 64, 64)
    assert hm.shape == (5, 64, 64) and torch.equal(hm, ds.targets[3])


@pytest.mark.parametrize("output_type,shape", [("heatmap", (5, 64, 64)), ("regression", (10,))])
def test_items_shapes_dtypes_ranges(tiny_data, output_type, shape):
    ds = KeypointDataset(tiny_data / "train", tiny_data / "train_annotations.json", output_type=output_type)
    image, target = ds[0]
    assert image.shape == (1, 128, 128) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1 and image.max() == 1 and image.min() == 0
    assert target.shape == shape and target.dtype == torch.float32
    assert 0 <= target.min() and target.max() <= 1
    if output_type == "regression":
        kp = json.loads((tiny_data / "train_annotations.json").read_text())["images"][0]["keypoints"]
        assert torch.allclose(unit_to_img(target.view(5, 2)), torch.tensor(kp, dtype=torch.float32))
    images, targets = next(iter(make_loader(ds, batch_size=8, shuffle=True, seed=1)))
    assert images.shape == (8, 1, 128, 128) and targets.shape == (8, *shape)


def test_generator_is_deterministic_and_course_schema(tmp_path):
    a = generate_dataset(tmp_path / "a", {"train": 6, "val": 3, "test": 2}, seed=7)
    b = generate_dataset(tmp_path / "b", {"train": 6, "val": 3, "test": 2}, seed=7)
    c = generate_dataset(tmp_path / "c", {"train": 6, "val": 3, "test": 2}, seed=8)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 6 + 3 + 2 + 3 + 1   # PNGs, three annotation files, generator.json
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "train_annotations.json").read_bytes() != (c / "train_annotations.json").read_bytes()
    ann = json.loads((a / "val_annotations.json").read_text())
    assert set(ann) == {"images", "keypoint_names", "num_keypoints"}
    assert ann["keypoint_names"] == KEYPOINT_NAMES and ann["num_keypoints"] == 5
    assert [e["id"] for e in ann["images"]] == [6, 7, 8]                     # ids run on across splits
    assert all(set(e) == {"id", "file_name", "keypoints"} for e in ann["images"])
    assert ann["images"][0]["file_name"] == "000006.png"
    assert all(isinstance(v, int) for e in ann["images"] for p in e["keypoints"] for v in p)
    im = Image.open(a / "val" / "000006.png")
    assert im.mode == "L" and im.size == (128, 128)
    px = np.asarray(im)
    assert set(np.unique(px)) <= {0, 255} and (px == 255).mean() > 0.8      # white bg, black strokes


def test_default_dataset_is_the_reference_one(tmp_path):
    kp_dir = generate_dataset(tmp_path)
    fp = data_fingerprint(kp_dir)
    assert fp == {"annotations_sha256": REFERENCE_DEFAULT_ANNOTATIONS_SHA256,
                  "pixels_sha256": REFERENCE_DEFAULT_PIXELS_SHA256,
                  "split_sizes": {"train": 1000, "val": 200, "test": 200}, "generator_seed": 0,
                  "generator_sampler": "course"}


def test_figure_geometry_follows_course_distribution(tmp_path):
    kp_dir = generate_dataset(tmp_path, {"train": 300}, seed=3)
    kps = np.array([e["keypoints"] for e in json.loads((kp_dir / "train_annotations.json").read_text())["images"]])
    head, lh, rh, lf, rf = (kps[:, i] for i in range(5))
    cx, cy = figure_centre(kps).numpy().T
    assert cx.min() == head[:, 0].min() and (cy == head[:, 1] + 20).all()
    for c in (cx, cy):   # uniform over the whole inclusive range, independently per axis
        assert c.min() == COURSE_CENTER_RANGE[0] and c.max() == COURSE_CENTER_RANGE[1] and 12 < c.std() < 16
    assert abs(np.corrcoef(cx, cy)[0, 1]) < 0.15
    assert (lf[:, 1] == cy + 37).all() and (rf[:, 1] == cy + 37).all()
    assert (lf[:, 0] + rf[:, 0] == 2 * cx).all() and ((rf[:, 0] - cx) >= 10).all() and ((rf[:, 0] - cx) <= 30).all()
    for hand in (lh, rh):
        r = np.hypot(hand[:, 0] - cx, hand[:, 1] - (cy - 6))
        assert (r <= 20).all() and (r >= 18).all()   # int() truncation of a 20-px arm


def test_swapped_arm_angles_draw_the_same_pixels_with_the_hand_labels_swapped():
    """The hand labels are a coin flip given the image: arm angles (a, b) and (-b, -a) render pixel-identical images
    (so no network can tell them apart) whose left_hand and right_hand labels are swapped."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        centre, (a, b), spread = dataset.sample_figure(rng)
        img, kp = dataset.render_figure(centre, (a, b), spread)
        img_swapped, kp_swapped = dataset.render_figure(centre, (-b, -a), spread)
        assert np.array_equal(np.asarray(img), np.asarray(img_swapped))
        assert kp_swapped == [kp[0], kp[2], kp[1], kp[3], kp[4]]


def test_hand_labels_ambiguous_feet_not(tmp_path):
    kp_dir = generate_dataset(tmp_path, {"train": 1000}, seed=11)
    ds = load_split(kp_dir, "train", "regression")
    kp = ds.keypoints
    swapped_hands = (kp[:, 1, 0] > kp[:, 2, 0]).float().mean()
    assert 0.42 < swapped_hands < 0.58                      # ~half: left_hand right of right_hand
    assert (kp[:, 3, 0] < kp[:, 4, 0]).all()                 # feet never swapped
    canon = canonicalize_hands(kp)
    assert (canon[:, 1, 0] <= canon[:, 2, 0]).all()
    assert torch.equal(canon[:, [0, 3, 4]], kp[:, [0, 3, 4]])
    ds_c = load_split(kp_dir, "train", "regression", canonical_hands=True)
    assert torch.equal(ds_c.keypoints, canon)


def test_missing_test_split_falls_back_to_val(tmp_path, capsys):
    kp_dir = generate_dataset(tmp_path, {"train": 4, "val": 2}, seed=0)
    image_dir, ann = split_paths(kp_dir, "test")
    assert image_dir.name == "val" and "WARNING" in capsys.readouterr().out
    assert resolve_keypoints_dir(tmp_path) == kp_dir and resolve_keypoints_dir(kp_dir) == kp_dir


def _copy(tiny_data, tmp_path):
    dst = tmp_path / "keypoints"
    shutil.copytree(tiny_data, dst)
    return dst


def test_bad_inputs_give_clear_errors(tiny_data, tmp_path):
    d = _copy(tiny_data, tmp_path)
    ann_path = d / "train_annotations.json"
    with pytest.raises(UsageError, match=r"image file .*nope/000000.png \(id 0\) is missing"):
        KeypointDataset(d / "nope", ann_path)
    with pytest.raises(UsageError, match="annotation file .*missing.json not found"):
        KeypointDataset(d / "train", d / "missing.json")
    with pytest.raises(UsageError, match="no train_annotations.json in"):
        resolve_keypoints_dir(tmp_path / "empty")
    good = json.loads(ann_path.read_text())

    ann_path.write_text("{not json")
    with pytest.raises(UsageError, match="train_annotations.json: malformed JSON"):
        KeypointDataset(d / "train", ann_path)
    bad = json.loads(json.dumps(good))
    bad["images"][2]["keypoints"] = bad["images"][2]["keypoints"][:4]
    ann_path.write_text(json.dumps(bad))
    with pytest.raises(UsageError, match=r"images\[2\] \(id 2\): 'keypoints' must be 5 numeric"):
        KeypointDataset(d / "train", ann_path)
    bad["images"][2]["keypoints"] = [[1, "x"]] * 5
    ann_path.write_text(json.dumps(bad))
    with pytest.raises(UsageError, match=r"id 2"):
        KeypointDataset(d / "train", ann_path)
    del bad["images"][3]["file_name"]
    bad["images"][2] = good["images"][2]
    ann_path.write_text(json.dumps(bad))
    with pytest.raises(UsageError, match=r"images\[3\] \(id 3\): each entry needs"):
        KeypointDataset(d / "train", ann_path)
    ann_path.write_text(json.dumps({"keypoint_names": KEYPOINT_NAMES}))
    with pytest.raises(UsageError, match="'images' list"):
        KeypointDataset(d / "train", ann_path)
    ann_path.write_text(json.dumps(good))
    (d / "train" / "000005.png").unlink()
    with pytest.raises(UsageError, match=r"000005.png \(id 5\) is missing"):
        KeypointDataset(d / "train", ann_path)
    (d / "train" / "000005.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match=r"000005.png \(id 5\) cannot be decoded"):
        KeypointDataset(d / "train", ann_path)
    with pytest.raises(ValueError, match="output_type"):
        KeypointDataset(d / "train", ann_path, output_type="points")


def test_rgb_images_are_converted_to_the_same_grayscale(tiny_data, tmp_path):
    d = _copy(tiny_data, tmp_path)
    ref = KeypointDataset(tiny_data / "val", tiny_data / "val_annotations.json", "regression")
    Image.open(d / "val" / "000048.png").convert("RGB").save(d / "val" / "000048.png")
    assert resolve_keypoints_dir(d) == d
    ds = KeypointDataset(d / "val", d / "val_annotations.json", "regression")
    assert torch.equal(ds.images, ref.images) and torch.equal(ds.keypoints, ref.keypoints)


def test_data_that_would_change_what_is_learned_is_refused_before_training(tiny_data, tmp_path):
    """An image of another size (its keypoints would be in another space) and keypoints outside the image are
    refused by the one validation pass every script runs (resolve_keypoints_dir), naming the file and id."""
    d = _copy(tiny_data, tmp_path)
    Image.open(d / "val" / "000048.png").resize((64, 64)).save(d / "val" / "000048.png")
    with pytest.raises(UsageError, match=r"000048.png \(id 48\) is 64x64, not 128x128"):
        resolve_keypoints_dir(d)
    shutil.copyfile(tiny_data / "val" / "000048.png", d / "val" / "000048.png")
    ann = json.loads((d / "train_annotations.json").read_text())
    ann["images"][7]["keypoints"][3] = [40, 140]
    (d / "train_annotations.json").write_text(json.dumps(ann))
    with pytest.raises(UsageError, match=r"images\[7\] \(id 7\): left_foot at \(40, 140\) lies outside the 128x128"):
        resolve_keypoints_dir(d)
    with pytest.raises(UsageError, match="train_annotations.json.*left_foot at"):  # before anything is trained
        import train
        train.main(["--data-dir", str(d), "--out-dir", str(tmp_path / "out"), "--epochs", "1"])
    assert not (tmp_path / "out").exists()


def test_dataset_cli_checks_its_arguments_and_leaves_no_temp_folder(tmp_path, capsys):
    for flags in (["--num-train", "-5"], ["--num-val", "0"]):
        with pytest.raises(UsageError, match="must be >="):
            dataset.main(["--out", str(tmp_path), *flags])
    assert list(tmp_path.iterdir()) == []                          # nothing created
    dataset.main(["--out", str(tmp_path), "--num-train", "4", "--num-val", "2", "--num-test", "2"])
    with pytest.raises(UsageError, match="already exists; delete it first"):
        dataset.main(["--out", str(tmp_path), "--num-train", "4", "--num-val", "2"])
    assert [p.name for p in tmp_path.iterdir()] == ["keypoints"]   # no .keypoints.tmp folder left behind


def test_a_concurrent_writer_gets_one_line_and_no_temp_folder(tmp_path, monkeypatch):
    real_replace = os.replace

    def other_process_finishes_first(src, dst):
        if Path(dst).name == "keypoints":                          # the other writer's result, now in place
            (Path(dst) / "train").mkdir(parents=True)
        return real_replace(src, dst)

    monkeypatch.setattr(dataset.os, "replace", other_process_finishes_first)
    with pytest.raises(UsageError, match="written by another process"):
        dataset.generate_dataset(tmp_path, {"train": 2, "val": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["keypoints"]




def test_shifted_figures_lie_outside_the_training_range_inside_the_image(tmp_path):
    kp_dir = generate_dataset(tmp_path, {"test": 300}, seed=1, sampler=sample_shifted_figure)
    kp = load_split(kp_dir, "test", "regression").keypoints
    assert (kp >= 0).all() and (kp <= 127).all()
    cx, cy = figure_centre(kp).T
    lo, hi = COURSE_CENTER_RANGE
    assert (((cx < lo) | (cx > hi)) | ((cy < lo) | (cy > hi))).all()
    head = kp[:, 0]   # the head circle (radius 8) is inside the image too
    assert (head[:, 1] - 8 >= 0).all() and (head[:, 0] - 8 >= 0).all() and (head[:, 0] + 8 <= 127).all()
