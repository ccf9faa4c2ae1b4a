"""The "why" studies: `python study.py` (see --help), through the recipe-keyed run store of runs.py (a run is
trained once and shared by every study whose recipe is identical; --jobs N trains N side by side; --partial trains
nothing and writes each study from the runs stored). study_results.json holds a section per study:
  readouts    READOUTS, rows of model.METHODS on the spec's shared encoder, each with the spec recipe x --seeds
              (fp32), one factor at a time; its gap_fc, integral_64 and heatmap_64 rows are the three spec methods
              over seeds, the report's main table. {"precision", "seeds", "readouts": {name: {"method", "isolates",
              "params", "complete", "per_seed": [runs.run_row]}}, "references": {name: evaluate.summarize() +
              "px_shifted"}, "steps": [{"from", "to", "question", "seeds", metric: difference}] (to minus from),
              "shift": {name: px on the shifted test set minus px on the test set}}.
  hand_loss   The symmetric hand loss vs the strict one, three methods x --seeds (fp32), both losses also keeping
              the last epoch (rows <method>_symmetric_last; the LAST_EPOCH_RERUN methods' strict runs:
              <method>_strict_last; last_minus_best; ladder_last: the ladder's steps 1-6 at the last epoch, keyed by
              the row); integral_minus_regression and heatmap_minus_integral per hand loss and at the last epoch
              (keys strict_last, symmetric_last); for the PROBED networks trained as labelled and kept at their epoch
              of lowest val loss, as Section 4's Table 2 (runs.probe_of; checkpoints retrained where missing):
              placement {method: [{"seed", evaluate.hand_placement()}]} (placement_last: kept at the last epoch),
              readouts_probed {method: {read-out: per-seed rows}}, targets_at_peak {decoder: HeatmapNet minus
              IntegralNet, both read at their maps' peak}, targets_at_mean (the same, both read at the mean under their
              maps) and peak_minus_mean {decoder: IntegralNet read at its map's peak minus its own soft-argmax}.
Differences are paired by seed: {"diff", "ci95", "n"} (common.paired_difference).
"""
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from codec import DECODERS, HAND_LOSSES, hand_gap
from common import (ArgumentParser, RESULTS_DIR, fmt_time, paired_by_seed, paired_metrics, plt, positive, read_json,
                    results_lock, run_cli, save_figure, set_threads, write_json)
from dataset import data_fingerprint, figure_centre, load_split, resolve_keypoints_dir, shifted_test_dir
from evaluate import summarize
from model import build_model
import train
from runs import ROW_METRICS, STUDY_PRECISION, Store, collect, probe_of, run_dir_of, run_many, run_row

METHODS = ("heatmap", "regression", "integral")
STUDIES = ("readouts", "hand_loss")
# trained as labelled once more keeping the last epoch: the soft-argmax networks (their val loss is lowest early),
# HeatmapNet and the FC networks of Table 3, so the whole ladder can also be read at one epoch rule
LAST_EPOCH_RERUN = ("softargmax_8", "integral", "heatmap", "regression", "flatten_fc", "flatten_fc_nodropout",
                    "flatten_fc_plain")
LAST_RULES = ("strict_last", "symmetric_last")  # the hand losses, every network kept at its last epoch
PROBED = ("heatmap", "integral")  # heatmap vs coordinate targets, as labelled, best epoch: probed (runs.probe_of)
PROBE_METRICS = {k: ROW_METRICS[k] for k in ("px", "px_sym", "px_head_feet", "px_hands_sym", "hand_gap_px", "pck_bbox",
                                             "pck_bbox_sym")}  # the metrics a probe's read-out rows have


# readout -> (method row, what changes from the row above it / what it isolates)
READOUTS = {
    "gap_fc": ("regression", "RegressionNet as specified: global average pooling, FC layers with dropout, sigmoid"),
    "gap_fc_nodropout": ("gap_fc_nodropout", "RegressionNet's FC layers without dropout (sigmoid kept)"),
    "gap_fc_nosigmoid": ("gap_fc_nosigmoid", "RegressionNet's FC layers without the sigmoid (dropout kept)"),
    "gap_fc_plain": ("gap_fc_plain", "the same FC layers without dropout and sigmoid"),
    "gap_fc_wide": ("gap_fc_wide", "RegressionNet with its first FC layer widened to flattened FC's parameter count"),
    "reduce_gap_fc": ("reduce_gap_fc", "flattened FC's 1x1 conv to 32 channels, then averaged as in RegressionNet"),
    "flatten_fc": ("flatten_fc", "no pooling: 1x1 conv to 32 channels, the 8x8 map flattened into the FC head"),
    "flatten_fc_nodropout": ("flatten_fc_nodropout", "the same, its FC head without dropout (sigmoid kept)"),
    "flatten_fc_plain": ("flatten_fc_plain", "the same, its FC head without dropout and sigmoid"),
    "coordconv_gap_fc": ("coordconv_gap_fc", "RegressionNet with x/y channels appended before every encoder conv"),
    "decoder64_gap_fc": ("decoder64_gap_fc", "HeatmapNet's decoder (skips) to 64x64, then RegressionNet's head"),
    "softargmax_8": ("softargmax_8", "1x1 conv to 5 maps at 8x8, spatial soft-argmax, coordinate loss"),
    "heatmap_8": ("heatmap_8", "the same 1x1 conv at 8x8 trained as Gaussian heatmaps (σ 16 image px: a cell), MSE"),
    "integral_64": ("integral", "HeatmapNet's layers + soft-argmax at 64x64, coordinate loss"),
    "heatmap_64": ("heatmap", "HeatmapNet as specified"),
}
SPATIAL = ("softargmax_8", "heatmap_8", "integral_64", "heatmap_64")  # readouts that keep a spatial map
# FC layers on the 8x8 map's layout; every other readout pools it
FLATTENED = ("flatten_fc", "flatten_fc_nodropout", "flatten_fc_plain")
READOUT_LABELS = {  # short plain names, for the report's tables and the figure
    "gap_fc": "RegressionNet (pooled FC)", "gap_fc_nodropout": "pooled FC, no dropout",
    "gap_fc_nosigmoid": "pooled FC, no sigmoid", "gap_fc_plain": "pooled FC, no dropout/sigmoid",
    "gap_fc_wide": "pooled FC, wider", "reduce_gap_fc": "1x1 conv + pooled FC", "flatten_fc": "flattened FC",
    "flatten_fc_nodropout": "flattened FC, no dropout", "flatten_fc_plain": "flattened FC, no dropout/sigmoid",
    "coordconv_gap_fc": "CoordConv + pooled FC", "decoder64_gap_fc": "64x64 decoder + pooled FC",
    "softargmax_8": "soft-argmax at 8x8", "heatmap_8": "heatmaps at 8x8",
    "integral_64": "IntegralNet (soft-argmax at 64x64)", "heatmap_64": "HeatmapNet (heatmaps at 64x64)"}
# the paired differences the report interprets (to - from, per seed), each with the question it answers
STEPS = [("gap_fc", "gap_fc_plain", "is it the head's dropout and sigmoid?"),
         ("gap_fc", "gap_fc_nodropout", "the head's dropout alone"),
         ("gap_fc", "gap_fc_nosigmoid", "the head's sigmoid alone"),
         ("gap_fc", "flatten_fc", "is it the pooling? (the 8x8 map flattened: a 1x1 conv and more FC weights too)"),
         ("gap_fc", "gap_fc_wide", "is it flattening's extra weights? (pooled, as many parameters as flattened)"),
         ("gap_fc_wide", "flatten_fc", "with the parameter count equal: pooled vs the 8x8 map flattened"),
         ("gap_fc", "reduce_gap_fc", "is it flattening's 1x1 conv? (added, the map still pooled)"),
         ("reduce_gap_fc", "flatten_fc", "with the 1x1 conv either way: pooled vs the 8x8 map flattened"),
         ("gap_fc", "coordconv_gap_fc", "can pooled features carry position when the input gives it?"),
         ("gap_fc", "flatten_fc_nodropout", "the ladder's first two steps together: flattened, no dropout"),
         ("gap_fc", "flatten_fc_plain", "the ladder's first three steps together: flattened, no dropout/sigmoid"),
         ("gap_fc", "decoder64_gap_fc", "is it the decoder and resolution, with the pooling kept?"),
         ("gap_fc", "softargmax_8", "the spec head (FC, dropout, sigmoid) replaced by a shared-weight spatial readout"),
         ("gap_fc_plain", "softargmax_8", "the same swap from the head without dropout and sigmoid"),
         ("flatten_fc", "softargmax_8", "with the 8x8 layout kept either way: flattened FC head vs spatial readout"),
         ("flatten_fc", "flatten_fc_plain", "the flattened FC head's dropout and sigmoid"),
         ("flatten_fc", "flatten_fc_nodropout", "the flattened FC head's dropout alone"),
         ("flatten_fc_nodropout", "flatten_fc_plain", "the flattened FC head's sigmoid, once dropout is gone"),
         ("gap_fc_plain", "flatten_fc_plain", "no dropout/sigmoid either way: global pooling vs the 8x8 map flattened"),
         ("flatten_fc_plain", "softargmax_8", "8x8 layout kept, no dropout/sigmoid either way: flattened vs spatial"),
         ("decoder64_gap_fc", "integral_64", "on the same decoder to 64x64: GAP + FC head vs soft-argmax"),
         ("softargmax_8", "heatmap_8", "at 8x8: Gaussian heatmaps with MSE (argmax + quarter) vs soft-argmax"),
         ("softargmax_8", "integral_64", "the decoder to 64x64 under the spatial readout (coordinate loss)"),
         ("integral_64", "heatmap_64", "at 64x64: Gaussian heatmaps with MSE (argmax + quarter) vs soft-argmax"),
         ("gap_fc", "integral_64", "the spec head replaced by IntegralNet's decoder to 64x64 and soft-argmax"),
         ("gap_fc", "heatmap_64", "the whole gap between the spec networks")]
# one change at a time to RegressionNet (each a STEP from gap_fc), with what it changes: Appendix C's Table C1
ONE_FACTOR = [("gap_fc_nodropout", "dropout removed from the FC layers"),
              ("gap_fc_nosigmoid", "the final sigmoid removed"),
              ("gap_fc_plain", "both removed"),
              ("flatten_fc", "pooling replaced by flattening the 8x8 map (after a 1x1 conv to 32 channels)"),
              ("gap_fc_wide", "the first FC layer widened to the flattened network's parameter count"),
              ("coordconv_gap_fc", "x/y coordinate channels added to every encoder conv's input (CoordConv)"),
              ("decoder64_gap_fc", "HeatmapNet's decoder to 64x64 inserted before the pooling"),
              ("heatmap_64", "everything after the encoder replaced by HeatmapNet's decoder and heatmaps: HeatmapNet")]
# the ladder (Section 4's Table 3, and its figure): RegressionNet turned into HeatmapNet one change at a time,
# each row a STEP from the row above
LADDER = [("gap_fc", "RegressionNet as specified"),
          ("flatten_fc",
           "the 8x8 grid flattened into the FC layers instead of averaged (after a 1x1 conv to 32 channels)"),
          ("flatten_fc_nodropout", "dropout removed from the FC layers"),
          ("flatten_fc_plain", "the final sigmoid removed"),
          ("softargmax_8", "the FC layers replaced by a 1x1 conv to 5 maps of 8x8, read by a soft-argmax"),
          ("integral_64", "HeatmapNet's decoder to 64x64 maps added (IntegralNet)"),
          ("heatmap_64", "trained on heatmaps, read at their peaks, instead of on coordinates (HeatmapNet)")]
LADDER_TICKS = {"gap_fc": "RegressionNet", "flatten_fc": "grid flattened", "flatten_fc_nodropout": "dropout removed",
                "flatten_fc_plain": "sigmoid removed", "softargmax_8": "soft-argmax on 8x8 maps",
                "integral_64": "decoder to 64x64 (IntegralNet)",
                "heatmap_64": "heatmap targets (HeatmapNet)"}  # each LADDER row's change, as the figure names it
# Appendix C's Table C5: what Table 3's first step changes, each row a STEP from RegressionNet
POSITION_ROWS = [("gap_fc", "RegressionNet as specified: the 8x8 grid averaged into the FC layers"),
                 ("gap_fc_wide", "averaged, first FC layer widened to the flattened network's parameter count"),
                 ("reduce_gap_fc", "averaged after the flattened network's 1x1 convolution to 32 channels"),
                 ("coordconv_gap_fc", "averaged, x/y coordinate channels added to every encoder convolution's input"),
                 ("flatten_fc", "flattened into the FC layers (step 1 of Table 3)"),
                 ("heatmap_64", "HeatmapNet, for comparison")]



def reference_rows(kp_dir, shifted_dir):
    """What no training buys: the training-mean pose for every image, and the true figure centre plus the
    training-mean offsets of each keypoint from it (what knowing only *where the figure is* gives)."""
    train_kp = load_split(kp_dir, "train", "regression").keypoints.double()
    mean_pose = train_kp.mean(0)
    offsets = (train_kp - figure_centre(train_kp)[:, None]).mean(0)
    out = {}
    for name, predict in (("mean_pose", lambda gt: mean_pose.expand_as(gt)),
                          ("centre_plus_mean_offsets", lambda gt: figure_centre(gt)[:, None] + offsets)):
        gt = load_split(kp_dir, "test", "regression").keypoints.double()
        gt_shift = load_split(shifted_dir, "test", "regression").keypoints.double()
        out[name] = {**summarize(predict(gt), gt), "px_shifted": summarize(predict(gt_shift), gt_shift)["px"]}
    return out


def study_readouts(store, seeds=(0, 1, 2), precision=STUDY_PRECISION, epochs=train.DEFAULTS["epochs"]):
    """Train (or reuse) every readout x seed through the run store (runs.Store) and return the "readouts" section
    (schema in the module docstring); its figure goes to <store.out_dir>/visualizations."""
    store = replace(store, shifted_dir=store.shifted_dir or shifted_test_dir())
    kp_dir, shifted, data = store.kp_dir, store.shifted_dir, data_fingerprint(store.kp_dir)
    recipes = {(r, s): train.make_recipe(READOUTS[r][0], data, seed=s, epochs=epochs, precision=precision)
               for r in READOUTS for s in seeds}
    stored = collect(recipes, store)
    section = {"precision": precision, "seeds": list(seeds), "readouts": {},
               "references": reference_rows(kp_dir, shifted)}
    for r, (method, isolates) in READOUTS.items():
        rows = [run_row(s, *stored[r, s]) for s in seeds if stored[r, s] is not None]
        section["readouts"][r] = {
            "method": method, "isolates": isolates, "complete": len(rows) == len(seeds), "per_seed": rows,
            "params": sum(p.numel() for p in build_model(method, **recipes[r, seeds[0]]["model"]).parameters())}
    rows = {r: x["per_seed"] for r, x in section["readouts"].items()}
    section["steps"] = [{"from": a, "to": b, "question": question, **paired_metrics(rows[a], rows[b], ROW_METRICS)}
                        for a, b, question in STEPS]
    section["shift"] = {r: paired_by_seed(rows[r], rows[r], ROW_METRICS["px"], ROW_METRICS["px_shifted"])[1]
                        for r in READOUTS}
    plot_readouts(section, Path(store.out_dir) / "visualizations")
    plot_ladder(section, Path(store.out_dir) / "visualizations")
    return section


def plot_ladder(section, vis_dir):
    """Table 3 as a figure: each LADDER row's PCK@0.05 (hands as labelled) on the test split and on the shifted
    figures (bars: seed mean, dots: seeds)."""
    rows = [section["readouts"].get(n, {}).get("per_seed") for n, _ in LADDER]
    if not all(rows):
        return
    fig, ax = plt().subplots(figsize=(11, 4.6))
    x = np.arange(len(LADDER))
    for off, (key, label, color) in zip((-0.2, 0.2), (("pck_bbox", "test split", "C0"),
                                                      ("pck_bbox_shifted", "shifted figures", "C1"))):
        per_seed = [[row[key]["0.05"] for row in r] for r in rows]
        means = [float(np.mean(v)) for v in per_seed]
        ax.bar(x + off, means, 0.4, color=color, alpha=0.6, label=label)
        for i, (vals, m) in enumerate(zip(per_seed, means)):
            ax.plot([i + off] * len(vals), vals, "k.", ms=5)
            ax.text(i + off, max(m, *vals) + 0.015, f"{m:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"{i}: {LADDER_TICKS[n]}" for i, (n, _) in enumerate(LADDER)], rotation=20, ha="right", fontsize=9)
    ax.set(ylim=(0, 1.05), ylabel="PCK@0.05, hands as labelled")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=9, loc="upper left")
    ax.set_title(f"From RegressionNet (step 0) to HeatmapNet (step {len(LADDER) - 1}), one change per step, each "
                 f"kept from the step before (bars: mean of the seeds; dots: seeds)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, vis_dir / "study_ladder.png")


def plot_readouts(section, vis_dir):
    """Per readout (bars: seed mean, dots: seeds), hands as labelled: PCK@0.05 (the report's measure) and the mean px
    error (log scale); the two reference rows as lines."""
    names = [n for n, r in section["readouts"].items() if r["per_seed"]]
    if not names:
        return
    at05 = lambda v: v["0.05"] if isinstance(v, dict) else v  # noqa: E731  a PCK stored per threshold
    panels = (("pck_bbox", "PCK@0.05, hands as labelled (higher is better)"),
              ("px", "mean error, hands as labelled (px, log scale; lower is better)"))
    fig, axes = plt().subplots(1, 2, figsize=(13, 4.8))
    for ax, (key, title) in zip(axes, panels):
        per_seed = [[at05(row[key]) for row in section["readouts"][n]["per_seed"]] for n in names]
        means = [float(np.mean(v)) for v in per_seed]
        ax.bar(range(len(names)), means, alpha=0.6,
               color=["C0" if n in SPATIAL else "C1" if n in FLATTENED else "C3" for n in names])
        for i, (vals, m) in enumerate(zip(per_seed, means)):
            ax.plot([i] * len(vals), vals, "k.", ms=6)
            top = max(m, *vals)
            ax.text(i, top + 0.02 if key == "pck_bbox" else top * 1.12, f"{m:.3f}" if key == "pck_bbox" else f"{m:.2f}",
                    ha="center", va="bottom", fontsize=8)  # above every dot
        ref = section["references"]
        ax.axhline(at05(ref["mean_pose"][key]), color="0.4", ls="--", lw=1, label="mean pose (no training)")
        ax.axhline(at05(ref["centre_plus_mean_offsets"][key]), color="C2", ls=":", lw=1.5,
                   label="true centre + mean offsets (no training)")
        ax.set_xticks(range(len(names)), [READOUT_LABELS[n] for n in names], rotation=35, ha="right", fontsize=9)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set(ylim=(0, 1.05), ylabel="PCK@0.05 (test)")
    axes[1].set(yscale="log", ylabel="mean error (px, test)")
    axes[1].minorticks_off()
    ticks = [1, 2, 3, 5, 10, 20, 50]
    axes[1].set_yticks(ticks, [f"{t:g}" for t in ticks])
    axes[1].set_ylim(1, 60)
    axes[0].legend(fontsize=8, loc="upper left")
    n_seeds = max(len(section["readouts"][n]["per_seed"]) for n in names)
    fig.suptitle(f"{len(names)} variants of the assignment's networks, test split (bars = mean, dots = seeds, up to "
                 f"{n_seeds})\nred: the encoder's 8x8 grid averaged into FC layers; orange: the grid flattened into FC "
                 f"layers; blue: maps read as maps (soft-argmax or heatmap)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, vis_dir / "study_readouts.png")


def study_hand_loss(store, seeds=(0, 1, 2), epochs=train.DEFAULTS["epochs"]):
    """The symmetric hand loss (train.py --hand-loss symmetric) on the faithful labels, for the three methods
    over seeds, next to the strict loss of the same recipe (run store, fp32)."""
    kp_dir, data = store.kp_dir, data_fingerprint(store.kp_dir)
    recipes = {(m, loss, s): train.make_recipe(m, data, seed=s, epochs=epochs, hand_loss=loss,
                                               precision=STUDY_PRECISION)
               for m in METHODS for loss in HAND_LOSSES for s in seeds}
    # the LAST_EPOCH_RERUN networks trained as labelled, keeping the epoch of lowest val loss and again the last epoch
    recipes.update({(m, rule, s): train.make_recipe(m, data, seed=s, epochs=epochs, precision=STUDY_PRECISION,
                                                    keep="last" if rule == "strict_last" else "best")
                    for m in LAST_EPOCH_RERUN for rule in ("strict", "strict_last") for s in seeds})
    # and the three methods with the symmetric hand loss kept at the last epoch: Table C8 at one epoch rule
    recipes.update({(m, "symmetric_last", s): train.make_recipe(m, data, seed=s, epochs=epochs, hand_loss="symmetric",
                                                                precision=STUDY_PRECISION, keep="last")
                    for m in METHODS for s in seeds})
    probed = {k: r for k, r in recipes.items() if k[0] in PROBED and k[1] in ("strict", "strict_last")}
    if not store.partial:  # a probe needs the checkpoint (gitignored): retrain a probed run with neither stored
        missing = [r for r in probed.values() if probe_of(run_dir_of(store.root, r), r, kp_dir) is None]
        if missing:
            run_many(missing, store, need_checkpoints=True)
    got = collect(recipes, store)
    rows = {}
    for (m, loss, s), run in got.items():
        if run is not None:
            rows.setdefault(f"{m}_{loss}", []).append(run_row(s, *run))
    probes = {}  # the PROBED networks trained as labelled, by epoch rule: where their hands land, each read-out
    for (m, rule, s), recipe in sorted(probed.items()):
        if got[m, rule, s] is not None:
            p = probe_of(run_dir_of(store.root, recipe), recipe, kp_dir)
            if p is not None:
                probes.setdefault(rule, {}).setdefault(m, []).append((s, p))
    placement = {rule: {m: [{"seed": s, **p["placement"]} for s, p in v] for m, v in by_m.items()}
                 for rule, by_m in probes.items()}
    probes = probes.get("strict", {})  # the read-outs: at the main body's epoch rule only
    readouts = {m: {r: [{"seed": s, **p["readouts"][r]} for s, p in v] for r in v[0][1]["readouts"]}
                for m, v in probes.items()}
    pairs = dict.fromkeys(("targets_at_peak", "targets_at_mean", "peak_minus_mean"), {})  # need both probed
    if set(readouts) == set(PROBED):
        hm, it = readouts["heatmap"], readouts["integral"]
        pairs = {"targets_at_peak": {d: paired_metrics(it[d], hm[d], PROBE_METRICS) for d in DECODERS},
                 "targets_at_mean": paired_metrics(it["mean"], hm["mean"], PROBE_METRICS),
                 "peak_minus_mean": {d: paired_metrics(it["mean"], it[d], PROBE_METRICS) for d in DECODERS}}
    return {"precision": STUDY_PRECISION, "seeds": list(seeds), "rows": rows,
            "placement": placement.get("strict", {}), "placement_last": placement.get("strict_last", {}),
            "readouts_probed": readouts,  # {method: {read-out: per-seed summarize()}}, as labelled, best epoch
            # targets at one read-out (HeatmapNet minus IntegralNet, read the same way), and the read-out at one
            # target (IntegralNet read at its map's peak minus its own soft-argmax, the mean)
            **pairs,
            "hand_gap_px_ground_truth": float(hand_gap(load_split(kp_dir, "test", "regression").keypoints).mean()),
            "paired": {m: paired_metrics(rows.get(f"{m}_strict", []), rows.get(f"{m}_symmetric", []), ROW_METRICS)
                       for m in METHODS},  # symmetric minus strict loss; below, HeatmapNet minus IntegralNet
            # Section 4's two one-factor steps, per hand loss and (LAST_RULES) at the last epoch
            "integral_minus_regression": {loss: paired_metrics(rows.get(f"regression_{loss}", []),
                                                               rows.get(f"integral_{loss}", []), ROW_METRICS)
                                          for loss in (*HAND_LOSSES, *LAST_RULES)},  # the output layers
            "heatmap_minus_integral": {loss: paired_metrics(rows.get(f"integral_{loss}", []),
                                                            rows.get(f"heatmap_{loss}", []), ROW_METRICS)
                                       for loss in (*HAND_LOSSES, *LAST_RULES)},  # the targets
            "last_minus_best": {m: paired_metrics(rows.get(f"{m}_strict", []), rows.get(f"{m}_strict_last", []),
                                                  ROW_METRICS) for m in LAST_EPOCH_RERUN},
            # the ladder's steps 1-6 with every network at its last epoch, keyed by the row: it minus the row above
            "ladder_last": {b: {"from": a, **paired_metrics(rows.get(f"{READOUTS[a][0]}_strict_last", []),
                                                            rows.get(f"{READOUTS[b][0]}_strict_last", []), ROW_METRICS)}
                            for (a, _), (b, _) in zip(LADDER, LADDER[1:]) if READOUTS[b][0] in LAST_EPOCH_RERUN}}


def main(argv=None):
    p = ArgumentParser(description="Why heatmaps beat regression, measured: the controlled readout study, "
                                "the symmetric hand loss.")
    p.add_argument("--studies", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="results folder (runs under <out-dir>/runs)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--jobs", type=positive(int, 1), default=1,
                   help="runs trained side by side (CPU threads split between them)")
    p.add_argument("--threads", type=positive(int, 0), default=0, help="torch CPU threads (0: default)")
    p.add_argument("--precision", default=STUDY_PRECISION, choices=["fp32", "bf16"],
                   help="precision of the readout runs (a run is shared only between recipes of the same precision)")
    p.add_argument("--partial", action="store_true", help="record the runs already stored, train none")
    args = p.parse_args(argv)
    set_threads(args.threads)
    results_dir, kp_dir = args.out_dir, resolve_keypoints_dir(args.data_dir)
    json_path = results_dir / "study_results.json"
    store = Store(results_dir, kp_dir, train.train_recipe, jobs=args.jobs, partial=args.partial)
    fns = {"readouts": lambda: study_readouts(store, args.seeds, args.precision),
           "hand_loss": lambda: study_hand_loss(store, args.seeds)}
    with results_lock(results_dir, "study.py"):
        results = {k: v for k, v in read_json(json_path, "python problem2/study.py", default={}).items() if k in STUDIES}
        for study in args.studies:
            t0 = time.time()
            results[study] = fns[study]()
            write_json(json_path, results)
            print(f"[study] {study} written in {fmt_time(time.time() - t0)}")


if __name__ == "__main__":
    run_cli(main)
