import torch

import study
from evaluate import extract_keypoints_from_heatmaps
from dataset import encode_heatmaps, generate_dataset, img_to_unit, load_split
from model import IntegralNet, soft_argmax


def test_soft_argmax_recovers_gaussian_centre():
    kp = torch.tensor([[[40.3, 70.8], [64.0, 64.0], [90.6, 30.2]]])
    for hm_size in (32, 64, 128):
        logits = encode_heatmaps(kp, hm_size, sigma=2.0 * hm_size / 64).clamp_min(1e-30).log()
        unit = soft_argmax(logits).view(1, 3, 2)
        assert (unit * 128 - 0.5 - kp).abs().max() < 0.05          # image px
    assert torch.allclose(unit, img_to_unit(kp), atol=0.05 / 128)


def test_integral_net_outputs_unit_coordinates():
    out = IntegralNet().eval()(torch.rand(2, 1, 128, 128))
    assert out.shape == (2, 10) and (out > 0).all() and (out < 1).all()


def _two_blob_maps(left, right, left_ch_at, right_ch_at, size=64):
    """Heatmaps [1, 5, S, S]: the left/right hand channels have blobs at the given image-px points."""
    hms = encode_heatmaps(torch.tensor([[[64.0, 30.0], left, right, [50.0, 110.0], [80.0, 110.0]]]), size, 2.0)
    blobs = encode_heatmaps(torch.tensor([left_ch_at + right_ch_at]).view(1, -1, 2), size, 2.0)[0]
    n = len(left_ch_at)
    hms[0, 1] = blobs[:n].sum(0) if n else 0
    hms[0, 2] = blobs[n:].sum(0)
    return hms


def test_joint_hand_decode_splits_colliding_channels():
    left, right = [40.0, 80.0], [90.0, 80.0]
    # both channels peak on the left hand (1.0); the right hand is a weaker second blob (0.6) in both
    hms = _two_blob_maps(left, right, [left, right], [left, right])
    hms[0, 1] = encode_heatmaps(torch.tensor([left]), 64, 2.0)[0] + 0.6 * encode_heatmaps(torch.tensor([right]), 64, 2.0)[0]
    hms[0, 2] = encode_heatmaps(torch.tensor([left]), 64, 2.0)[0] * 0.9 + 0.7 * encode_heatmaps(torch.tensor([right]), 64, 2.0)[0]
    plain = extract_keypoints_from_heatmaps(hms, "dark")
    kp = study.joint_hand_decode(hms, refine="dark")
    assert (kp[0, 1] - torch.tensor(left)).norm() < 0.1      # left channel is stronger at `left`: keeps it
    assert (kp[0, 2] - torch.tensor(right)).norm() < 0.6     # right channel takes the other hand
    assert (plain[0, 2] - torch.tensor(left)).norm() < 1.0      # plain argmax puts both hands on one blob


def test_joint_hand_decode_keeps_distinct_peaks_and_single_blobs():
    left, right = [40.0, 80.0], [90.0, 80.0]
    hms = _two_blob_maps(left, right, [left], [right])           # already distinct: unchanged
    assert torch.allclose(study.joint_hand_decode(hms, "dark"), extract_keypoints_from_heatmaps(hms, "dark"))
    hms = _two_blob_maps(left, right, [left], [left])            # hands really overlap: no second peak
    assert torch.allclose(study.joint_hand_decode(hms, "dark"), extract_keypoints_from_heatmaps(hms, "dark"))


def test_shifted_test_set_is_outside_range_and_inside_image(tmp_path):
    kp_dir = generate_dataset(tmp_path, {"test": 300}, seed=1, sampler=study.sample_shifted_figure)
    kp = load_split(kp_dir, "test", "regression").keypoints
    assert (kp >= 0).all() and (kp <= 127).all()
    dist = study.distance_from_training_range(kp)
    assert (dist >= 1).all() and dist.max() >= 8
    # the whole drawn figure is inside the image: head circle (radius 8, stroke drawn inward) and feet
    head = kp[:, 0]
    assert (head[:, 1] - 8 >= 0).all() and (head[:, 0] - 8 >= 0).all() and (head[:, 0] + 8 <= 127).all()


def test_distance_from_training_range_known_values():
    kp = torch.zeros(3, 5, 2)
    kp[:, 0] = torch.tensor([[64.0, 44.0], [30.0, 44.0], [64.0, 70.0]])   # centres (64,64), (30,64), (64,90)
    assert study.distance_from_training_range(kp).tolist() == [0.0, 10.0, 2.0]
