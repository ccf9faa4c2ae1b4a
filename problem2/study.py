"""The "why" study: `python study.py` (see --help). Reuses train.py's loop and evaluate.py's decoding/metrics.

Studies (each through the recipe-keyed run store of runs.py, results/runs/: a run is trained once and shared by every
study whose recipe is identical; --jobs N trains N side by side; --partial trains nothing and writes each study from
the runs stored, except seeds, which keeps its previous section until all its runs are there):
  readouts    The controlled readout study (readouts.py): 9 readouts on one encoder x --seeds (fp32).
  hand_loss   The symmetric hand loss vs the strict one, three methods x --seeds (fp32); writes
              results/heatmap_symmetric_model.pth (seed 0).
  data        Training-set sizes (--sizes) at the full set's number of Adam steps, three methods x --seeds
              (--data-precision, default bf16).
  seeds       The three spec methods over --seeds (the readout study's runs): mean +- std of the test metrics
              and each pair's difference paired by seed.
  precision   bf16 minus fp32 over every pair of stored runs whose recipes differ only in precision (trains nothing).

study_results.json holds one section per study, keyed by its name. Paired differences are {"diff", "ci95", "n"}
(common.paired_difference); per-seed rows are runs.run_row's; test split, from each run's eval.json.
"""
import argparse
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from codec import HAND_LOSSES, REFINE_DEFAULT
from common import (RESULTS_DIR, fmt_time, paired_difference, paired_metrics, plt, positive, read_json, recipe_key,
                    results_lock, save_figure, set_threads, write_json)
from dataset import data_fingerprint, load_split, resolve_keypoints_dir, shifted_test_dir
from evaluate import PCK_THRESHOLDS, hand_gap
import readouts
import train
from runs import RULES, STUDY_PRECISION, collect, load_stored, run_dir_of, run_name, run_row

METHODS = ("heatmap", "regression", "integral")
STUDIES = ("readouts", "hand_loss", "data", "seeds", "precision")


# ----------------------------------------------------------------------------- runs
def spec_recipe(method, kp_dir, seed=0, **kw):
    """The spec recipe of one method on this data, in the studies' precision (shared with the readout study)."""
    return train.make_recipe(method, data_fingerprint(kp_dir), seed, precision=STUDY_PRECISION, **kw)


def test_summary(recipe, ev):
    """evaluate.summarize() of a run's val-loss checkpoint on the test split, default decoder (from eval.json)."""
    return ev["val_loss"]["test"][REFINE_DEFAULT if recipe["target"]["type"] == "heatmap" else "direct"]


# ----------------------------------------------------------------------------- studies
def collect_runs(recipes, kp_dir, results_dir, jobs=1, partial=False, log=print, shifted_dir=None):
    """runs.collect in results_dir/runs, evaluated on the default shifted test set unless told otherwise."""
    return collect(recipes, kp_dir, results_dir / "runs", train.train_recipe, shifted_dir or shifted_test_dir(), jobs,
                   partial, log)


# the numbers of a run_row the store studies pair by seed, by name; PCK at the 0.05 threshold; best_epoch: the
# val-loss rule's epoch (IntegralNet's is early under the strict loss: does the hand ambiguity cause it?)
RUN_ROW_METRICS = {**{k: (lambda row, k=k: row[k]) for k in ("px", "px_sym", "px_hands_sym", "hand_gap_px",
                                                             "best_epoch")},
                   **{k: (lambda row, k=k: row[k]["0.05"]) for k in ("pck_bbox", "pck_bbox_sym")}}
HAND_LOSS_METRICS = RUN_ROW_METRICS  # symmetric minus strict loss


def study_hand_loss(kp_dir, results_dir, seeds, jobs=1, partial=False, log=print,
                    epochs=train.DEFAULTS["epochs"]):
    """The symmetric hand loss (train.py --hand-loss symmetric) on the faithful labels, for the three methods
    over seeds, next to the strict loss of the same recipe (run store, fp32). The seed-0 HeatmapNet is also
    written to results/heatmap_symmetric_model.pth (loads into HeatmapNet)."""
    data = data_fingerprint(kp_dir)
    recipes = {(m, loss, s): train.make_recipe(m, data, s, epochs, hand_loss=loss, precision=STUDY_PRECISION)
               for m in METHODS for loss in HAND_LOSSES for s in seeds}
    got = collect_runs(recipes, kp_dir, results_dir, jobs, partial, log)
    res = {"precision": STUDY_PRECISION, "seeds": list(seeds), "rows": {}}
    for (m, loss, s), run in got.items():
        if run is not None:
            res["rows"].setdefault(f"{m}_{loss}", []).append(run_row(s, *run))
    ckpt = run_dir_of(results_dir / "runs", recipes["heatmap", "symmetric", seeds[0]]) / RULES["val_loss"]
    if ckpt.exists():
        shutil.copyfile(ckpt, results_dir / "heatmap_symmetric_model.pth")
    res["hand_gap_px_ground_truth"] = float(hand_gap(load_split(kp_dir, "test", "regression").keypoints).mean())
    res["paired"] = {}
    for m in METHODS:
        strict, sym = (res["rows"].get(f"{m}_{loss}", []) for loss in ("strict", "symmetric"))
        res["paired"][m] = paired_metrics(strict, sym, HAND_LOSS_METRICS)
    rows = res["rows"]  # HeatmapNet minus IntegralNet under each hand loss, paired by seed
    res["heatmap_minus_integral"] = {loss: paired_metrics(rows.get(f"integral_{loss}", []),
                                                                   rows.get(f"heatmap_{loss}", []), HAND_LOSS_METRICS)
                                     for loss in HAND_LOSSES}
    return res


def fixed_step_epochs(n_train, batch_size=32, ref_train=1000, ref_epochs=30):
    """Epochs that give n_train images as many optimisation steps as ref_train images get in ref_epochs."""
    return round(ref_epochs * math.ceil(ref_train / batch_size) / math.ceil(n_train / batch_size))


# each smaller set minus the full set at fixed steps; px_valpx: test px of the checkpoint the val-px rule selects
# (IntegralNet's val-loss rule picks an early epoch under the strict loss)
DATA_METRICS = {**{k: RUN_ROW_METRICS[k] for k in ("px", "px_sym", "pck_bbox")},
                "px_valpx": lambda row: row["by_val_px"]["px"]}
DATA_PRECISION = "bf16"  # the data study's runs (the fixed-step runs of the small sets are long); --data-precision


def study_data(kp_dir, results_dir, seeds, sizes, jobs=1, partial=False, log=print, epochs=train.DEFAULTS["epochs"],
               shifted_dir=None, precision=DATA_PRECISION):
    """Test error vs training-set size at a FIXED number of optimisation steps (fixed_step_epochs), validated at the
    same steps as the full-set run (val_every), so the curve measures data, not step count; the three methods in
    `precision`, recording whatever runs are stored (each row names its seed)."""
    data = data_fingerprint(kp_dir)
    n_all, batch = data["split_sizes"]["train"], train.DEFAULTS["batch_size"]
    sizes = sorted({n for n in sizes if n < n_all}) + [n_all]
    steps_epochs = {n: fixed_step_epochs(n, batch, n_all, epochs) for n in sizes}
    # validate every full-set epoch's worth of steps (exact when the batch counts divide, as for 125/250/500 of 1000)
    val_every = {n: max(1, round(math.ceil(n_all / batch) / math.ceil(n / batch))) for n in sizes}
    recipes = {(m, n, s): train.make_recipe(m, data, s, steps_epochs[n], num_train=n, precision=precision,
                                            val_every=val_every[n]) for m in METHODS for n in sizes for s in seeds}
    got = collect_runs(recipes, kp_dir, results_dir, jobs, partial, log, shifted_dir)
    res = {"precision": precision, "seeds": list(seeds), "sizes": sizes,
           "epochs": {str(n): e for n, e in steps_epochs.items()}, "batch_size": batch, "rows": {}}
    for (m, n, s), run in got.items():
        if run is not None:
            res["rows"].setdefault(m, {}).setdefault(str(n), []).append(run_row(s, *run))
    res["paired_to_full"] = {m: {str(n): paired_metrics(by_n.get(str(n_all), []), by_n.get(str(n), []), DATA_METRICS)
                                 for n in sizes[:-1]} for m, by_n in res["rows"].items()}
    if len({n for by_n in res["rows"].values() for n in by_n}) > 1:  # a curve needs two sizes
        plot_data_steps(res, results_dir / "visualizations")
    return res


PRECISION_METRICS = {k: RUN_ROW_METRICS[k] for k in ("px", "px_sym", "pck_bbox")}  # bf16 minus fp32


def recipe_label(recipe):
    """'heatmap hm_size=32 sigma=1.0, seed 0': the method, every recipe setting (one level into "model" and
    "target") that differs from the spec recipe of that method on the same data, and the seed."""
    base = train.make_recipe(recipe["method"], recipe["data"], recipe["seed"], precision=recipe["precision"],
                             loss=recipe.get("loss", "mse"))  # the loss a method can train with: named below
    diff = []
    for k, v in recipe.items():
        if isinstance(v, dict) and k != "data":
            diff += [f"{sub}={x}" for sub, x in v.items() if base.get(k, {}).get(sub) != x]
        elif k not in ("method", "seed", "data") and base.get(k) != v:
            diff.append(f"{k}={v}")
    loss = [f"loss={recipe['loss']}"] if "loss" in recipe else []
    return " ".join([recipe["method"], *loss, *dict.fromkeys(diff)]) + f", seed {recipe['seed']}"


def study_precision(kp_dir, results_dir, log=print, shifted_dir=None):
    """bf16 vs fp32 training on the CPU, on the run store as it is (trains nothing): every pair of stored, evaluated
    CPU runs
    whose recipes differ only in "precision" (method, options, seed, data all the same), bf16 minus fp32 on the
    test split (px: mean error in 128-px image px; PCK@0.05 as a fraction), paired by recipe. Each row names
    the machine (and threads) that trained it: a machine or thread-count effect is not separated from precision."""
    runs_root, data = results_dir / "runs", data_fingerprint(kp_dir)
    shifted_dir = shifted_dir or shifted_test_dir()
    by_recipe = {}
    for path in sorted(runs_root.glob("*/run.json")):
        recipe = read_json(path)["recipe"]
        got = recipe["data"] == data and load_stored(recipe, kp_dir, runs_root, shifted_dir)
        if got and "gpu" not in got[0]["machine"]:  # CPU runs only: a GPU's kernels would be a second factor
            row = {**run_row(recipe["seed"], *got), "machine": got[0]["machine"]}
            by_recipe.setdefault(recipe_key({**recipe, "precision": None}), {"label": recipe_label(recipe)})[
                recipe["precision"]] = row
    pairs = [p for p in by_recipe.values() if "fp32" in p and "bf16" in p]
    log(f"[study] precision: {len(pairs)} recipe(s) stored in both fp32 and bf16")
    paired = {k: paired_difference([get(p["fp32"]) for p in pairs], [get(p["bf16"]) for p in pairs])
              for k, get in PRECISION_METRICS.items()}
    return {"pairs": pairs, "paired": {"n": len(pairs), **paired}}

SEED_PAIRS = (("heatmap", "regression"), ("integral", "regression"), ("heatmap", "integral"))


def metrics_of(summary):
    """Every headline metric of a summarize() output, flat: mean px error and PCK at the four thresholds, bbox
    and torso, strict and symmetric (keys like 'pck_torso_0.15_symmetric')."""
    out = {}
    for matching, suffix in (("strict", ""), ("symmetric", "_symmetric")):
        out[f"mean_px_error{suffix}"] = summary[matching]["mean_px_error"]
        for norm in ("bbox", "torso"):
            out.update({f"pck_{norm}_{t}{suffix}": summary[matching]["pck"][norm][str(t)] for t in PCK_THRESHOLDS})
    return out


def study_seeds(kp_dir, results_dir, seeds, jobs=1, partial=False, log=print):
    """The three methods over seeds (the readout study's gap_fc, integral_64 and heatmap_64 runs): mean +- std of
    every headline metric, and each pair's difference paired by seed with a 95% t-interval
    (common.paired_difference). Numbers from eval.json."""
    recipes = {(m, s): spec_recipe(m, kp_dir, s) for m in METHODS for s in seeds}
    got = collect_runs(recipes, kp_dir, results_dir, jobs, partial, log)
    if len(seeds) < 2 or any(v is None for v in got.values()):
        return None  # a section over fewer seeds than asked would not say what the report says it does
    per_seed = {m: [metrics_of(test_summary(recipes[m, s], got[m, s][1])) for s in seeds] for m in METHODS}
    names = list(per_seed[METHODS[0]][0])
    res = {"seeds": list(seeds), "runs": {f"{m}_{s}": run_name(r) for (m, s), r in recipes.items()},
           "per_seed": per_seed,
           "mean": {m: {k: float(np.mean([r[k] for r in per_seed[m]])) for k in names} for m in METHODS},
           "std": {m: {k: float(np.std([r[k] for r in per_seed[m]], ddof=1)) for k in names} for m in METHODS},
           "paired_over_seeds": {f"{a}-{b}": {k: paired_difference([r[k] for r in per_seed[b]],
                                                                            [r[k] for r in per_seed[a]])
                                              for k in names} for a, b in SEED_PAIRS}}
    return res


# ----------------------------------------------------------------------------- figures
COLORS = {"heatmap": "C0", "regression": "C3", "integral": "C4"}


def _plain_numbers(ax, axis="y"):
    """Plain tick labels (3, 10, 30) on a log axis instead of 3x10^0 and crowded minor labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(ScalarFormatter())
    target.set_minor_formatter(NullFormatter())


def plot_data_steps(d, vis_dir):
    """Test error vs training-set size at a fixed number of optimisation steps: mean over the stored seeds
    (line), each seed a dot."""
    fig, axes = plt().subplots(1, 2, figsize=(10, 3.8))
    sizes = d["sizes"]
    for m in METHODS:
        rows = d["rows"].get(m, {})
        xs = [n for n in sizes if rows.get(str(n))]
        for ax, get in ((axes[0], lambda row: row["px"]), (axes[1], lambda row: row["pck_bbox"]["0.05"])):
            per = [[get(row) for row in rows[str(n)]] for n in xs]
            ax.plot(xs, [np.mean(v) for v in per], "o-", color=COLORS[m], label=m)
            for n, v in zip(xs, per):
                ax.plot([n] * len(v), v, ".", color=COLORS[m], alpha=0.4, ms=5)
    for ax, yl in zip(axes, ("mean error (px, strict)", "PCK@0.05 (bbox, strict)")):
        ax.set(xscale="log", xlabel="training images (epochs: " + ", ".join(f"{n}: {d['epochs'][str(n)]}" for n in sizes)
               + ")", ylabel=yl)
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_formatter(plt().NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    lo, hi = axes[0].get_ylim()
    axes[0].set_yticks([t for t in (0.5, 1, 2, 3, 5, 10, 20, 50, 100) if lo <= t <= hi] or [round(lo, 1), round(hi, 1)])
    _plain_numbers(axes[0])
    n_steps = math.ceil(sizes[-1] / d["batch_size"]) * d["epochs"][str(sizes[-1])]
    fig.suptitle(f"Data efficiency at a fixed number of optimisation steps ({n_steps} Adam steps each)\n"
                 f"line = mean over seeds, dots = seeds; test split, val-loss checkpoint")
    fig.tight_layout()
    save_figure(fig, vis_dir / "study_data_steps.png")


def main(argv=None):
    p = argparse.ArgumentParser(description="Why heatmaps beat regression, measured: the controlled readout study, "
                                "the symmetric hand loss, data at fixed steps, seeds, precision.")
    p.add_argument("--studies", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--sizes", nargs="+", type=positive(int, 1), default=[125, 250, 500],
                   help="training-set sizes below the full training split (which is always added)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="results folder (runs under <out-dir>/runs)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--jobs", type=positive(int, 1), default=1,
                   help="runs trained side by side (CPU threads split between them)")
    p.add_argument("--threads", type=positive(int, 0), default=0, help="torch CPU threads (0: default)")
    p.add_argument("--precision", default=readouts.STUDY_PRECISION, choices=["fp32", "bf16"],
                   help="precision of the readout runs (the other studies use fp32, the data study "
                   "--data-precision; a run is shared only between recipes of the same precision)")
    p.add_argument("--data-precision", default=DATA_PRECISION, choices=["fp32", "bf16"],
                   help="precision of the data study's runs")
    p.add_argument("--partial", action="store_true",
                   help="record the runs already stored, train none (the seeds study keeps its previous section "
                   "until all of its runs are stored)")
    args = p.parse_args(argv)
    set_threads(args.threads)
    results_dir, kp_dir = args.out_dir, resolve_keypoints_dir(args.data_dir)
    json_path = results_dir / "study_results.json"
    run = dict(jobs=args.jobs, partial=args.partial)
    fns = {"seeds": lambda: study_seeds(kp_dir, results_dir, args.seeds, **run),
           "hand_loss": lambda: study_hand_loss(kp_dir, results_dir, args.seeds, **run),
           "data": lambda: study_data(kp_dir, results_dir, args.seeds, args.sizes, precision=args.data_precision, **run),
           "precision": lambda: study_precision(kp_dir, results_dir),
           "readouts": lambda: readouts.study_readouts(kp_dir, results_dir, args.seeds, precision=args.precision, **run)}
    with results_lock(results_dir, "study.py"):
        results = {k: v for k, v in read_json(json_path, "python problem2/study.py", default={}).items() if k in STUDIES}
        for study in args.studies:
            t0, section = time.time(), fns[study]()
            if section is None:  # some of its runs are not stored yet (--partial): keep what was there
                print(f"[study] {study}: not all of its runs are stored yet; its section is left as it was")
                continue
            results[study] = section
            write_json(json_path, results)
            print(f"[study] {study} written in {fmt_time(time.time() - t0)}")


if __name__ == "__main__":
    sys.exit(main())
