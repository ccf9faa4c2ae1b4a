"""Decoding, metrics and figures; `python evaluate.py` scores the methods train.py's last run trained (its
training_log.json) on the test split, after checking their checkpoints (load_run_checkpoints). Every coordinate here
is in 128-px image space (codec.py's convention).

PCK (compute_pck): keypoint k of image i is correct when ||pred - gt|| <= threshold * norm_i (image px; a 1e-6
px tolerance absorbs float rounding), with norm_i
  'bbox' : the diagonal of the bounding box of image i's ground-truth keypoints;
  'torso': head to the midpoint of the feet; constant (57 px) in the course distribution, so a fixed radius.
Strict matching uses the labels as given; symmetric matching scores (left_hand, right_hand) in whichever order is
closer (the hand labels of this data are ambiguous by construction).
metrics.json: {"split", "num_images", "thresholds", "refine_default", "provenance", "normaliser_px" (mean bbox
diagonal and torso length, px), "decoder_selection" (px per decoder on val), "<method>": {"checkpoint", "decoders":
{"<decoder>": summarize()}, "exact_fraction" (keypoints decoded to their label exactly, default decoder)}}.
"""
import os
import time
from pathlib import Path

import numpy as np
import torch

from codec import (DECODERS, HANDS, HEAD_FEET, KEYPOINT_NAMES, REFINE_DEFAULT, decode, decode_heatmaps, hand_gap,
                   heatmap_mean, soft_argmax, swap_hands)
from common import (ArgumentParser, RESULTS_DIR, UsageError, device_arg, pick_device, plt, positive, read_json,
                    record_timing, results_lock, run_cli, save_figure, torch_load, write_json)
from dataset import data_fingerprint, load_split, make_loader, resolve_keypoints_dir
from figures import draw_keypoints, plot_heatmap_stages, plot_heatmap_stages_all, plot_training_curves, prediction_grid
from model import METHODS, IntegralNet, load_checkpoint, model_config, run_model, target_of

PCK_THRESHOLDS = [0.05, 0.1, 0.15, 0.2]
REPO = Path(__file__).resolve().parents[1]
DENSE_THRESHOLDS = np.round(np.linspace(0, 0.3, 61), 4).tolist()


def extract_keypoints_from_heatmaps(heatmaps, refine=None):
    """Keypoints [B, K, 2] (x, y) in 128-px IMAGE space from heatmaps [B, K, H, W]: the argmax cell per channel,
    refined to sub-pixel by refine='quarter' (HRNet's quarter step); the seed's entry point to codec.decode_heatmaps."""
    return decode_heatmaps(heatmaps, refine)


def keypoint_distances(predictions, ground_truths, symmetric=False):
    """Per-keypoint Euclidean errors [N, K] in px. symmetric=True scores the hand pair in the better
    of its two label orders (minimum summed hand distance), per image."""
    pred = torch.as_tensor(predictions, dtype=torch.float64)
    gt = torch.as_tensor(ground_truths, dtype=torch.float64)
    dist = (pred - gt).norm(dim=-1)
    if symmetric:
        dist_sw = (swap_hands(pred) - gt).norm(dim=-1)
        use_sw = dist_sw[:, HANDS].sum(1) < dist[:, HANDS].sum(1)
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
    """PCK (module docstring): {threshold: fraction of keypoints correct} for predictions and ground truths [N, K, 2]
    in image px, normalize_by 'bbox' or 'torso', hands matched in the better order when symmetric."""
    ok = pck_matrix(predictions, ground_truths, thresholds, normalize_by, symmetric)
    return {float(t): float(a) for t, a in zip(thresholds, ok.double().mean((1, 2)))}


def spread_ratio(predictions, ground_truths):
    """std of predicted coordinates / std of true coordinates over a split (x and y of every keypoint
    pooled, each keypoint's own mean removed first): < 1 means predictions are pulled toward the mean pose."""
    pred = torch.as_tensor(predictions, dtype=torch.float64)
    gt = torch.as_tensor(ground_truths, dtype=torch.float64)
    return float((pred - pred.mean(0)).std() / (gt - gt.mean(0)).std())


def hand_placement(predictions, ground_truths, threshold=0.05):
    """Where the predicted hands land, over the images whose two true hands are more than 2 radii apart (radius:
    threshold x the bbox diagonal, PCK's radius, px). Each predicted hand is 'on_a_hand' within the radius of either
    true hand, else 'near_midpoint' within the radius of the midpoint between them, else 'elsewhere'; returns those
    fractions of the predicted hands and 'images', how many images qualify (fractions None when none does)."""
    pred = torch.as_tensor(predictions, dtype=torch.float64)[:, HANDS]
    gt = torch.as_tensor(ground_truths, dtype=torch.float64)
    radius = (threshold * pck_normalizer(gt, "bbox"))[:, None] + 1e-6
    true = gt[:, HANDS]
    far = (true[:, 0] - true[:, 1]).norm(dim=-1) > 2 * radius[:, 0]
    on = (pred[:, :, None] - true[:, None]).norm(dim=-1).amin(-1) <= radius
    mid = ~on & ((pred - true.mean(1, keepdim=True)).norm(dim=-1) <= radius)
    frac = (lambda m: float(m[far].double().mean())) if far.any() else (lambda m: None)
    return {"images": int(far.sum()), "on_a_hand": frac(on), "near_midpoint": frac(mid), "elsewhere": frac(~on & ~mid)}


def summarize(predictions, ground_truths, thresholds=PCK_THRESHOLDS):
    """The one metrics record of predictions [N, K, 2] against the ground truth, flat; every script reads it.

    px / px_sym: mean error in image px, strict / symmetric; px_head_feet; px_hands / px_hands_sym;
    pck_bbox, pck_torso (+ _sym): {threshold: fraction of keypoints correct}; spread_ratio; hand_gap_px: the
    mean distance between the two predicted hands."""
    strict, sym = (keypoint_distances(predictions, ground_truths, s) for s in (False, True))
    pck = {f"pck_{norm}{sfx}": {str(t): acc for t, acc in compute_pck(predictions, ground_truths, thresholds, norm,
                                                                       s).items()}
           for norm in ("bbox", "torso") for sfx, s in (("", False), ("_sym", True))}
    return {"px": float(strict.mean()), "px_sym": float(sym.mean()),
            "px_head_feet": float(strict[:, HEAD_FEET].mean()), "px_hands": float(strict[:, HANDS].mean()),
            "px_hands_sym": float(sym[:, HANDS].mean()), **pck,
            "spread_ratio": spread_ratio(predictions, ground_truths),
            "hand_gap_px": float(hand_gap(predictions).mean())}


def plot_pck_curves(pck_heatmap, pck_regression, save_path, normalize_by="bbox", extra_curves=None, split="test"):
    """PCK vs threshold for both methods. pck_*: {threshold: accuracy} (any grid; a dense one reads
    best; None: that method was not trained); extra_curves: optional {label: {threshold: accuracy}} drawn dashed
    (e.g. symmetric PCK). The assignment's thresholds are marked with dotted vertical lines."""
    fig, ax = plt().subplots(figsize=(6.4, 4.4))
    curves = [(label, c, "-", color) for label, c, color in (("HeatmapNet (as labelled)", pck_heatmap, "C0"),
                                                             ("RegressionNet (as labelled)", pck_regression, "C3")) if c]
    curves += [(label, c, "--", f"C{i + 4}") for i, (label, c) in enumerate((extra_curves or {}).items())]
    for label, pck, style, color in curves:
        t = sorted(float(k) for k in pck)
        ax.plot(t, [pck[k] for k in sorted(pck, key=float)], style, color=color, label=label, lw=2)
    for t in PCK_THRESHOLDS:
        ax.axvline(t, color="0.7", ls=":", lw=1)
    ax.set(xlabel=f"threshold (fraction of {'bbox diagonal' if normalize_by == 'bbox' else 'torso length'})",
           ylabel="PCK (fraction of keypoints correct)", ylim=(0, 1.02),
           xlim=(0, max(float(k) for _, c, _, _ in curves for k in c)),
           title=f"PCK curves on the {split} split ({normalize_by}-normalised)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save_figure(fig, save_path)


def visualize_predictions(image, pred_keypoints, gt_keypoints, save_path):
    """One image [1, 128, 128] with predictions (x) and ground truth (o) per keypoint, in image px."""
    fig, ax = plt().subplots(figsize=(4, 4))
    err = np.linalg.norm(np.asarray(pred_keypoints) - np.asarray(gt_keypoints), axis=-1).mean()
    draw_keypoints(ax, image, pred_keypoints, gt_keypoints, f"mean error {err:.2f} px  (o = GT, x = prediction)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_figure(fig, save_path)


def print_metrics_table(metrics, methods):
    """Compact table: PCK (bbox) strict/symmetric at the four thresholds and mean px error, per decoder."""
    print(f"\n{metrics['split']} split, {metrics['num_images']} images; PCK (bbox) strict/symmetric, mean px error")
    print(f"{'method':<11}{'decoder':<8}" + "".join(f"{'@' + str(t):>13}" for t in PCK_THRESHOLDS) + f"{'px err':>14}")
    for method in methods:
        for dec, m in metrics[method]["decoders"].items():
            cells = "".join(f"{m['pck_bbox'][str(t)]:>6.3f}/{m['pck_bbox_sym'][str(t)]:<6.3f}" for t in PCK_THRESHOLDS)
            print(f"{method:<11}{dec:<8}{cells}{m['px']:>7.2f}/{m['px_sym']:<6.2f}")


def default_decoder(target):
    """The decoder every table reports for a target representation: the one chosen on val, or 'direct'."""
    return REFINE_DEFAULT if target == "heatmap" else "direct"


def predict_all_decoders(model, dataset, device="cpu", precision="fp32", batch_size=64):
    """{decoder: kp_img_px [N, K, 2]} of a model on `dataset`: every heatmap decoder, or 'direct'."""
    outputs = run_model(model.to(device), make_loader(dataset, batch_size), device, precision)
    if target_of(model) == "heatmap":
        return {d: decode("heatmap", outputs, d) for d in DECODERS}
    return {"direct": decode("regression", outputs)}


def predict_map_readouts(model, dataset, device="cpu", batch_size=64):
    """{read-out: kp_img_px [N, K, 2]} of a network that ends in 64x64 maps, read at the peak (DECODERS, on a logit
    map as on a heatmap: a logit map and its softmax share their peak and the quarter step's higher neighbour) and by
    the mean position under the map ('mean': IntegralNet's own soft-argmax output; for a heatmap, codec.heatmap_mean),
    so that targets and read-out can be varied one at a time."""
    body = model.body if isinstance(model, IntegralNet) else model
    maps = run_model(body.to(device), make_loader(dataset, batch_size), device)  # [N, K, S, S]
    mean = decode("regression", soft_argmax(maps)) if body is not model else heatmap_mean(maps)
    return {"mean": mean, **{d: decode_heatmaps(maps, d) for d in DECODERS}}


def read_training_log(out_dir, default=None):
    """out_dir/training_log.json (train.py's), its shape checked: 'config' an object listing its 'methods', and each
    trained method's entry an object with its 'recipe' and 'epochs'; else a UsageError naming the file."""
    path = Path(out_dir) / "training_log.json"
    log = read_json(path, "`python problem2/train.py`", default)
    if log is default:
        return log
    config = log.get("config")
    why = ("'config' is not an object" if not isinstance(config, dict) else
           "'config.methods' is not a list of method names" if not isinstance(config.get("methods"), list) or not all(
               isinstance(m, str) for m in config["methods"]) else
           next((f"the entry of '{m}' lacks its recipe or epochs" for m in config["methods"] if m in log and not (
               isinstance(log[m], dict) and isinstance(log[m].get("recipe"), dict) and isinstance(
                   log[m].get("epochs"), list))), None))
    if why:
        raise UsageError(f"{path}: {why}; rerun `python problem2/train.py` to write it again")
    return log


def load_run_checkpoints(out_dir, methods, kp_dir, allow_mixed=False):
    """{method: (model, checkpoint)} from out_dir/<method>_model.pth, checked before any work is done: each file must
    hold its slot's method (else a UsageError) and be the checkpoint that the train.py run in
    out_dir/training_log.json selected (its recipe, on the data of `kp_dir`, best epoch and val loss). A violation is a
    UsageError naming the files, unless allow_mixed; then the problems are returned (second value, else None) so the
    caller records the mix in its output."""
    out_dir = Path(out_dir)
    loaded = {m: load_checkpoint(out_dir / f"{m}_model.pth", method=m) for m in methods}
    log, fp, problems = read_training_log(out_dir, default={}), data_fingerprint(kp_dir), []
    for m, (_, ckpt) in loaded.items():
        recipe, h = (ckpt.get("provenance") or {}).get("recipe"), log.get(m) or {}
        if recipe is None or recipe["data"] != fp:
            problems.append(f"{m}_model.pth was not trained by train.py on the data of --data-dir")
        elif (recipe, ckpt.get("epoch"), ckpt.get("val_loss")) != (h.get("recipe"), h.get("best_epoch"),
                                                                  h.get("best_val_loss")):
            problems.append(f"{m}_model.pth is not the checkpoint of the train.py run in training_log.json (files "
                            f"from different train.py runs)")
    if problems and not allow_mixed:
        raise UsageError(f"refusing to evaluate {out_dir}: " + "; ".join(problems) +
                         ". Retrain together with `python problem2/train.py`, or pass --allow-mixed-runs (recorded)")
    return loaded, (problems or None)


def score_checkpoint(path, kp_dir, split="test", device="cpu", out=None):
    """Metrics of one checkpoint of any method on `split` ({decoder: summarize(...)}), printed and written to `out`
    (default: <checkpoint stem>_<split>_metrics.json beside it) with the data it scored (path and fingerprint). An
    existing file there that scored other data (or does not say which) is never replaced: a UsageError, checked before
    any scoring."""
    folder = Path(kp_dir).resolve()  # recorded relative to the repository when inside it (a committed file)
    data = {"path": str(folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder),
            **data_fingerprint(kp_dir)}
    out = Path(out) if out is not None else Path(path).with_name(f"{Path(path).stem}_{split}_metrics.json")
    if out.exists():
        old = read_json(out).get("data") or {}
        if {k: v for k, v in old.items() if k != "path"} != {k: v for k, v in data.items() if k != "path"}:
            raise UsageError(f"{out} holds the scores of other data ({old.get('path', 'not recorded')}), not of "
                             f"{kp_dir}; pass --metrics-out <file> to write these scores elsewhere")
    nearest = next(p for p in out.parents if p.exists())  # the first that exists: write_json makes the rest
    if not (nearest.is_dir() and os.access(nearest, os.W_OK)):
        raise UsageError(f"cannot write {out}: its folder is not writable; pass --metrics-out <file>")
    model, ckpt = load_checkpoint(path)
    ds = load_split(kp_dir, split, "regression", canonical_hands=ckpt.get("data", {}).get("canonical_hands", False))
    method = model_config(model)["method"]
    metrics = {"split": split, "num_images": len(ds), "thresholds": PCK_THRESHOLDS, "checkpoint": str(path),
               "data": data, "provenance": ckpt.get("provenance"), method: {"decoders": {
                   d: summarize(kp, ds.keypoints) for d, kp in predict_all_decoders(model, ds, device).items()}}}
    write_json(out, metrics)
    print_metrics_table(metrics, [method])
    print(f"wrote {out}")
    return metrics


def main(argv=None):
    p = ArgumentParser(description="Evaluate the trained HeatmapNet and RegressionNet (and any other method "
                                "of the same train.py run) on the test split: metrics.json + figures in "
                                "results/visualizations/.")
    p.add_argument("--data-dir", default=None, help="course-layout folder (default: generated problem2/data)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where checkpoints/logs are read and written")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="split to report on (default: test; val selected checkpoints)")
    p.add_argument("--device", type=device_arg, default="auto")
    p.add_argument("--num-samples", type=positive(int, 1), default=16, help="images in the prediction grid")
    p.add_argument("--allow-mixed-runs", action="store_true",
                   help="evaluate checkpoints of different runs/data together anyway (recorded in metrics.json)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="score this one checkpoint (any method, e.g. results/best/heatmap_model.pth) with "
                        "every decoder: prints its table and writes its metrics (see --metrics-out)")
    p.add_argument("--metrics-out", type=Path, default=None,
                   help="with --checkpoint: where its metrics go (default: <checkpoint stem>_<split>_metrics.json "
                        "beside it, never replacing the scores of other data)")
    args = p.parse_args(argv)
    if args.checkpoint is not None:
        return score_checkpoint(args.checkpoint, resolve_keypoints_dir(args.data_dir), args.split,
                                pick_device(args.device), args.metrics_out)
    t0 = time.time()
    out_dir, vis_dir = args.out_dir, args.out_dir / "visualizations"
    sfx = "" if args.split == "test" else f"_{args.split}"  # val numbers and figures never replace the test ones
    device = pick_device(args.device)
    precision = "fp32"  # evaluation is cheap; report numbers free of reduced-precision noise
    kp_dir = resolve_keypoints_dir(args.data_dir)
    # exactly the methods the train.py run in out_dir trained: a stale file of an earlier run is never read
    training_log = read_training_log(out_dir)
    methods = [m for m in METHODS if m in training_log["config"]["methods"]]
    loaded, mixed = load_run_checkpoints(out_dir, methods, kp_dir, args.allow_mixed_runs)
    with results_lock(out_dir, "evaluate.py"):
        metrics = {"split": args.split, "thresholds": PCK_THRESHOLDS, "refine_default": REFINE_DEFAULT,
                   "provenance": {"run_id": training_log.get("run_id"), "data": data_fingerprint(kp_dir),
                                  "mixed_runs": mixed}}
        # one split for every method: one train.py run applies one --canonical-hands to all of them
        ds = load_split(kp_dir, args.split, "regression",
                        canonical_hands=training_log["config"].get("canonical_hands", False))
        metrics["num_images"], preds = len(ds), {}
        metrics["normaliser_px"] = {n: float(pck_normalizer(ds.keypoints, n).mean()) for n in ("bbox", "torso")}
        for method, (model, ckpt) in loaded.items():
            preds[method] = predict_all_decoders(model, ds, device, precision)
            default = preds[method][default_decoder(target_of(model))]
            metrics[method] = {"checkpoint": {k: ckpt[k] for k in ("epoch", "val_loss", "val_px_error") if k in ckpt},
                               "decoders": {d: summarize(kp, ds.keypoints) for d, kp in preds[method].items()},
                               "exact_fraction": float((keypoint_distances(default, ds.keypoints) < 1e-6).double()
                                                       .mean())}
        if "heatmap" in loaded:  # the default decoder is chosen on val: store the measurement it rests on
            val_ds = load_split(kp_dir, "val", "regression")
            val_preds = predict_all_decoders(loaded["heatmap"][0], val_ds, device, precision)
            val_px = {d: summarize(kp, val_ds.keypoints)["px"] for d, kp in val_preds.items()}
            metrics["decoder_selection"] = {"split": "val", "model": "heatmap", "px": val_px,
                                            "best": min(val_px, key=val_px.get), "default": REFINE_DEFAULT}
            print("decoder selection on val (mean px): " + ", ".join(f"{d} {v:.2f}" for d, v in val_px.items()))
        write_json(out_dir / f"metrics{sfx}.json", metrics)
        print_metrics_table(metrics, methods)
        write_figures(out_dir, args.split, ds, preds, loaded, training_log, args.num_samples)
        if not sfx:
            record_timing(out_dir, "evaluate.py", time.time() - t0, device, precision)
    print(f"\nwrote {out_dir / f'metrics{sfx}.json'} and figures in {vis_dir}")
    return metrics


def write_figures(out_dir, split, ds, preds, loaded, training_log, num_samples):
    """evaluate.py's figures of `split` in out_dir/visualizations (names end in _<split> but for test; the training
    figures only for test)."""
    gt, methods = ds.keypoints, list(loaded)
    vis_dir, sfx = Path(out_dir) / "visualizations", "" if split == "test" else f"_{split}"
    final = {m: preds[m][default_decoder(target_of(loaded[m][0]))] for m in methods}
    for norm in ("bbox", "torso"):
        dense = {m: {sym: compute_pck(final[m], gt, DENSE_THRESHOLDS, norm, sym) for sym in (False, True)}
                 for m in methods}
        extra = {f"{METHODS[m]['name']} (hands in either order)": dense[m][True] for m in ("heatmap", "regression")
                 if m in dense}
        extra.update({METHODS[m]["name"]: dense[m][False] for m in methods if m not in ("heatmap", "regression")})
        plot_pck_curves(dense.get("heatmap", {}).get(False), dense.get("regression", {}).get(False),
                        vis_dir / f"pck_curves_{norm}{sfx}.png", norm, extra, split)
    if "heatmap" in final:
        visualize_predictions(ds.images[0], final["heatmap"][0], gt[0],
                              vis_dir / f"example_heatmap_prediction{sfx}.png")
    prediction_grid(ds.images[:num_samples], {m: final[m][:num_samples] for m in methods[:3]}, gt[:num_samples],
                    vis_dir / f"{split}_grid.png", split=split)
    if sfx:
        return
    snap_path = out_dir / "heatmap_snapshots.pt"
    if "heatmap" in final and snap_path.exists():
        snapshots = torch_load(snap_path)
        plot_heatmap_stages_all(snapshots, vis_dir / "heatmaps_training_stages.png")
        plot_heatmap_stages(snapshots, vis_dir / "heatmaps_training_stages_keypoints.png")
    plot_training_curves(training_log, vis_dir / "training_curves.png")


if __name__ == "__main__":
    run_cli(main)
