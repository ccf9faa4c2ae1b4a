"""The figures evaluate.py draws besides the assignment's own (plot_pck_curves, visualize_predictions): the
prediction grid, heatmaps during training and the training curves. Coordinates in 128-px image px."""
import numpy as np
import torch

from codec import IMG_SIZE, KEYPOINT_NAMES, decode, hand_gap, img_to_hm
from common import plt, save_figure
from model import METHODS

KP_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd"]  # head, l/r hand, l/r foot


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
    ax.set(xlim=(-0.5, 127.5), ylim=(127.5, -0.5), xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=9)


def prediction_grid(images, preds_by_method, gt_keypoints, save_path, scale=4, nrow=4, split="test"):
    """Many images at a glance, drawn with torchvision (draw_keypoints, make_grid): per image the ground truth as
    large green dots and each method's keypoints as smaller dots on top (first method red, second blue, third
    purple), upscaled `scale`x (nearest), with a colour key above. Keypoints are mapped to the upscaled image by the
    codec's convention (an image `scale` x 128 px wide is a grid of that many cells over the same square)."""
    from matplotlib.lines import Line2D
    from torchvision.utils import draw_keypoints, make_grid
    colours = [(220, 30, 30), (30, 80, 235), (150, 60, 200)]
    tiles = []
    for i in range(len(images)):
        img = (images[i].expand(3, -1, -1) * 255).round().to(torch.uint8)
        img = img.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        up = lambda kp: img_to_hm(kp, IMG_SIZE * scale)[None].float()  # noqa: E731  image px -> upscaled px
        img = draw_keypoints(img, up(gt_keypoints[i]), colors=(40, 180, 60), radius=2 * scale)
        for colour, preds in zip(colours, preds_by_method.values()):
            img = draw_keypoints(img, up(preds[i]), colors=colour, radius=scale)
        tiles.append(img)
    grid = make_grid(tiles, nrow=nrow, padding=2 * scale, pad_value=150).permute(1, 2, 0).numpy()
    fig, ax = plt().subplots(figsize=(grid.shape[1] / 110, grid.shape[0] / 110 + 0.5))
    ax.imshow(grid)
    ax.axis("off")
    key = [("ground truth", (40, 180, 60))] + [(METHODS[m]["name"] if m in METHODS else m, c)
                                                for m, c in zip(preds_by_method, colours)]
    ax.legend(handles=[Line2D([], [], marker="o", ls="", ms=9, color=np.array(c) / 255, label=label)
                       for label, c in key], loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(key),
              frameon=False, fontsize=11, title=f"the first {len(images)} images of the {split} split")
    save_figure(fig, save_path)


def plot_heatmap_stages(snapshots, save_path):
    """Predicted heatmaps of one val image at the epochs train.py snapshotted: a row per epoch, the image plus one
    column per keypoint (GT marked). The image is the snapshotted one whose true hands are furthest apart, so the two
    hand heatmaps' peaks can be told apart; x marks each heatmap's decoded prediction."""
    gaps = hand_gap(snapshots["keypoints"])
    i = int(gaps.argmax())
    epochs, heatmaps = snapshots["epochs"], snapshots["heatmaps"][:, i].float().numpy()  # [E, K, H, W]
    preds = decode("heatmap", snapshots["heatmaps"][:, i].float()).numpy()  # [E, K, 2] image px, the default decoder
    image, gt = snapshots["images"][i].numpy(), snapshots["keypoints"][i].numpy()
    k, hm_size = heatmaps.shape[1], heatmaps.shape[-1]
    fig, axes = plt().subplots(len(epochs), k + 1, figsize=(1.9 * (k + 1), 1.9 * len(epochs)), squeeze=False)
    for r, epoch in enumerate(epochs):
        axes[r, 0].imshow(image.squeeze(), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(f"epoch {epoch}", fontsize=10)
        for j in range(k):
            ax = axes[r, j + 1]
            ax.imshow(heatmaps[r, j], cmap="magma", vmin=0, vmax=1, extent=(-0.5, 127.5, 127.5, -0.5))
            ax.plot(*gt[j], "c+", ms=8, mew=1.5)
            ax.plot(*preds[r, j], "wx", ms=7, mew=1.5)
            ax.set_title(f"{KEYPOINT_NAMES[j] + '  ' if r == 0 else ''}max {heatmaps[r, j].max():.2f}", fontsize=8)
    plt().setp(axes, xticks=[], yticks=[])
    axes[0, 0].set_title("input", fontsize=8)
    fig.suptitle(f"HeatmapNet predictions on val image {i} during training ({hm_size}x{hm_size}, colour scale 0 to 1, "
                 f"clipped; + = ground truth, x = prediction; true hands {gaps[i]:.1f} px apart)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, save_path)


def plot_heatmap_stages_all(snapshots, save_path):
    """Predicted heatmaps of every val image train.py snapshotted, at each snapshotted epoch: a row per image, the
    image plus one column per epoch showing the largest of its keypoints' heatmaps at each pixel (GT marked)."""
    epochs, heatmaps = snapshots["epochs"], snapshots["heatmaps"].float().amax(2).numpy()  # [E, N, H, W]
    images, gt = snapshots["images"].numpy(), snapshots["keypoints"].numpy()
    n, hm_size = len(images), heatmaps.shape[-1]
    fig, axes = plt().subplots(n, len(epochs) + 1, figsize=(1.9 * (len(epochs) + 1), 1.9 * n + 0.4), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i].squeeze(), cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(f"val image {i}", fontsize=10)
        for c, epoch in enumerate(epochs):
            ax = axes[i, c + 1]
            ax.imshow(heatmaps[c, i], cmap="magma", vmin=0, vmax=1, extent=(-0.5, 127.5, 127.5, -0.5))
            ax.plot(gt[i, :, 0], gt[i, :, 1], "c+", ms=7, mew=1.2)
            if i == 0:
                ax.set_title(f"epoch {epoch}", fontsize=10)
    plt().setp(axes, xticks=[], yticks=[])
    axes[0, 0].set_title("input", fontsize=10)
    fig.suptitle(f"HeatmapNet's predicted heatmaps during training, all {n} val images saved ({hm_size}x{hm_size}; "
                 "each pixel: the largest of the 5 keypoints' heatmaps;\ncolour scale 0 to 1, clipped; + = ground "
                 "truth)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, save_path)


def plot_training_curves(training_log, save_path):
    """Train/val loss per method (log scale) and val pixel error per epoch for both methods."""
    methods = [m for m in METHODS if m in training_log]
    fig, axes = plt().subplots(1, len(methods) + 1, figsize=(5 * (len(methods) + 1), 3.8))
    for ax, method in zip(axes, methods):
        hist = training_log[method]["epochs"]
        ep = [h["epoch"] for h in hist]
        ax.plot(ep, [h["train_loss"] for h in hist], label="train")
        ax.plot(ep, [h["val_loss"] for h in hist], label="val")
        ax.axvline(training_log[method]["best_epoch"], color="0.6", ls=":", label="best (saved)")
        loss = training_log[method]["recipe"].get("loss", "mse")
        positive = all(h["train_loss"] > 0 and h["val_loss"] > 0 for h in hist)  # likelihoods can be < 0
        ax.set(yscale="log" if positive else "linear", xlabel="epoch", title=f"{method}: loss",
               ylabel=f"{'MSE' if loss == 'mse' else loss} loss")
        ax.legend()
        ax.grid(alpha=0.3)
    for method, color in zip(methods, ("C0", "C3", "C4")):
        hist = training_log[method]["epochs"]
        axes[-1].plot([h["epoch"] for h in hist], [h["val_px_error"] for h in hist], color=color, label=method)
    axes[-1].set(xlabel="epoch", ylabel="mean error (px, 128-px image)", title="val pixel error", yscale="log")
    axes[-1].legend()
    axes[-1].grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_figure(fig, save_path)
