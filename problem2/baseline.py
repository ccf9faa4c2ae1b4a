"""Ablations of HeatmapNet and failure-case analysis of both methods: `python baseline.py` (see --help).

Studies (spec recipe: Adam 1e-3, batch 32, 30 epochs, seed 0, same split; train.py's loop):
  resolution : heatmap 32x32 vs 64x64 vs 128x128
  sigma      : Gaussian sigma 1, 2, 3, 4 (heatmap px at 64x64)
  skip       : skip connections on vs off
Sigma across resolutions is held fixed in IMAGE pixels: sigma_hm = sigma_64 * hm_size / 64 (4 image px
for the default 2.0), so every resolution learns the same target shape in the image and only the
quantisation of the grid differs. The shared configuration (64, sigma 2, skips on) is trained once and
reused by all three studies (and taken from train.py's results/heatmap_model.pth when that was trained
with the same recipe). Each variant is decoded at its own resolution with evaluate.py's decoders
(argmax, quarter and dark) and scored on the test split.

ablation_results.json schema:
  {"recipe": {...}, "variants": {"<name>": {"config": {"hm_size", "sigma_hm", "sigma_img", "skip"},
      "source": "baseline.py" | "train.py", "best_epoch", "best_val_loss", "best_val_px_error",
      "train_seconds", "test": {"<decoder: argmax|quarter|dark>": {"strict"|"symmetric": {
          "mean_px_error", "median_px_error", "per_keypoint_px_error", "pck": {"bbox"|"torso": {thr: acc}},
          "auc": {...}}}}}},
   "studies": {"resolution": [names], "sigma": [names], "skip": [names]}}
The file is rewritten (atomically) after every variant; a recorded variant is skipped unless --force.

failure_cases.json schema (analyze_failure_cases): {"rule", "num_images", "counts": {category: n},
  "per_keypoint": {category: {name: n}}, "characterisation": {...}, "gallery": {category: [image idx]}}
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dataset import (KEYPOINT_NAMES, LEFT_HAND, RIGHT_HAND, atomic_write_json, encode_heatmaps, load_split,
                     make_loader, record_timing, resolve_keypoints_dir)
from evaluate import (DECODERS, REFINE_DEFAULT, _plt, _save, decode_outputs, draw_keypoints, keypoint_distances,
                      pck_matrix, run_model, summarize)
from model import HeatmapNet, load_checkpoint, pick_device, pick_precision
from train import DEFAULTS, fmt_time, set_seed, train_heatmap_model

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
BASE = {"hm_size": 64, "sigma_64": 2.0, "skip": True}
STUDIES = {
    "resolution": [{"hm_size": 32}, {}, {"hm_size": 128}],
    "sigma": [{"sigma_64": 1.0}, {}, {"sigma_64": 3.0}, {"sigma_64": 4.0}],
    "skip": [{}, {"skip": False}],
}
SUCCESS_RULE = "a keypoint succeeds when its strict error <= 0.1 x bbox diagonal (PCK@0.1, bbox)"


def variant_config(overrides):
    """Full config of a variant: heatmap size, sigma in heatmap px and in image px, skip."""
    cfg = {**BASE, **overrides}
    sigma_hm = cfg["sigma_64"] * cfg["hm_size"] / 64
    return {"hm_size": cfg["hm_size"], "sigma_hm": sigma_hm, "sigma_img": sigma_hm * 128 / cfg["hm_size"],
            "skip": cfg["skip"]}


def variant_name(cfg):
    return f"hm{cfg['hm_size']}_sigma{cfg['sigma_img'] / 2:g}_{'skip' if cfg['skip'] else 'noskip'}"


def _reusable_train_checkpoint(out_dir, cfg, epochs, dataset, precision):
    """train.py's heatmap checkpoint when it matches this variant and the recipe; else None."""
    path, log_path = Path(out_dir) / "heatmap_model.pth", Path(out_dir) / "training_log.json"
    if not (path.exists() and log_path.exists()):
        return None
    log = json.loads(log_path.read_text())
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    run = log.get("config", {})
    same = (ckpt["config"].get("hm_size") == cfg["hm_size"] and ckpt["config"].get("skip") == cfg["skip"]
            and ckpt.get("data", {}).get("sigma") == cfg["sigma_hm"] and run.get("epochs") == epochs
            and run.get("seed") == DEFAULTS["seed"] and run.get("lr") == DEFAULTS["lr"]
            and run.get("batch_size") == DEFAULTS["batch_size"] and run.get("data_dir") == str(dataset)
            and run.get("precision") == precision and run.get("num_train") is None
            and not run.get("canonical_hands") and "heatmap" in log)
    return (path, log["heatmap"]) if same else None


def ablation_study(dataset, model_class, studies=tuple(STUDIES), epochs=DEFAULTS["epochs"], out_dir=RESULTS_DIR,
                   force=False, device="cpu", precision="fp32", log=print):
    """Train and score the ablation variants of `model_class` (HeatmapNet) on `dataset`.

    dataset: a course-layout keypoints folder (train/val for training and selection, test for scores).
    Returns the ablation_results dict (schema in the module docstring), also written to
    out_dir/ablation_results.json after every variant.
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "ablation_checkpoints"  # gitignored: only the JSON is the deliverable
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "ablation_results.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    recipe = {"epochs": epochs, "lr": DEFAULTS["lr"], "batch_size": DEFAULTS["batch_size"], "seed": DEFAULTS["seed"],
              "precision": precision, "refined_decoder": REFINE_DEFAULT}
    if results.get("recipe") != recipe:
        results = {"recipe": recipe, "variants": {}, "studies": {}}
    todo = {}
    for study in studies:
        names = []
        for overrides in STUDIES[study]:
            cfg = variant_config(overrides)
            names.append(variant_name(cfg))
            todo[names[-1]] = cfg
        results["studies"][study] = names
    t_start = time.time()
    for i, (name, cfg) in enumerate(todo.items()):
        if name in results["variants"] and not force:
            log(f"[ablation] {name}: recorded, skipping (--force to rerun)")
            continue
        train_ds = load_split(dataset, "train", "heatmap", cfg["hm_size"], cfg["sigma_hm"])
        val_ds = load_split(dataset, "val", "heatmap", cfg["hm_size"], cfg["sigma_hm"])
        test_ds = load_split(dataset, "test", "heatmap", cfg["hm_size"], cfg["sigma_hm"])
        reuse = None if force else _reusable_train_checkpoint(out_dir, cfg, epochs, dataset, precision)
        if reuse:
            ckpt_path, hist = reuse
            log(f"[ablation] {name}: reusing train.py's checkpoint {ckpt_path.name} (same config and recipe)")
        else:
            log(f"[ablation] {name} ({i + 1}/{len(todo)}): training {epochs} epochs")
            set_seed(DEFAULTS["seed"])
            model = model_class(hm_size=cfg["hm_size"], skip=cfg["skip"])
            hist = train_heatmap_model(
                model, make_loader(train_ds, DEFAULTS["batch_size"], shuffle=True, seed=DEFAULTS["seed"]),
                make_loader(val_ds, 64), epochs, out_dir=ckpt_dir, device=device, precision=precision,
                snapshot_epochs=(), ckpt_name=f"{name}.pth", log=lambda s: log(f"  {name} {s}"))
            ckpt_path = ckpt_dir / f"{name}.pth"
        model, _ = load_checkpoint(ckpt_path)
        outputs = run_model(model.to(device), make_loader(test_ds, 64), device, "fp32")
        test = {}
        for decoder in DECODERS:
            s = summarize(decode_outputs(outputs, "heatmap", decoder), test_ds.keypoints)
            test[decoder] = {m: {k: v for k, v in s[m].items() if k != "pck_per_keypoint"} for m in s}
        results["variants"][name] = {
            "config": cfg, "source": "train.py" if reuse else "baseline.py",
            **{k: hist[k] for k in ("best_epoch", "best_val_loss", "best_val_px_error", "train_seconds")},
            "test": test}
        atomic_write_json(json_path, results)
        r = test[REFINE_DEFAULT]["strict"]
        log(f"[ablation] {name}: test px err {r['mean_px_error']:.2f} (argmax "
            f"{test['argmax']['strict']['mean_px_error']:.2f}), PCK@0.05 {r['pck']['bbox']['0.05']:.3f}; "
            f"elapsed {fmt_time(time.time() - t_start)}")
    return results


# ----------------------------------------------------------------------------- ablation figures
def plot_ablations(results, vis_dir):
    """PCK@0.05 and mean px error vs sigma, vs resolution, and skip vs no-skip (argmax and refined)."""
    plt = _plt()
    variants = results["variants"]
    for study, xlabel in (("sigma", "sigma (image px; heatmap px at 64x64 = half)"),
                          ("resolution", "heatmap resolution (cells per side)"), ("skip", "skip connections")):
        names = [n for n in results["studies"].get(study, []) if n in variants]
        if not names:
            continue
        cfgs = [variants[n]["config"] for n in names]
        xs = {"sigma": [c["sigma_img"] for c in cfgs], "resolution": [c["hm_size"] for c in cfgs],
              "skip": ["with" if c["skip"] else "without" for c in cfgs]}[study]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for decoder, style in (("argmax", "o:"), ("quarter", "s--"), ("dark", "^-")):
            for matching, color in (("strict", "C0"), ("symmetric", "C2")):
                err = [variants[n]["test"][decoder][matching]["mean_px_error"] for n in names]
                pck = [variants[n]["test"][decoder][matching]["pck"]["bbox"]["0.05"] for n in names]
                pos = range(len(xs)) if study == "skip" else xs
                label = f"{decoder}, {matching}"
                axes[0].plot(pos, pck, style, color=color, label=label)
                axes[1].plot(pos, err, style, color=color, label=label)
        for ax, ylabel in zip(axes, ("PCK@0.05 (bbox)", "mean error (px, 128-px image)")):
            ax.set(xlabel=xlabel, ylabel=ylabel)
            if study == "skip":
                ax.set_xticks(range(len(xs)), xs)
            else:
                ax.set_xticks(xs)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Ablation: {study} (HeatmapNet, test split)")
        fig.tight_layout()
        _save(fig, Path(vis_dir) / f"ablation_{study}.png")


def plot_sigma_examples(results, dataset, vis_dir, out_dir=RESULTS_DIR):
    """Per sigma: the target heatmap of one test image and each sigma-model's prediction (left hand)."""
    plt = _plt()
    names = [n for n in results["studies"].get("sigma", []) if n in results["variants"]]
    if not names:
        return
    test_ds = load_split(dataset, "test", "regression")
    image, kp = test_ds.images[:1], test_ds.keypoints[0]
    k = LEFT_HAND
    fig, axes = plt.subplots(2, len(names), figsize=(2.6 * len(names), 5.4), squeeze=False)
    for j, name in enumerate(names):
        cfg = results["variants"][name]["config"]
        target = encode_heatmaps(kp, cfg["hm_size"], cfg["sigma_hm"])[k]
        ckpt = Path(out_dir) / "ablation_checkpoints" / f"{name}.pth"
        if not ckpt.exists():
            ckpt = Path(out_dir) / "heatmap_model.pth"
        model, _ = load_checkpoint(ckpt)
        with torch.no_grad():
            pred = model(image)[0, k]
        for r, (hm, what) in enumerate(((target, "target"), (pred, "prediction"))):
            ax = axes[r, j]
            ax.imshow(hm.numpy(), cmap="magma", vmin=0, vmax=1, extent=(-0.5, 127.5, 127.5, -0.5))
            ax.imshow(image[0, 0].numpy(), cmap="gray", alpha=0.15, extent=(-0.5, 127.5, 127.5, -0.5))
            ax.plot(*kp[k].numpy(), "c+", ms=9, mew=1.5)
            ax.set_title(f"sigma {cfg['sigma_img']:g} img px: {what}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"What sigma does: {KEYPOINT_NAMES[k]} heatmap of one test image (+ = ground truth)")
    fig.tight_layout()
    _save(fig, Path(vis_dir) / "ablation_sigma_examples.png")


# ----------------------------------------------------------------------------- failure cases
def failure_categories(ok_heatmap, ok_regression):
    """Boolean masks [N, K] per category from per-keypoint success masks of the two methods."""
    ok_h, ok_r = torch.as_tensor(ok_heatmap, dtype=torch.bool), torch.as_tensor(ok_regression, dtype=torch.bool)
    return {"heatmap_only": ok_h & ~ok_r, "regression_only": ok_r & ~ok_h, "both_fail": ~ok_h & ~ok_r}


def characterise(mask, gt, pred_h, pred_r):
    """Why the keypoints in `mask` [N, K] fail: which keypoints, hand geometry, swapped labels, distance of
    the figure from the training-range centre; each compared with the whole test split (base rate)."""
    gt = torch.as_tensor(gt, dtype=torch.float64)
    centre = gt[:, 0] + torch.tensor([0.0, 20.0])                        # figure centre = head + 20 px down
    off_centre = (centre - 64).norm(dim=-1)                                # px from the middle of [40, 88]^2
    hand_gap = (gt[:, LEFT_HAND] - gt[:, RIGHT_HAND]).norm(dim=-1)
    swapped = gt[:, LEFT_HAND, 0] > gt[:, RIGHT_HAND, 0]                    # left_hand drawn right of right_hand
    img_mask = mask.any(1)
    hand_rows = mask[:, [LEFT_HAND, RIGHT_HAND]].any(1)
    mid = gt[:, [LEFT_HAND, RIGHT_HAND]].mean(1, keepdim=True)

    def frac(x, m):
        return float(x[m].double().mean()) if m.any() else None

    def mean(x, m):
        return float(x[m].mean()) if m.any() else None

    out = {"keypoints": int(mask.sum()), "images": int(img_mask.sum()),
           "share_of_failures_that_are_hands": float(mask[:, [LEFT_HAND, RIGHT_HAND]].sum() / max(1, mask.sum())),
           "hand_gap_px": {"these": mean(hand_gap, hand_rows), "all": float(hand_gap.mean())},
           "hands_swapped_fraction": {"these": frac(swapped, hand_rows), "all": float(swapped.double().mean())},
           "off_centre_px": {"these": mean(off_centre, img_mask), "all": float(off_centre.mean())}}
    # does a failing hand prediction sit near the two hands' midpoint (regression's hedge)?
    for method, pred in (("heatmap", pred_h), ("regression", pred_r)):
        pred = torch.as_tensor(pred, dtype=torch.float64)
        hands_m = mask[:, [LEFT_HAND, RIGHT_HAND]]
        to_mid = (pred[:, [LEFT_HAND, RIGHT_HAND]] - mid).norm(dim=-1)
        out[f"{method}_failing_hand_dist_to_hands_midpoint_px"] = mean(to_mid, hands_m)
    return out


def _draw_failure_row(axes, image, gt, pred_h, pred_r, heatmaps, k, title):
    draw_keypoints(axes[0], image, pred_h, gt, f"heatmap: {(pred_h[k] - gt[k]).norm():.1f} px on {KEYPOINT_NAMES[k]}")
    draw_keypoints(axes[1], image, pred_r, gt, f"regression: {(pred_r[k] - gt[k]).norm():.1f} px on {KEYPOINT_NAMES[k]}")
    axes[2].imshow(heatmaps[k].numpy(), cmap="magma", extent=(-0.5, 127.5, 127.5, -0.5))
    axes[2].plot(*gt[k].numpy(), "c+", ms=9, mew=1.5)
    axes[2].set_title(f"{KEYPOINT_NAMES[k]} heatmap ({title})", fontsize=9)
    axes[2].set_xticks([])
    axes[2].set_yticks([])


def analyze_failure_cases(model, test_loader, out_dir=RESULTS_DIR, per_gallery=4, device="cpu"):
    """Compare the two methods keypoint by keypoint on the test split.

    model: {'heatmap': HeatmapNet, 'regression': RegressionNet} (both trained; a 2-tuple in that order
    also works). test_loader: a non-shuffled loader over the test split (its images are fed to both
    models; ground truth is test_loader.dataset.keypoints). Success rule: SUCCESS_RULE. Categories:
    heatmap_only (heatmap succeeds, regression fails), regression_only, both_fail; counts per category
    and per keypoint, a characterisation of each, and a gallery PNG per category in out_dir/visualizations/.
    Returns the failure_cases dict (also written to out_dir/failure_cases.json).
    """
    hm_model, rg_model = (model["heatmap"], model["regression"]) if isinstance(model, dict) else model
    ds = test_loader.dataset
    gt = ds.keypoints
    hm_out = run_model(hm_model.to(device), test_loader, device, "fp32")
    pred_h = decode_outputs(hm_out, "heatmap", REFINE_DEFAULT)
    pred_r = decode_outputs(run_model(rg_model.to(device), test_loader, device, "fp32"), "regression")
    ok_h = pck_matrix(pred_h, gt, [0.1], "bbox")[0]
    ok_r = pck_matrix(pred_r, gt, [0.1], "bbox")[0]
    cats = failure_categories(ok_h, ok_r)
    result = {"rule": SUCCESS_RULE, "num_images": len(gt), "counts": {c: int(m.sum()) for c, m in cats.items()},
              "per_keypoint": {c: {n: int(v) for n, v in zip(KEYPOINT_NAMES, m.sum(0))} for c, m in cats.items()},
              "characterisation": {c: characterise(m, gt, pred_h, pred_r) for c, m in cats.items()},
              "gallery": {}}
    # symmetric view: how many strict failures are only a hand-label swap?
    ok_h_sym = pck_matrix(pred_h, gt, [0.1], "bbox", symmetric=True)[0]
    ok_r_sym = pck_matrix(pred_r, gt, [0.1], "bbox", symmetric=True)[0]
    result["fixed_by_symmetric_matching"] = {"heatmap": int((ok_h_sym & ~ok_h).sum()),
                                             "regression": int((ok_r_sym & ~ok_r).sum())}
    plt = _plt()
    err_h, err_r = keypoint_distances(pred_h, gt), keypoint_distances(pred_r, gt)
    for cat, mask in cats.items():
        # the worst examples: largest error of the failing method(s) on a keypoint of this category
        failing_err = {"heatmap_only": err_r, "regression_only": err_h, "both_fail": torch.maximum(err_h, err_r)}[cat]
        score = torch.where(mask, failing_err, torch.tensor(-1.0, dtype=failing_err.dtype))
        worst = score.max(1)
        order = [int(i) for i in worst.values.argsort(descending=True) if worst.values[i] >= 0][:per_gallery]
        result["gallery"][cat] = order
        if not order:
            continue
        fig, axes = plt.subplots(len(order), 3, figsize=(8.4, 2.9 * len(order)), squeeze=False)
        for r, i in enumerate(order):
            k = int(worst.indices[i])
            _draw_failure_row(axes[r], ds.images[i], gt[i], pred_h[i], pred_r[i], hm_out[i], k, f"test #{i}")
        fig.suptitle(f"Failure cases: {cat.replace('_', ' ')} (o = GT, x = prediction; rule: PCK@0.1 bbox)",
                     fontsize=10)
        fig.tight_layout()
        _save(fig, Path(out_dir) / "visualizations" / f"failures_{cat}.png")
    atomic_write_json(Path(out_dir) / "failure_cases.json", result)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description="HeatmapNet ablations (resolution 32/64/128, sigma 1-4, skip on/off) "
                                "and failure cases of both methods. Resumable: recorded variants are skipped.")
    p.add_argument("--studies", nargs="*", default=list(STUDIES), choices=list(STUDIES),
                   help="which ablations to run (default: all; none with --studies)")
    p.add_argument("--no-failures", action="store_true", help="skip the failure-case analysis")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--force", action="store_true", help="retrain variants that are already recorded")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = p.parse_args(argv)
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device)
    kp_dir = resolve_keypoints_dir(args.data_dir)
    vis_dir = args.out_dir / "visualizations"
    t0 = time.time()
    if args.studies:
        results = ablation_study(kp_dir, HeatmapNet, args.studies, args.epochs, args.out_dir, args.force,
                                 device, precision)
        plot_ablations(results, vis_dir)
        plot_sigma_examples(results, kp_dir, vis_dir, args.out_dir)
        print_ablation_table(results)
    if not args.no_failures:
        for name in ("heatmap_model.pth", "regression_model.pth"):
            if not (args.out_dir / name).exists():
                raise SystemExit(f"error: {args.out_dir / name} not found; run `python problem2/train.py` first")
        models = {m: load_checkpoint(args.out_dir / f"{m}_model.pth")[0] for m in ("heatmap", "regression")}
        test_ds = load_split(kp_dir, "test", "regression")
        fc = analyze_failure_cases(models, make_loader(test_ds, 64), args.out_dir, device=device)
        print(f"\nfailure cases ({fc['rule']}), {fc['num_images']} test images x 5 keypoints:")
        for cat, n in fc["counts"].items():
            print(f"  {cat:<16}{n:>5}   " + "  ".join(f"{k}={v}" for k, v in fc["per_keypoint"][cat].items()))
    if args.studies and not args.no_failures:  # a full run: its wall time is the study's baseline step
        record_timing(args.out_dir, "baseline.py", time.time() - t0)
    print(f"baseline.py done in {fmt_time(time.time() - t0)}")


def print_ablation_table(results):
    print(f"\n{'variant':<22}" + "".join(f"{'px ' + d:>11}" for d in DECODERS) +
          f"{'PCK@.05':>9}{'PCK@.1':>8}{'sym px':>8}{'train s':>9}   (strict unless marked; PCK with {REFINE_DEFAULT})")
    for name, v in results["variants"].items():
        r = v["test"][REFINE_DEFAULT]["strict"]
        print(f"{name:<22}" + "".join(f"{v['test'][d]['strict']['mean_px_error']:>11.2f}" for d in DECODERS) +
              f"{r['pck']['bbox']['0.05']:>9.3f}{r['pck']['bbox']['0.1']:>8.3f}"
              f"{v['test'][REFINE_DEFAULT]['symmetric']['mean_px_error']:>8.2f}{v['train_seconds']:>9.0f}")


if __name__ == "__main__":
    sys.exit(main())
