"""Known-answer tests of the convention, every encode/decode pair and the hand loss."""
import pytest
import torch

from codec import (decode, decode_heatmaps, encode, encode_heatmaps, heatmap_mean, hm_to_img, img_to_hm, img_to_unit,
                   keypoint_loss, soft_argmax, swap_hands)


@pytest.mark.parametrize("hm_size", [8, 32, 64, 128])
def test_argmax_exact_on_one_hot(hm_size):
    torch.manual_seed(hm_size)
    hms = torch.zeros(2, 5, hm_size, hm_size)
    cells = torch.randint(0, hm_size, (2, 5, 2))
    for b in range(2):
        for k in range(5):
            hms[b, k, cells[b, k, 1], cells[b, k, 0]] = 1.0
    kp = decode_heatmaps(hms)
    assert kp.shape == (2, 5, 2)
    assert torch.allclose(kp, hm_to_img(cells.float(), hm_size))
    assert torch.allclose(img_to_hm(kp, hm_size), cells.float(), atol=1e-5)   # decoding inverts encoding


def test_known_cell_to_image_values():
    hms = torch.zeros(1, 5, 64, 64)
    hms[0, :, 7, 5] = 1.0                          # cell x=5, y=7 -> image ((5 + .5) * 2 - .5, (7 + .5) * 2 - .5)
    assert decode_heatmaps(hms)[0, 0].tolist() == [10.5, 14.5]


@pytest.mark.parametrize("hm_size", [32, 64, 128])
def test_encode_then_decode_recovers_centres_to_the_cell(hm_size):
    torch.manual_seed(0)
    kp = torch.rand(4, 5, 2) * 100 + 14           # float centres, away from the border
    hms = encode_heatmaps(kp, hm_size, sigma=2.0)
    argmax = decode_heatmaps(hms)
    assert (argmax - kp).abs().max() * hm_size / 128 <= 0.5 + 1e-5
    quarter = decode_heatmaps(hms, "quarter")
    assert (quarter - kp).abs().max() * hm_size / 128 <= 0.5 + 1e-5
    assert (quarter - kp).abs().mean() < (argmax - kp).abs().mean()  # the step moves toward the true centre


def test_quarter_step_direction():
    hms = torch.zeros(1, 1, 16, 16)
    hms[0, 0, 5, 5], hms[0, 0, 5, 6], hms[0, 0, 4, 5] = 1.0, 0.5, 0.2   # right neighbour and upper neighbour
    x, y = img_to_hm(decode_heatmaps(hms, "quarter")[0, 0], 16).tolist()
    assert (x, y) == (5.25, 4.75)


def test_quarter_on_flat_and_border_maps():
    hms = torch.zeros(1, 2, 64, 64)
    hms[0, 1, 0, 0] = 1.0                          # a corner peak
    kp = decode_heatmaps(hms, "quarter")[0]
    assert kp[0].tolist() == [0.5, 0.5] and torch.isfinite(kp).all()  # a flat map: the first cell, no step
    with pytest.raises(ValueError):
        decode_heatmaps(hms, refine="soft")


def test_coords_round_trip_and_soft_argmax():
    kp = torch.tensor([[[40.3, 70.8], [64.0, 64.0], [90.6, 30.2], [-0.5, 127.5], [0.0, 0.0]]])
    assert torch.allclose(decode("regression", encode("regression", kp)), kp, atol=1e-5)
    assert encode("regression", kp)[0, 6:8].tolist() == [0.0, 1.0]           # image borders -> 0 and 1
    for hm_size in (32, 64, 128):
        logits = encode_heatmaps(kp[:, :3], hm_size, sigma=2.0 * hm_size / 64).clamp_min(1e-30).log()
        unit = soft_argmax(logits).view(1, 3, 2)
        assert (unit * 128 - 0.5 - kp[:, :3]).abs().max() < 0.05
    assert torch.allclose(unit, img_to_unit(kp[:, :3]), atol=0.05 / 128)


@pytest.mark.parametrize("target", ["heatmap", "regression"])
def test_symmetric_hand_loss(target):
    torch.manual_seed(1)
    kp = torch.rand(6, 5, 2) * 100 + 10
    swapped = kp.clone()
    swapped[::2] = swap_hands(kp[::2])                 # half the images: hand labels swapped
    t, t_sw = encode(target, kp), encode(target, swapped)
    out = t + 0.01 * torch.randn_like(t)
    strict = keypoint_loss(out, t)
    assert torch.allclose(keypoint_loss(out, t, "symmetric"), strict, rtol=1e-5)   # right order: same as strict
    assert torch.allclose(keypoint_loss(out, t_sw, "symmetric"), strict, rtol=1e-5)  # swapped labels forgiven
    assert keypoint_loss(out, t_sw) > 5 * strict                                      # strict is not
    head_moved = encode(target, kp + torch.tensor([[3.0, 0.0]] + [[0.0, 0.0]] * 4))
    assert keypoint_loss(out, head_moved, "symmetric") > 1.3 * strict                 # other keypoints still count
    with pytest.raises(ValueError):
        keypoint_loss(out, t, "loose")


def test_heatmap_mean_known_answers():
    """One positive cell reads as that cell's centre in image px; two equal peaks as their midpoint; negative values
    are ignored; a map with nothing positive reads as its centre (63.5 px)."""
    hm = torch.zeros(1, 3, 64, 64)
    hm[0, 0, 10, 20] = 1.0                                   # row 10, column 20
    hm[0, 1, 10, 20] = hm[0, 1, 10, 40] = 0.5
    hm[0, 1, 30, 30] = -1.0
    hm[0, 2] = -0.1
    kp = heatmap_mean(hm)[0]
    assert kp[0].tolist() == pytest.approx([hm_to_img(torch.tensor(20.0), 64).item(), hm_to_img(torch.tensor(10.0),
                                                                                                64).item()])
    assert kp[1, 0].item() == pytest.approx(hm_to_img(torch.tensor(30.0), 64).item())
    assert kp[2].tolist() == pytest.approx([63.5, 63.5])
