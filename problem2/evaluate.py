"""Decoding, metrics and figures; `python evaluate.py` evaluates both trained models on the test split.

Every coordinate this file returns or reports is in 128-px image space (dataset.py's convention).

PCK (compute_pck): keypoint k of image i is correct when ||pred - gt|| <= threshold * norm_i
(distance in image px; a 1e-6 px tolerance absorbs float rounding), where norm_i is
  'bbox' : the diagonal of the axis-aligned bounding box of image i's ground-truth keypoints;
  'torso': the distance from the head to the midpoint of the two feet. The figures have no hip or
           shoulder keypoints; in the course distribution this length is the constant
           sqrt(0^2 + 57^2) = 57 px (head at cy-20, feet at cy+37), so torso-PCK is a fixed-radius PCK.
Strict matching uses the labels as given (what the assignment asks). Symmetric matching scores the
(left_hand, right_hand) pair in whichever order is closer to the ground truth (minimum summed
distance), because the hand labels of this data are ambiguous by construction (see dataset.py).
AUC = area under PCK(threshold) for threshold in [0, 0.2], divided by 0.2 (1.0 = perfect).

metrics.json schema (written by main):
  {"split", "num_images", "thresholds", "refine_default",
   "<method>": {"checkpoint": {...}, "decoders": {"<decoder>": {
        "<matching: strict|symmetric>": {
            "mean_px_error", "median_px_error", "per_keypoint_px_error": {name: px},
            "pck": {"bbox"|"torso": {thr: acc}}, "auc": {"bbox"|"torso": auc},
            "pck_per_keypoint": {"bbox"|"torso": {name: {thr: acc}}}}}}}}
  method: heatmap (decoders argmax / quarter / dark), regression and, when trained, integral (decoder direct).
"""
import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dataset import (KEYPOINT_NAMES, LEFT_HAND, RIGHT_HAND, atomic_write_bytes, atomic_write_json, hm_to_img, load_split,
                     make_loader, record_timing, resolve_keypoints_dir, unit_to_img)
from model import autocast, load_checkpoint, pick_device, prepare_input

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
PCK_THRESHOLDS = [0.05, 0.1, 0.15, 0.2]
DENSE_THRESHOLDS = np.round(np.linspace(0, 0.3, 61), 4).tolist()
# Chosen by measurement on val (64x64, spec model): mean px error argmax 3.04, quarter 2.56, dark 2.66.
# Quarter wins because the labels are integers: 64-grid cells are centred on half-integer image px, and a
# 0.25 heatmap-px step (= 0.5 image px) lands exactly on the label lattice. For continuous positions DARK is
# the better estimator (exact on Gaussians, see tests); metrics.json reports all three side by side.
REFINE_DEFAULT = "quarter"
DECODERS = ("argmax", "quarter", "dark")


# ----------------------------------------------------------------------------- decoding
def _argmax_hm(heatmaps):
    """Integer argmax per channel: [B, K, H, W] -> x, y (long tensors [B, K]) in heatmap px."""
    w = heatmaps.shape[-1]
    idx = heatmaps.flatten(2).argmax(-1)
    return idx % w, idx // w


def _patch3x3(heatmaps, x, y):
    """The 3x3 neighbourhood around (x, y) per channel (edge-replicated): [B, K, 3, 3]."""
    b, k, h, w = heatmaps.shape
    padded = F.pad(heatmaps.float(), (1, 1, 1, 1), mode="replicate").flatten(2)
    offsets = torch.tensor([dy * (w + 2) + dx for dy in range(3) for dx in range(3)])
    idx = (y * (w + 2) + x)[..., None] + offsets
    return padded.gather(2, idx).view(b, k, 3, 3)


def quarter_offset(patch):
    """HRNet's step: move 0.25 px toward the higher horizontal / vertical neighbour. -> [B, K, 2]."""
    dx = torch.sign(patch[..., 1, 2] - patch[..., 1, 0])
    dy = torch.sign(patch[..., 2, 1] - patch[..., 0, 1])
    return 0.25 * torch.stack([dx, dy], -1)


def dark_offset(patch, eps=1e-10):
    """DARK (Zhang et al. 2020): one Newton step on the log-heatmap, -H^-1 grad, from 3x3 central
    differences. Exact for a Gaussian peak; zero where the Hessian is not negative definite."""
    L = patch.clamp_min(eps).log()
    gx = (L[..., 1, 2] - L[..., 1, 0]) / 2
    gy = (L[..., 2, 1] - L[..., 0, 1]) / 2
    hxx = L[..., 1, 2] - 2 * L[..., 1, 1] + L[..., 1, 0]
    hyy = L[..., 2, 1] - 2 * L[..., 1, 1] + L[..., 0, 1]
    hxy = (L[..., 2, 2] - L[..., 2, 0] - L[..., 0, 2] + L[..., 0, 0]) / 4
    det = hxx * hyy - hxy**2
    ok = (det > 1e-12) & (hxx < 0)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    ox = -(hyy * gx - hxy * gy) / safe_det
    oy = -(hxx * gy - hxy * gx) / safe_det
    offset = torch.stack([ox, oy], -1).clamp(-1, 1)
    return torch.where(ok[..., None], offset, torch.zeros_like(offset))


def extract_keypoints_from_heatmaps(heatmaps, refine=None):
    """Keypoints from heatmaps [B, K, H, W] -> [B, K, 2] (x, y) in 128-px IMAGE space.

    Argmax cell per channel, optionally refined to sub-pixel ('quarter' = HRNet quarter-pixel step,
    'dark' = Taylor step on the log-heatmap), then mapped with dataset.hm_to_img (any H = W).
    """
    heatmaps = heatmaps.float()
    return cells_to_img(heatmaps, *_argmax_hm(heatmaps), refine)


def cells_to_img(heatmaps, x, y, refine=None):
    """Chosen cells (x, y: long [B, K]) of heatmaps [B, K, H, W] -> [B, K, 2] image px, after the optional
    sub-pixel step computed around each cell (shared by every heatmap decoder)."""
    kp_hm = torch.stack([x, y], -1).float()
    if refine in ("quarter", "dark"):
        patch = _patch3x3(heatmaps, x, y)
        kp_hm = kp_hm + (quarter_offset(patch) if refine == "quarter" else dark_offset(patch))
    elif refine not in (None, "argmax"):
        raise ValueError(f"refine must be None, 'argmax', 'quarter' or 'dark', got {refine!r}")
    return hm_to_img(kp_hm, heatmaps.shape[-1])


def decode_outputs(outputs, output_type, refine=REFINE_DEFAULT):
    """Model outputs -> keypoints [B, K, 2] in image px (heatmaps decoded, unit coords rescaled)."""
    if output_type == "heatmap":
        return extract_keypoints_from_heatmaps(outputs, refine)
    return unit_to_img(outputs.float().reshape(len(outputs), -1, 2))


@torch.no_grad()
def run_model(model, loader, device="cpu", precision="fp32"):
    """Raw outputs of `model` over a non-shuffled loader, concatenated on the CPU as float32."""
    model.eval()
    outputs = []
    for images, _ in loader:
        with autocast(device, precision):
            outputs.append(model(prepare_input(images, device)).float().cpu())
    return torch.cat(outputs)


# ----------------------------------------------------------------------------- metrics
def keypoint_distances(predictions, ground_truths, symmetric=False):
    """Per-keypoint Euclidean errors [N, K] in px. symmetric=True scores the hand pair in the better
    of its two label orders (minimum summed hand distance), per image."""
    pred = torch.as_tensor(predictions, dtype=torch.float64)
    gt = torch.as_tensor(ground_truths, dtype=torch.float64)
    dist = (pred - gt).norm(dim=-1)
    if symmetric:
        swapped = pred.clone()
        swapped[:, [LEFT_HAND, RIGHT_HAND]] = pred[:, [RIGHT_HAND, LEFT_HAND]]
        dist_sw = (swapped - gt).norm(dim=-1)
        hands = [LEFT_HAND, RIGHT_HAND]
        use_sw = dist_sw[:, hands].sum(1) < dist[:, hands].sum(1)
        dist = torch.where(use_sw[:, None], dist_sw, dist)
    return dist


def pck_normalizer(ground_truths, normalize_by="bbox"):
    """Per-image normaliser [N] in px: 'bbox' diagonal of GT keypoints, or 'torso' head-to-mid-feet."""
    gt = torch.as_tensor(ground_truths, dtype=torch.float64)
    if normalize_by == "bbox":
        return (gt.amax(1) - gt.amin(1)).norm(dim=-1)
    if normalize_by == "torso":
        head = gt[:, KEYPOINT_NAMES.index("head")]
        feet = gt[:, [KEYPOINT_NAMES.index("left_foot"), KEYPOINT_NAMES.index("right_foot")]].mean(1)
        return (head - feet).norm(dim=-1)
    raise ValueError(f"normalize_by must be 'bbox' or 'torso', got {normalize_by!r}")


def pck_matrix(predictions, ground_truths, thresholds, normalize_by="bbox", symmetric=False):
    """Correctness [T, N, K] (bool) of every keypoint at every threshold."""
    dist = keypoint_distances(predictions, ground_truths, symmetric)
    norm = pck_normalizer(ground_truths, normalize_by)
    thr = torch.as_tensor(thresholds, dtype=torch.float64)
    return dist[None] <= thr[:, None, None] * norm[None, :, None] + 1e-6


def compute_pck(predictions, ground_truths, thresholds, normalize_by='bbox', symmetric=False):
    """PCK: fraction of keypoints within threshold * normaliser of the ground truth.

    predictions, ground_truths: [N, K, 2] in image px. normalize_by: 'bbox' (diagonal of the GT
    keypoints' bounding box) or 'torso' (head to midpoint of the feet; 57 px in course data).
    symmetric: match the two hands in the better order (see module docstring). Returns {thr: acc}.
    """
    ok = pck_matrix(predictions, ground_truths, thresholds, normalize_by, symmetric)
    return {float(t): float(a) for t, a in zip(thresholds, ok.double().mean((1, 2)))}


def pck_auc(predictions, ground_truths, normalize_by="bbox", symmetric=False, max_threshold=0.2):
    """Area under PCK over [0, max_threshold] (dense grid, trapezoid), normalised to [0, 1]."""
    thr = np.linspace(0, max_threshold, 81)
    pck = list(compute_pck(predictions, ground_truths, thr, normalize_by, symmetric).values())
    return float(np.trapezoid(pck, thr) / max_threshold)


def summarize(predictions, ground_truths, thresholds=PCK_THRESHOLDS):
    """All reported numbers for one set of predictions: strict and symmetric (schema above)."""
    out = {}
    for matching, sym in (("strict", False), ("symmetric", True)):
        dist = keypoint_distances(predictions, ground_truths, sym)
        entry = {"mean_px_error": float(dist.mean()), "median_px_error": float(dist.median()),
                 "per_keypoint_px_error": {n: float(d) for n, d in zip(KEYPOINT_NAMES, dist.mean(0))},
                 "pck": {}, "auc": {}, "pck_per_keypoint": {}}
        for norm in ("bbox", "torso"):
            ok = pck_matrix(predictions, ground_truths, thresholds, norm, sym).double()
            entry["pck"][norm] = {str(t): float(a) for t, a in zip(thresholds, ok.mean((1, 2)))}
            entry["auc"][norm] = pck_auc(predictions, ground_truths, norm, sym)
            per_kp = ok.mean(1)  # [T, K]
            entry["pck_per_keypoint"][norm] = {
                n: {str(t): float(per_kp[i, j]) for i, t in enumerate(thresholds)} for j, n in enumerate(KEYPOINT_NAMES)}
        out[matching] = entry
    return out


# ----------------------------------------------------------------------------- figures
KP_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd"]  # head, l/r hand, l/r foot


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, save_path):
    """Write a figure as PNG atomically (never a half-written file) and close it."""
    save_path = Path(save_path)
    save_path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(save_path, buf.getvalue())
    _plt().close(fig)


def plot_pck_curves(pck_heatmap, pck_regression, save_path, normalize_by="bbox", extra_curves=None):
    """PCK vs threshold for both methods. pck_*: {threshold: accuracy} (any grid; a dense one reads
    best); extra_curves: optional {label: {threshold: accuracy}} drawn dashed (e.g. symmetric PCK).
    The assignment's thresholds are marked with dotted vertical lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    curves = [("HeatmapNet", pck_heatmap, "-", "C0"), ("RegressionNet", pck_regression, "-", "C3")]
    curves += [(label, c, "--", f"C{i + 4}") for i, (label, c) in enumerate((extra_curves or {}).items())]
    for label, pck, style, color in curves:
        t = sorted(float(k) for k in pck)
        ax.plot(t, [pck[k] for k in sorted(pck, key=float)], style, color=color, label=label, lw=2)
    for t in PCK_THRESHOLDS:
        ax.axvline(t, color="0.7", ls=":", lw=1)
    ax.set(xlabel=f"threshold (fraction of {'bbox diagonal' if normalize_by == 'bbox' else 'torso length'})",
           ylabel="PCK (fraction of keypoints correct)", ylim=(0, 1.02), xlim=(0, max(float(k) for k in pck_heatmap)),
           title=f"PCK curves on the test split ({normalize_by}-normalised)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, save_path)


def draw_keypoints(ax, image, pred_keypoints, gt_keypoints, title=None):
    """Image with GT (circles) and predictions (crosses) per keypoint, joined by error lines."""
    ax.imshow(np.asarray(image).squeeze(), cmap="gray", vmin=0, vmax=1)
    pred_keypoints, gt_keypoints = np.asarray(pred_keypoints), np.asarray(gt_keypoints)
    for k, name in enumerate(KEYPOINT_NAMES):
        gx, gy = gt_keypoints[k]
        px, py = pred_keypoints[k]
        ax.plot([gx, px], [gy, py], "-", color=KP_COLORS[k], lw=1)
        ax.plot(gx, gy, "o", mfc="none", mec=KP_COLORS[k], ms=8, mew=1.5)
        ax.plot(px, py, "x", color=KP_COLORS[k], ms=7, mew=2, label=name)
    ax.set_xlim(-0.5, 127.5)
    ax.set_ylim(127.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def visualize_predictions(image, pred_keypoints, gt_keypoints, save_path):
    """One image [1, 128, 128] with predictions (x) and ground truth (o) per keypoint, in image px."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4))
    err = np.linalg.norm(np.asarray(pred_keypoints) - np.asarray(gt_keypoints), axis=-1).mean()
    draw_keypoints(ax, image, pred_keypoints, gt_keypoints, f"mean error {err:.2f} px  (o = GT, x = prediction)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    _save(fig, save_path)


def plot_sample_predictions(images, preds_by_method, gt_keypoints, save_path):
    """Grid: one row per method, one column per image; errors (strict, px) in each title."""
    plt = _plt()
    n, m = len(images), len(preds_by_method)
    fig, axes = plt.subplots(m, n, figsize=(2.3 * n, 2.9 * m), squeeze=False)
    for r, (method, preds) in enumerate(preds_by_method.items()):
        for c in range(n):
            err = (preds[c] - gt_keypoints[c]).norm(dim=-1).mean()
            draw_keypoints(axes[r, c], images[c], preds[c], gt_keypoints[c], f"{method}: {err:.1f} px")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(KEYPOINT_NAMES), fontsize=8)
    fig.suptitle("Test predictions (o = ground truth, x = prediction, line = error)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96), h_pad=2.0)
    _save(fig, save_path)


def plot_heatmap_stages(snapshots, save_path):
    """Predicted heatmaps of one val image at the epochs train.py snapshotted: a row per epoch,
    the image plus one column per keypoint (GT marked)."""
    plt = _plt()
    epochs, heatmaps = snapshots["epochs"], snapshots["heatmaps"][:, 0].float().numpy()  # [E, K, H, W]
    image, gt = snapshots["images"][0].numpy(), snapshots["keypoints"][0].numpy()
    k, hm_size = heatmaps.shape[1], heatmaps.shape[-1]
    fig, axes = plt.subplots(len(epochs), k + 1, figsize=(1.9 * (k + 1), 1.9 * len(epochs)), squeeze=False)
    for r, epoch in enumerate(epochs):
        axes[r, 0].imshow(image.squeeze(), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(f"epoch {epoch}", fontsize=10)
        for j in range(k):
            ax = axes[r, j + 1]
            ax.imshow(heatmaps[r, j], cmap="magma", vmin=0, vmax=1, extent=(-0.5, 127.5, 127.5, -0.5))
            ax.plot(*gt[j], "c+", ms=8, mew=1.5)
            ax.set_title(f"{KEYPOINT_NAMES[j]}  max {heatmaps[r, j].max():.2f}", fontsize=8) if r == 0 else \
                ax.set_title(f"max {heatmaps[r, j].max():.2f}", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("input", fontsize=8)
    fig.suptitle(f"HeatmapNet predictions on a val image during training ({hm_size}x{hm_size}, "
                 f"colour 0..1, + = ground truth)", fontsize=10)
    fig.tight_layout()
    _save(fig, save_path)


def plot_training_curves(training_log, save_path):
    """Train/val loss per method (log scale) and val pixel error per epoch for both methods."""
    plt = _plt()
    methods = [m for m in ("heatmap", "regression", "integral") if m in training_log]
    fig, axes = plt.subplots(1, len(methods) + 1, figsize=(5 * (len(methods) + 1), 3.8))
    for ax, method in zip(axes, methods):
        hist = training_log[method]["epochs"]
        ep = [h["epoch"] for h in hist]
        ax.plot(ep, [h["train_loss"] for h in hist], label="train")
        ax.plot(ep, [h["val_loss"] for h in hist], label="val")
        ax.axvline(training_log[method]["best_epoch"], color="0.6", ls=":", label="best (saved)")
        ax.set(yscale="log", xlabel="epoch", ylabel="MSE loss", title=f"{method}: loss")
        ax.legend()
        ax.grid(alpha=0.3)
    for method, color in zip(methods, ("C0", "C3", "C4")):
        hist = training_log[method]["epochs"]
        axes[-1].plot([h["epoch"] for h in hist], [h["val_px_error"] for h in hist], color=color, label=method)
    axes[-1].set(xlabel="epoch", ylabel="mean error (px, 128-px image)", title="val pixel error", yscale="log")
    axes[-1].legend()
    axes[-1].grid(alpha=0.3, which="both")
    fig.tight_layout()
    _save(fig, save_path)


# ----------------------------------------------------------------------------- main
def print_metrics_table(metrics, methods):
    """Compact table: PCK (bbox) strict/symmetric at the four thresholds and mean px error, per decoder."""
    print(f"\n{metrics['split']} split, {metrics['num_images']} images; PCK (bbox) strict/symmetric, mean px error")
    print(f"{'method':<11}{'decoder':<8}" + "".join(f"{'@' + str(t):>13}" for t in PCK_THRESHOLDS) + f"{'px err':>14}")
    for method in methods:
        for dec, m in metrics[method]["decoders"].items():
            s, y = m["strict"], m["symmetric"]
            cells = "".join(f"{s['pck']['bbox'][str(t)]:>6.3f}/{y['pck']['bbox'][str(t)]:<6.3f}" for t in PCK_THRESHOLDS)
            print(f"{method:<11}{dec:<8}{cells}{s['mean_px_error']:>7.2f}/{y['mean_px_error']:<6.2f}")


def require(path, how):
    """Fail with a message naming the missing file and the command that makes it."""
    if not Path(path).exists():
        raise SystemExit(f"error: {path} not found; run `{how}` first")


def predict_all_decoders(model, dataset, device="cpu", precision="fp32", batch_size=64):
    """{decoder: kp_img_px [N, K, 2]} of a model on `dataset`: every heatmap decoder, or 'direct'."""
    outputs = run_model(model.to(device), make_loader(dataset, batch_size), device, precision)
    if model.output_type == "heatmap":
        return {d: decode_outputs(outputs, "heatmap", d) for d in DECODERS}
    return {"direct": decode_outputs(outputs, "regression")}


def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate the trained HeatmapNet and RegressionNet on the test split: "
                                "metrics.json + figures in results/visualizations/.")
    p.add_argument("--data-dir", default=None, help="course-layout folder (default: generated problem2/data)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where checkpoints/logs are read and written")
    p.add_argument("--split", default="test", help="split to report on (default: test; val selected checkpoints)")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-samples", type=int, default=6, help="images in the sample-prediction figure")
    args = p.parse_args(argv)
    t0 = time.time()
    out_dir, vis_dir = args.out_dir, args.out_dir / "visualizations"
    for name in ("heatmap_model.pth", "regression_model.pth", "training_log.json"):
        require(out_dir / name, "python problem2/train.py")
    device = pick_device(args.device)
    precision = "fp32"  # evaluation is cheap; report numbers free of reduced-precision noise
    kp_dir = resolve_keypoints_dir(args.data_dir)

    methods = ["heatmap", "regression"] + (["integral"] if (out_dir / "integral_model.pth").exists() else [])
    metrics = {"split": args.split, "thresholds": PCK_THRESHOLDS, "refine_default": REFINE_DEFAULT}
    preds = {}
    for method in methods:
        model, ckpt = load_checkpoint(out_dir / f"{method}_model.pth")
        data_cfg = ckpt.get("data", {})
        ds = load_split(kp_dir, args.split, "heatmap" if method == "heatmap" else "regression",
                        ckpt["config"].get("hm_size", 64), data_cfg.get("sigma", 2.0),
                        data_cfg.get("canonical_hands", False))
        preds[method] = predict_all_decoders(model, ds, device, precision)
        metrics["num_images"] = len(ds)
        metrics[method] = {"checkpoint": {k: ckpt[k] for k in ("epoch", "val_loss", "val_px_error") if k in ckpt},
                           "decoders": {d: summarize(kp, ds.keypoints) for d, kp in preds[method].items()}}
    atomic_write_json(out_dir / "metrics.json", metrics)
    print_metrics_table(metrics, methods)

    # figures
    gt = ds.keypoints
    final = {m: preds[m][REFINE_DEFAULT if m == "heatmap" else "direct"] for m in methods}
    for norm in ("bbox", "torso"):
        dense = {m: {sym: compute_pck(final[m], gt, DENSE_THRESHOLDS, norm, sym) for sym in (False, True)}
                 for m in methods}
        extra = {"HeatmapNet (symmetric hands)": dense["heatmap"][True],
                 "RegressionNet (symmetric hands)": dense["regression"][True]}
        if "integral" in methods:
            extra["IntegralNet (soft-argmax)"] = dense["integral"][False]
        plot_pck_curves(dense["heatmap"][False], dense["regression"][False], vis_dir / f"pck_curves_{norm}.png",
                        norm, extra)
    idx = list(range(min(args.num_samples, len(gt))))
    plot_sample_predictions(ds.images[idx], {m: final[m][idx] for m in methods}, gt[idx],
                            vis_dir / "sample_predictions.png")
    visualize_predictions(ds.images[0], final["heatmap"][0], gt[0], vis_dir / "example_heatmap_prediction.png")
    snap_path = out_dir / "heatmap_snapshots.pt"
    if snap_path.exists():
        plot_heatmap_stages(torch.load(snap_path, weights_only=True), vis_dir / "heatmaps_training_stages.png")
    plot_training_curves(json.loads((out_dir / "training_log.json").read_text()), vis_dir / "training_curves.png")
    record_timing(out_dir, "evaluate.py", time.time() - t0)
    print(f"\nwrote {out_dir / 'metrics.json'} and figures in {vis_dir}")
    return metrics


if __name__ == "__main__":
    sys.exit(main() and 0)
