"""The coordinate convention and every target representation as an encode/decode pair, side by side.

Coordinate convention (the ONE place it is defined)
---------------------------------------------------
* Image space ("img px"): 128x128, x to the right, y down. Integer (x, y) is the CENTRE of pixel
  column x / row y, so the image covers the continuous square [-0.5, 127.5]^2. The course's integer
  labels are pixel centres in this space. Every reported error is in this space.
* Heatmap space ("hm px") of size S covers the same square with S x S cells; cell j is centred at
  image coordinate (j + 0.5) * 128 / S - 0.5. Hence, for any S (8, 32, 64, 128, ...):
      hm = (img + 0.5) * S / 128 - 0.5            img = (hm + 0.5) * 128 / S - 0.5
  e.g. at S=64, image pixel 10 -> heatmap 4.75, and heatmap cell 5 -> image 10.5.
* Unit space (coordinate targets in [0, 1]): the same square scaled to [0, 1]:
      unit = (img + 0.5) / 128                    img = unit * 128 - 0.5
  i.e. unit space is heatmap space with S = 1 shifted by half a cell.

Representations, each an encode (keypoints in img px -> target) / decode (model output -> img px) pair below:
  heatmap   : Gaussian exp(-d^2 / (2 sigma^2)), d in hm px from the float keypoint | argmax cell + optional
              sub-pixel step ('quarter': HRNet's quarter cell toward the higher neighbour).
  regression: [2K] = (x0, y0, x1, y1, ...) in unit space | reshape and map back. soft_argmax (a layer) ends in it.
"""
import math

import torch
import torch.nn.functional as F

IMG_SIZE = 128
KEYPOINT_NAMES = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
LEFT_HAND, RIGHT_HAND = 1, 2
HANDS = [LEFT_HAND, RIGHT_HAND]
HEAD_FEET = [0, 3, 4]
DECODERS = ("argmax", "quarter")  # heatmap decoders, both reported; the default is chosen on val
REFINE_DEFAULT = "quarter"  # see results/metrics.json "decoder_selection" for the val measurement behind it
HAND_LOSSES = ("strict", "symmetric")
LOSSES = ("mse", "l1", "laplace", "rle")  # laplace / rle: coordinates with a predicted scale (model.LIKELIHOOD_METHODS)


def img_to_hm(coord_img_px, hm_size, img_size=IMG_SIZE):
    """Image px -> heatmap px for a heatmap of `hm_size` cells per side."""
    return (coord_img_px + 0.5) * (hm_size / img_size) - 0.5


def hm_to_img(coord_hm_px, hm_size, img_size=IMG_SIZE):
    """Heatmap px -> image px; exact inverse of img_to_hm."""
    return (coord_hm_px + 0.5) * (img_size / hm_size) - 0.5


def img_to_unit(coord_img_px, img_size=IMG_SIZE):
    """Image px -> unit [0, 1] coordinates."""
    return (coord_img_px + 0.5) / img_size


def unit_to_img(coord_unit, img_size=IMG_SIZE):
    """Unit [0, 1] coordinates -> image px; exact inverse of img_to_unit."""
    return coord_unit * img_size - 0.5


def encode_heatmaps(kp_img_px, hm_size, sigma):
    """Gaussian heatmaps [..., K, height, width] (float32, peak 1 at the float keypoint) for keypoints [..., K, 2] in
    image px; hm_size: int or (height, width) in cells; sigma in heatmap px. Separable, no Python loop."""
    height, width = (hm_size, hm_size) if isinstance(hm_size, int) else hm_size
    kp = torch.as_tensor(kp_img_px, dtype=torch.float32)
    x_hm = img_to_hm(kp[..., 0:1], width)  # [..., K, 1]
    y_hm = img_to_hm(kp[..., 1:2], height)
    gx = torch.exp(-((torch.arange(width, dtype=torch.float32) - x_hm) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((torch.arange(height, dtype=torch.float32) - y_hm) ** 2) / (2 * sigma**2))
    return gy[..., :, None] * gx[..., None, :]


def sigma_for_peak(kp_img_px, hm_size, peak):
    """The smallest sigma (hm px) at which every keypoint's Gaussian (encode_heatmaps) reaches `peak` at its nearest
    cell centre: exp(-d^2 / (2 sigma^2)) >= peak for the largest keypoint-to-nearest-cell distance d."""
    kp_hm = img_to_hm(torch.as_tensor(kp_img_px, dtype=torch.float64), hm_size)
    d = (kp_hm - kp_hm.round().clamp(0, hm_size - 1)).norm(dim=-1).max()
    return float(d / math.sqrt(2 * math.log(1 / peak)))


def quarter_offset(patch):
    """HRNet's step: move 0.25 cell toward the higher horizontal / vertical neighbour. -> [B, K, 2]."""
    dx = torch.sign(patch[..., 1, 2] - patch[..., 1, 0])
    dy = torch.sign(patch[..., 2, 1] - patch[..., 0, 1])
    return 0.25 * torch.stack([dx, dy], -1)


def decode_heatmaps(heatmaps, refine=None):
    """Heatmaps [B, K, S, S] -> keypoints [B, K, 2] in image px: the argmax cell, then with refine='quarter' the
    quarter step computed on the 3x3 patch around it (edges replicated); None or 'argmax': no step."""
    if refine not in (None, *DECODERS):
        raise ValueError(f"refine must be None or one of {DECODERS}, got {refine!r}")
    heatmaps = heatmaps.float()
    b, k, h, w = heatmaps.shape
    idx = heatmaps.flatten(2).argmax(-1)
    x, y = idx % w, idx // w
    kp_hm = torch.stack([x, y], -1).float()
    if refine == "quarter":
        padded = F.pad(heatmaps, (1, 1, 1, 1), mode="replicate").flatten(2)
        offsets = torch.tensor([dy * (w + 2) + dx for dy in range(3) for dx in range(3)])
        patch = padded.gather(2, (y * (w + 2) + x)[..., None] + offsets).view(b, k, 3, 3)
        kp_hm = kp_hm + quarter_offset(patch)
    return hm_to_img(kp_hm, w)


def soft_argmax(logits):
    """Expected (x, y) under a spatial softmax of each channel: [B, K, S, S] -> [B, 2K] in unit space
    (cell centres mapped with the convention above, so a centred symmetric blob decodes to its centre)."""
    probs = logits.float().flatten(2).softmax(-1).view(logits.shape)
    s = probs.shape[-1]
    centres = img_to_unit(hm_to_img(torch.arange(s, dtype=probs.dtype, device=probs.device), s))
    x_unit = (probs.sum(2) * centres).sum(-1)  # marginal over rows -> expected x
    y_unit = (probs.sum(3) * centres).sum(-1)
    return torch.stack([x_unit, y_unit], -1).flatten(1)


def heatmap_mean(heatmaps):
    """A heatmap's soft read-out: the mean (x, y) under each channel's positive part normalised to sum 1 (the
    integral read-out of a heatmap): [B, K, S, S] -> keypoints [B, K, 2] in image px (a channel with no positive
    value reads as the map's centre)."""
    w = heatmaps.float().clamp(min=0)
    s = w.shape[-1]
    w = torch.where(w.flatten(2).sum(-1)[..., None, None] > 0, w, torch.ones_like(w))
    w = w / w.flatten(2).sum(-1)[..., None, None]
    centres = hm_to_img(torch.arange(s, dtype=w.dtype, device=w.device), s)
    return torch.stack([(w.sum(2) * centres).sum(-1), (w.sum(3) * centres).sum(-1)], -1)


def encode(target, kp_img_px, hm_size=64, sigma=2.0):
    """Training targets of representation `target` ('heatmap' | 'regression') for keypoints in image px."""
    if target == "heatmap":
        return encode_heatmaps(kp_img_px, hm_size, sigma)
    if target == "regression":  # [..., 2K] = (x0, y0, x1, y1, ...) in unit space
        return img_to_unit(torch.as_tensor(kp_img_px, dtype=torch.float32)).flatten(-2)
    raise ValueError(f"target must be 'heatmap' or 'regression', got {target!r}")


def decode(target, outputs, refine=REFINE_DEFAULT):
    """Model outputs of representation `target` -> keypoints [B, K, 2] in image px."""
    if target == "heatmap":
        return decode_heatmaps(outputs, refine)
    if target == "regression":  # a likelihood head's scale columns (after the 2K coordinates) are dropped
        return unit_to_img(outputs[:, :2 * NUM_KEYPOINTS].float().reshape(len(outputs), -1, 2))
    raise ValueError(f"target must be 'heatmap' or 'regression', got {target!r}")


def swap_hands(x, dim=1):
    """x with its left_hand and right_hand entries swapped along `dim` (keypoint axis)."""
    idx = list(range(x.shape[dim]))
    idx[LEFT_HAND], idx[RIGHT_HAND] = RIGHT_HAND, LEFT_HAND
    return x.index_select(dim, torch.tensor(idx, device=x.device))


def hand_gap(kp_img_px):
    """Distance between the two hands [N] in px (predicted or true)."""
    kp = torch.as_tensor(kp_img_px, dtype=torch.float64)
    return (kp[:, LEFT_HAND] - kp[:, RIGHT_HAND]).norm(dim=-1)


def canonicalize_hands(kp):
    """Relabel hands so left_hand is the one with the smaller x (ties keep their order). kp: [..., K, 2]."""
    swap = kp[..., LEFT_HAND, 0] > kp[..., RIGHT_HAND, 0]
    return torch.where(swap[..., None, None], swap_hands(kp, dim=-2), kp)


def per_keypoint_loss(outputs, targets, loss="mse", flow=None):
    """Loss per image and keypoint [B, K]. mse / l1: over the keypoint's cells or its 2 unit coordinates.
    laplace / rle (coordinates only): outputs [B, 4K] = 2K coordinates, then 2K scale logits, sigma = sigmoid(logit);
    laplace: log(2 sigma) + |err| / sigma; rle (Li et al. 2021, as their released code): that plus
    log sigma - log G(err / sigma), G the density of `flow` (model.RealNVP). Means over the 2 coordinates."""
    b = len(outputs)
    if loss in ("mse", "l1"):
        diff = outputs.reshape(b, NUM_KEYPOINTS, -1) - targets.reshape(b, NUM_KEYPOINTS, -1)
        return (diff.pow(2) if loss == "mse" else diff.abs()).mean(-1)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    mu = outputs[:, :2 * NUM_KEYPOINTS].reshape(b, NUM_KEYPOINTS, 2)
    sigma = outputs[:, 2 * NUM_KEYPOINTS:].reshape(b, NUM_KEYPOINTS, 2).sigmoid() + 1e-9
    e = (mu - targets.reshape(b, NUM_KEYPOINTS, 2)) / sigma             # normalised residual
    nll = torch.log(2 * sigma) + e.abs()                               # Laplace NLL per coordinate
    if loss == "rle":
        nll = nll + torch.log(sigma) - flow.log_prob(e.reshape(-1, 2)).reshape(b, NUM_KEYPOINTS, 1)
    return nll.mean(-1)


def keypoint_loss(outputs, targets, hand_loss="strict", loss="mse", flow=None):
    """The training loss: per_keypoint_loss averaged over images and keypoints (strict 'mse' is F.mse_loss, the
    spec). hand_loss='symmetric': per image, the two hand channels are scored in the better of {as labelled,
    swapped}; head and feet unchanged, so a perfectly labelled batch gives the strict value."""
    outputs = outputs.float()
    if hand_loss not in HAND_LOSSES:
        raise ValueError(f"hand_loss must be one of {HAND_LOSSES}, got {hand_loss!r}")
    if hand_loss == "strict" and loss == "mse":
        return F.mse_loss(outputs, targets)  # the spec, literally
    per_kp = per_keypoint_loss(outputs, targets, loss, flow)                                    # [B, K]
    if hand_loss == "strict":
        return per_kp.mean()
    b = len(outputs)
    swapped = swap_hands(targets.reshape(b, NUM_KEYPOINTS, -1)).reshape(targets.shape)
    per_kp_swapped = per_keypoint_loss(outputs, swapped, loss, flow)
    hands = torch.minimum(per_kp[:, HANDS].sum(1), per_kp_swapped[:, HANDS].sum(1))  # [B]
    return (per_kp[:, HEAD_FEET].sum(1) + hands).mean() / NUM_KEYPOINTS
