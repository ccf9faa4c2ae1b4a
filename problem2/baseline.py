"""Ablations of HeatmapNet and failure cases of both methods: `python baseline.py` (see --help).

Ablations (the spec recipe over --seeds, each (variant, seed) a recipe-keyed run of runs.py): heatmap 32/64/128,
sigma 1-4 (px of a 64x64 heatmap), skips on/off. Sigma is fixed in IMAGE px across resolutions (sigma_hm = sigma_64 *
hm_size / 64), so only the grid's quantisation differs. ablation_results.json (one seed) / ablation_seeds.json
(several): {"recipe", "seeds", "partial", "studies": {study: [variant]}, "variants": {name: {"config", "runs": [{"seed",
"run", "test": {decoder: evaluate.summarize()}, "best_epoch", ...}], "paired_to_default": {metric: {"diff", "ci95",
"n"}}}}}. failure_cases.json: see analyze_failure_cases.
"""
import time
from dataclasses import replace
from pathlib import Path

import torch

from codec import DECODERS, HANDS, KEYPOINT_NAMES, REFINE_DEFAULT, decode, hand_gap
from common import (ArgumentParser, RESULTS_DIR, fmt_time, main_time, paired_by_seed, pick_device, pick_precision, plt,
                    positive, read_json, record_timing, results_lock, run_cli, save_figure, set_threads, write_json)
from dataset import data_fingerprint, load_split, make_loader, resolve_keypoints_dir
from evaluate import keypoint_distances, load_run_checkpoints, pck_matrix, pck_normalizer, print_metrics_table
from figures import draw_keypoints
from model import HeatmapNet, run_model
from runs import STUDY_PRECISION, Store, collect, run_name
from train import DEFAULTS, add_recipe_args, make_recipe, train_recipe

BASE = {"hm_size": 64, "sigma_64": 2.0, "skip": True}
STUDIES = {
    "resolution": [{"hm_size": 32}, {}, {"hm_size": 128}],
    "sigma": [{"sigma_64": 1.0}, {}, {"sigma_64": 3.0}, {"sigma_64": 4.0}],
    "skip": [{}, {"skip": False}],
}
DEFAULT_VARIANT = "hm64_sigma2_skip"
# the numbers of a variant compared with the default: name -> value of one run's "test" (evaluate.summarize per decoder)
ABLATION_METRICS = {**{f"px_{d}": (lambda t, d=d: t[d]["px"]) for d in DECODERS},
                    "px_sym": lambda t: t[REFINE_DEFAULT]["px_sym"],
                    "pck05": lambda t: t[REFINE_DEFAULT]["pck_bbox"]["0.05"],
                    "pck05_sym": lambda t: t[REFINE_DEFAULT]["pck_bbox_sym"]["0.05"]}
CATEGORIES = {"heatmap_only": "heatmap succeeds, regression fails", "regression_only": "regression succeeds, heatmap fails",
              "both_fail": "both fail"}  # failure_cases.json's keys, named by who succeeds
SUCCESS_T = 0.1  # the failure analysis' threshold, a fraction of the GT bbox diagonal
SUCCESS_RULE = f"a keypoint succeeds when its strict error <= {SUCCESS_T} x bbox diagonal (PCK@{SUCCESS_T}, bbox)"


def variant_config(overrides):
    """Full config of a variant: heatmap size, sigma in heatmap px and in image px, skip."""
    cfg = {**BASE, **overrides}
    sigma_hm = cfg["sigma_64"] * cfg["hm_size"] / 64
    return {"hm_size": cfg["hm_size"], "sigma_hm": sigma_hm, "sigma_img": sigma_hm * 128 / cfg["hm_size"],
            "skip": cfg["skip"]}


def variant_name(cfg):
    return f"hm{cfg['hm_size']}_sigma{cfg['sigma_img'] / 2:g}_{'skip' if cfg['skip'] else 'noskip'}"


def ablation_study(dataset, model_class=HeatmapNet, studies=tuple(STUDIES), seeds=(0,), store=None, options=None):
    """Train (or reuse) and score HeatmapNet's ablation variants on `dataset` (a course-layout keypoints folder) per
    seed, through the run store (runs.Store: out_dir, jobs, force, partial, ...; default: results/, one job); options:
    recipe options of every run (train.DEFAULTS: epochs, precision; default precision: STUDY_PRECISION). A variant with
    no stored run is left out when store.partial. Returns the results (module docstring), also written to
    <store.out_dir>/ablation_results.json (one seed) or ablation_seeds.json."""
    if model_class is not HeatmapNet:
        raise ValueError("the ablations are defined for HeatmapNet")
    store = replace(store or Store(RESULTS_DIR, dataset, train_recipe), kp_dir=Path(dataset))
    options = {"epochs": DEFAULTS["epochs"], "precision": STUDY_PRECISION, **(options or {})}
    out_dir, data = Path(store.out_dir), data_fingerprint(dataset)
    studies_out = {study: [variant_name(variant_config(o)) for o in STUDIES[study]] for study in studies}
    todo = {variant_name(cfg): cfg for cfg in (variant_config(o) for study in studies for o in STUDIES[study])}
    recipes = {(name, s): make_recipe("heatmap", data, seed=s, heatmap_size=cfg["hm_size"], sigma=cfg["sigma_hm"],
                                      model_kwargs={"skip": cfg["skip"]}, **options)
               for name, cfg in todo.items() for s in seeds}
    # evaluated on the translation test set too, like every store run, so a run shared with the studies (the
    # default variant is the spec HeatmapNet) has one evaluation, not two that replace each other
    got = collect(recipes, store)
    results = {"recipe": {"epochs": options["epochs"], "lr": DEFAULTS["lr"], "batch_size": DEFAULTS["batch_size"],
                          "precision": options["precision"], "refined_decoder": REFINE_DEFAULT, "data": data},
               "seeds": list(seeds), "partial": None in got.values(), "studies": studies_out, "variants": {}}
    for name, cfg in todo.items():
        stored = [(s, *got[name, s]) for s in seeds if got[name, s]]
        history = ("best_epoch", "best_val_loss", "best_val_px_error", "train_seconds")
        rows = [{"seed": s, "run": run_name(info["recipe"]), "test": {d: ev["test"][d] for d in DECODERS},
                 **{k: info["history"][k] for k in history}} for s, info, ev in stored]
        if rows:
            results["variants"][name] = {"config": cfg, "runs": rows}
    base = results["variants"].get(DEFAULT_VARIANT, {}).get("runs", [])
    for name, v in results["variants"].items():  # each variant minus the default, paired by seed
        if name != DEFAULT_VARIANT:
            v["paired_to_default"] = {k: paired_by_seed(base, v["runs"], lambda x, get=get: get(x["test"]))[1]
                                      for k, get in ABLATION_METRICS.items()}
    # the main command's table (one seed) and the seeded study's never replace each other; nor do their figures
    write_json(out_dir / f"ablation_{'results' if len(seeds) == 1 else 'seeds'}.json", results)
    return results


def plot_ablations(results, vis_dir):
    """Mean px error and PCK@0.05 vs sigma, vs resolution, and skip vs no-skip, per decoder (strict and
    symmetric), mean over seeds with each seed's value as a dot."""
    variants = results["variants"]
    for study, xlabel in (("sigma", "σ of the Gaussian target (image px)"),
                          ("resolution", "heatmap resolution (cells per side)"), ("skip", "skip connections")):
        names = [n for n in results["studies"].get(study, []) if n in variants]
        if not names:
            continue
        cfgs = [variants[n]["config"] for n in names]
        xs = {"sigma": [c["sigma_img"] for c in cfgs], "resolution": [c["hm_size"] for c in cfgs],
              "skip": ["with" if c["skip"] else "without" for c in cfgs]}[study]
        pos = list(range(len(xs))) if study == "skip" else xs
        fig, axes = plt().subplots(1, 2, figsize=(10, 3.8))
        for decoder, style in zip(DECODERS, ("o:", "s--")):
            for matching, sfx, color in (("as labelled", "", "C0"), ("either order", "_sym", "C2")):
                for ax, get in ((axes[0], lambda e: e["pck_bbox" + sfx]["0.05"]), (axes[1], lambda e: e["px" + sfx])):
                    per_seed = [[get(r["test"][decoder]) for r in variants[n]["runs"]] for n in names]
                    label = f"{'quarter step' if decoder == 'quarter' else decoder}, hands {matching}"
                    ax.plot(pos, [sum(v) / len(v) for v in per_seed], style, color=color, label=label)
                    for x, v in zip(pos, per_seed):
                        ax.plot([x] * len(v), v, ".", color=color, alpha=0.35, ms=4)
        for ax, ylabel in zip(axes, ("PCK@0.05 (bbox)", "mean error (px, 128-px image)")):
            ax.set(xlabel=xlabel, ylabel=ylabel)
            ax.set_xticks(pos, [f"{x:g}" if isinstance(x, float) else str(x) for x in xs])
            ax.grid(alpha=0.3)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8)
        n_seeds = sorted({len(variants[n]["runs"]) for n in names})
        fig.suptitle(f"Ablation: {study} (HeatmapNet, test split; line = mean of "
                     f"{'/'.join(map(str, n_seeds))} seed(s) per variant, dots = seeds)")
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        save_figure(fig, Path(vis_dir) / f"ablation_{study}{'' if len(results['seeds']) == 1 else '_seeds'}.png")


def failure_categories(ok_heatmap, ok_regression):
    """Boolean masks [N, K] per category from per-keypoint success masks of the two methods."""
    ok_h, ok_r = torch.as_tensor(ok_heatmap, dtype=torch.bool), torch.as_tensor(ok_regression, dtype=torch.bool)
    return {"heatmap_only": ok_h & ~ok_r, "regression_only": ok_r & ~ok_h, "both_fail": ~ok_h & ~ok_r}


def characterise(mask, gt, preds, radius_px):
    """How many keypoints and images of `mask` [N, K] fail, the true hand gap of the images whose hands fail (next to
    the whole test split's), and where each method put the hands counted in `mask`: how many of its predictions
    [N, K, 2] lie within radius_px [N] (the success rule's) of the image's other true hand, and of the midpoint
    between the two true hands."""
    hands = mask[:, HANDS]
    gaps, hand_rows = hand_gap(gt), hands.any(1)
    other, midpoint = gt[:, HANDS[::-1]], gt[:, HANDS].mean(1, keepdim=True)

    def near(pred, target):  # counted hands whose prediction lies within the radius of `target`
        return int((((pred[:, HANDS] - target).norm(dim=-1) <= radius_px[:, None]) & hands).sum())

    return {"keypoints": int(mask.sum()), "images": int(mask.any(1).sum()),
            "hand_gap_px": {"these": float(gaps[hand_rows].mean()) if hand_rows.any() else None,
                            "all": float(gaps.mean())},
            "hands": {"count": int(hands.sum()),
                      **{m: {"on_other_hand": near(p, other), "near_midpoint": near(p, midpoint)}
                         for m, p in preds.items()}}}


def analyze_failure_cases(model, test_loader, out_dir=RESULTS_DIR, device="cpu"):
    """Compare the two trained methods keypoint by keypoint (SUCCESS_RULE) on a non-shuffled test loader. model:
    {'heatmap': HeatmapNet, 'regression': RegressionNet} (or a 2-tuple in that order). Writes out_dir/failure_cases.json
    ({"rule", "num_images", "counts", "per_keypoint": {CATEGORIES key: ...}, "characterisation",
    "fixed_by_symmetric_matching", "gallery": {category: [{"image", "keypoint"}]}}) and a gallery PNG per category, one
    row per keypoint that fails in it (its median-error example); returns the dict."""
    hm_model, rg_model = (model["heatmap"], model["regression"]) if isinstance(model, dict) else model
    ds, gt = test_loader.dataset, test_loader.dataset.keypoints
    hm_out = run_model(hm_model.to(device), test_loader, device, "fp32")
    pred_h = decode("heatmap", hm_out, REFINE_DEFAULT)
    pred_r = decode("regression", run_model(rg_model.to(device), test_loader, device, "fp32"))
    ok_h, ok_r, ok_h_sym, ok_r_sym = (pck_matrix(pred, gt, [SUCCESS_T], "bbox", symmetric=sym)[0]
                                      for sym in (False, True) for pred in (pred_h, pred_r))
    cats = failure_categories(ok_h, ok_r)
    result = {"rule": SUCCESS_RULE, "num_images": len(gt), "counts": {c: int(m.sum()) for c, m in cats.items()},
              "per_keypoint": {c: {n: int(v) for n, v in zip(KEYPOINT_NAMES, m.sum(0))} for c, m in cats.items()},
              "characterisation": {c: characterise(m, gt, {"heatmap": pred_h, "regression": pred_r},
                                                   SUCCESS_T * pck_normalizer(gt, "bbox").float())
                                   for c, m in cats.items()},
              "gallery": {}}
    # symmetric view: how many strict failures are only a hand-label swap?
    result["fixed_by_symmetric_matching"] = {"heatmap": int((ok_h_sym & ~ok_h).sum()),
                                             "regression": int((ok_r_sym & ~ok_r).sum())}
    err_h, err_r = keypoint_distances(pred_h, gt), keypoint_distances(pred_r, gt)
    for cat, mask in cats.items():
        # one row per keypoint that fails in this category: its typical example, the median error of the failing
        # method(s) among the images where that keypoint is in the category
        failing_err = {"heatmap_only": err_r, "regression_only": err_h, "both_fail": torch.maximum(err_h, err_r)}[cat]
        rows = []
        for k in range(len(KEYPOINT_NAMES)):
            images = torch.nonzero(mask[:, k]).flatten()
            if len(images):
                rows.append((int(images[failing_err[images, k].argsort()[(len(images) - 1) // 2]]), k))
        result["gallery"][cat] = [{"image": i, "keypoint": KEYPOINT_NAMES[k]} for i, k in rows]
        if not rows:
            continue
        fig, axes = plt().subplots(len(rows), 3, figsize=(8.4, 2.9 * len(rows)), squeeze=False)
        for row, (i, k) in zip(axes, rows):  # HeatmapNet's and regression's predictions, the heatmap of keypoint k
            for ax, method, pred in ((row[0], "heatmap", pred_h), (row[1], "regression", pred_r)):
                err = (pred[i, k] - gt[i, k]).norm()
                draw_keypoints(ax, ds.images[i], pred[i], gt[i], f"{method}: {err:.1f} px on {KEYPOINT_NAMES[k]}")
            row[2].imshow(hm_out[i, k].numpy(), cmap="magma", extent=(-0.5, 127.5, 127.5, -0.5))
            row[2].plot(*gt[i, k].numpy(), "c+", ms=9, mew=1.5)
            row[2].plot(*pred_h[i, k].numpy(), "wx", ms=8, mew=1.5)  # HeatmapNet's decoded prediction
            row[2].set(xticks=[], yticks=[])
            row[2].set_title(f"{KEYPOINT_NAMES[k]} heatmap (test #{i})", fontsize=9)
        counts = ", ".join(f"{KEYPOINT_NAMES[k]} {int(mask[:, k].sum())}" for _, k in rows)
        fig.suptitle(f"Failure cases: {CATEGORIES[cat]} (rule: PCK@0.1 bbox; o or + = GT, x = prediction)\none row per "
                     f"keypoint that fails here, its median-error example; keypoints in this category: {counts}",
                     fontsize=10)
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=len(KEYPOINT_NAMES), fontsize=8,
                   title="colour of each keypoint (x = prediction, o = ground truth)", title_fontsize=8)
        fig.tight_layout(rect=(0, 0.12 / len(rows), 1, 1))
        save_figure(fig, Path(out_dir) / "visualizations" / f"failures_{cat}.png")
    write_json(Path(out_dir) / "failure_cases.json", result)
    return result


def main(argv=None):
    p = ArgumentParser(description="HeatmapNet ablations (resolution 32/64/128, sigma 1-4, skip on/off) over "
                                "seeds, and failure cases of both methods. Resumable: stored runs are reused.")
    add_recipe_args(p)
    p.add_argument("--studies", nargs="*", default=list(STUDIES), choices=list(STUDIES),
                   help="which ablations to run (default: all; none with --studies)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="seeds per variant (default 0: the assignment; the study command uses 0 1 2)")
    p.add_argument("--jobs", type=positive(int, 1), default=1,
                   help="runs trained side by side (CPU threads split between them)")
    p.add_argument("--no-failures", action="store_true", help="skip the failure-case analysis")
    p.add_argument("--force", action="store_true", help="retrain variants that are already stored")
    p.add_argument("--partial", action="store_true",
                   help="train nothing: write the table from the (variant, seed) runs already stored")
    p.add_argument("--allow-mixed-runs", action="store_true", help="see evaluate.py")
    args = p.parse_args(argv)
    if args.partial and args.force:
        p.error("--partial trains nothing, --force retrains: pass one of them")
    set_threads(args.threads)
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device)
    kp_dir = resolve_keypoints_dir(args.data_dir)
    vis_dir = args.out_dir / "visualizations"
    models = None
    if not args.no_failures:  # check the checkpoints before any training
        loaded, _ = load_run_checkpoints(args.out_dir, ("heatmap", "regression"), kp_dir, args.allow_mixed_runs)
        models = {m: mt for m, (mt, _) in loaded.items()}
    t0 = time.time()
    with results_lock(args.out_dir, "baseline.py"):
        if args.studies:
            store = Store(args.out_dir, kp_dir, train_recipe, device=device, jobs=args.jobs, force=args.force,
                          partial=args.partial)
            results = ablation_study(kp_dir, HeatmapNet, args.studies, args.seeds, store,
                                     {"epochs": args.epochs, "precision": precision})
            plot_ablations(results, vis_dir)
        if models is not None:
            test_ds = load_split(kp_dir, "test", "regression")
            fc = analyze_failure_cases(models, make_loader(test_ds, 64), args.out_dir, device=device)
            print(f"\nfailure cases ({fc['rule']}), {fc['num_images']} test images x 5 keypoints:")
            for cat, n in fc["counts"].items():
                print(f"  {CATEGORIES[cat]:<36}{n:>5}   " + "  ".join(f"{k}={v}" for k, v in fc["per_keypoint"][cat].items()))
        if args.studies and models is not None and not args.partial:  # a full run; seed 0: the assignment's step
            step = "baseline.py" + ("" if args.seeds == [0] else " --seeds " + " ".join(map(str, args.seeds)))
            record_timing(args.out_dir, step, time.time() - t0, device, precision, args.jobs)
    print(f"baseline.py done in {fmt_time(time.time() - t0)}")
    if args.studies and models is not None and args.seeds == [0]:
        print_summary(args.out_dir)


def print_summary(out_dir):
    """The main command's last screen: the PCK table of metrics.json when it scored the train.py run in
    training_log.json (else which run it shows and what to run), where the figures are, and how long the three steps
    took on this machine (timings.json, as each script recorded itself)."""
    metrics, timings = read_json(out_dir / "metrics.json", default={}), read_json(out_dir / "timings.json", default={})
    log = read_json(out_dir / "training_log.json", default={})
    scored, trained = (metrics.get("provenance") or {}).get("run_id"), log.get("run_id")
    methods = [m for m in ("heatmap", "regression", "integral") if m in metrics]
    if methods and scored == trained:
        print_metrics_table(metrics, methods)
    elif methods:
        print(f"\nmetrics.json scored train.py run {scored}, not the last one ({trained}): its table is not shown; "
              f"run `python problem2/evaluate.py` to score the last run")
    print(f"\nfigures: {out_dir / 'visualizations'}; tables: {out_dir}/*.json "
          f"(run `python problem2/report.py` to refresh the report's and README's tables)")
    if timings:
        print(f"time of train.py, evaluate.py and baseline.py: {main_time(timings)}")


if __name__ == "__main__":
    run_cli(main)
