"""The controlled readout study (`python study.py --studies readouts`): why heatmaps win, one factor at a time.

Every readout is a row of model.METHODS on the spec's shared encoder, trained with the spec recipe over seeds as a
recipe-keyed run of runs.py. results/study_results.json -> "readouts": {"precision", "seeds", "readouts": {name:
{"method", "isolates", "params", "complete", "per_seed": [runs.run_row]}}, "references": {name: evaluate.summarize()
+ "px_shifted"}, "steps": [{"from", "to", "question", "seeds", metric: {"diff", "ci95", "n"}}] (to minus from, paired
by seed), "shift": {name: px on the shifted test set minus px on the test set, paired}}.
"""

import numpy as np

from common import paired_by_seed, paired_metrics, plt, save_figure
from dataset import data_fingerprint, figure_centre, load_split, shifted_test_dir
from evaluate import summarize
from model import build_model
from runs import ROW_METRICS, STUDY_PRECISION, collect, run_row
from train import DEFAULTS, make_recipe, train_recipe

# readout -> (method row, what changes from the row above it / what it isolates)
READOUTS = {
    "gap_fc": ("regression", "the spec RegressionNet: GAP + FC with dropout + sigmoid"),
    "gap_fc_plain": ("gap_fc_plain", "the same FC head without dropout and sigmoid"),
    "flatten_fc": ("flatten_fc", "no pooling: 1x1 conv to 32 ch on the 8x8 map, flatten, the spec FC head"),
    "coordconv_gap_fc": ("coordconv_gap_fc", "GAP + FC with x/y channels appended before every encoder conv"),
    "decoder64_gap_fc": ("decoder64_gap_fc", "HeatmapNet's decoder (skips) to 64x64, then GAP + the spec FC head"),
    "softargmax_8": ("softargmax_8", "1x1 conv to 5 maps at 8x8, spatial soft-argmax, coordinate loss"),
    "heatmap_8": ("heatmap_8", "the same 1x1 conv at 8x8 trained as Gaussian heatmaps (σ = 8: one 8x8 cell), MSE"),
    "integral_64": ("integral", "HeatmapNet body + soft-argmax at 64x64, coordinate loss"),
    "heatmap_64": ("heatmap", "the spec HeatmapNet"),
}
SPATIAL = ("softargmax_8", "heatmap_8", "integral_64", "heatmap_64")  # readouts that keep a spatial map
# the paired differences the report interprets (to - from, per seed), each with the question it answers
STEPS = [("gap_fc", "gap_fc_plain", "is it the head's dropout and sigmoid?"),
         ("gap_fc", "flatten_fc", "is it the pooling? (the 8x8 map flattened: a 1x1 conv and more FC weights too)"),
         ("gap_fc", "coordconv_gap_fc", "can pooled features carry position when the input gives it?"),
         ("gap_fc", "decoder64_gap_fc", "is it the decoder and resolution, with the pooling kept?"),
         ("gap_fc", "softargmax_8", "the spec head (FC, dropout, sigmoid) replaced by a weight-shared spatial readout at 8x8"),
         ("gap_fc_plain", "softargmax_8", "the same swap from the head without dropout and sigmoid"),
         ("flatten_fc", "softargmax_8", "with the 8x8 layout kept either way: flattened FC head vs spatial readout"),
         ("decoder64_gap_fc", "integral_64", "on the same decoder to 64x64: GAP + FC head vs soft-argmax"),
         ("softargmax_8", "heatmap_8", "at 8x8: Gaussian heatmaps with MSE (argmax + quarter) vs soft-argmax"),
         ("softargmax_8", "integral_64", "the decoder to 64x64 under the spatial readout (coordinate loss)"),
         ("integral_64", "heatmap_64", "at 64x64: Gaussian heatmaps with MSE (argmax + quarter) vs soft-argmax"),
         ("gap_fc", "integral_64", "the spec head replaced by IntegralNet's decoder to 64x64 and soft-argmax"),
         ("gap_fc", "heatmap_64", "the whole gap between the spec networks")]


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


def readout_recipe(readout, data, seed, epochs=DEFAULTS["epochs"], precision=STUDY_PRECISION):
    """The spec recipe of one readout (its method row) on `data` (dataset.data_fingerprint)."""
    return make_recipe(READOUTS[readout][0], data, seed, epochs, precision=precision)


def study_readouts(kp_dir, results_dir, seeds=(0, 1, 2), jobs=1, precision=STUDY_PRECISION, partial=False,
                   log=print, epochs=DEFAULTS["epochs"], shifted_dir=None):
    """Train (or reuse) every readout x seed and return the "readouts" section (schema in the module docstring)."""
    data, runs_root = data_fingerprint(kp_dir), results_dir / "runs"
    shifted = shifted_test_dir() if shifted_dir is None else shifted_dir
    recipes = {(r, s): readout_recipe(r, data, s, epochs, precision) for r in READOUTS for s in seeds}
    stored = collect(recipes, kp_dir, runs_root, train_recipe, shifted, jobs, partial, log)
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
    plot_readouts(section, results_dir / "visualizations")
    return section


def plot_readouts(section, vis_dir):
    """Mean px error per readout (bars) with each seed as a dot: all keypoints strict, head + feet, and the
    hands matched symmetrically; the two reference rows as dashed lines."""
    from matplotlib.ticker import FuncFormatter, NullFormatter
    names = [n for n, r in section["readouts"].items() if r["per_seed"]]
    if not names:
        return None
    panels = (("px", "all keypoints (strict)"), ("px_head_feet", "head + feet"),
              ("px_hands_sym", "hands, symmetric matching"))
    fig, axes = plt().subplots(1, 3, figsize=(15, 4.6), sharey=True)
    for ax, (key, title) in zip(axes, panels):
        means = [np.mean([row[key] for row in section["readouts"][n]["per_seed"]]) for n in names]
        ax.bar(range(len(names)), means, color=["C0" if n in SPATIAL else "C3" for n in names], alpha=0.6)
        for i, (n, m) in enumerate(zip(names, means)):
            vals = [row[key] for row in section["readouts"][n]["per_seed"]]
            ax.plot([i] * len(vals), vals, "k.", ms=6)
            ax.text(i, max(m, *vals) * 1.12, f"{m:.2f}", ha="center", va="bottom", fontsize=8)  # above every dot
        ref = section["references"]
        ref_key = {"px_hands_sym": "px_hands_sym", "px_head_feet": "px_head_feet"}.get(key, "px")
        ax.axhline(ref["mean_pose"][ref_key], color="0.4", ls="--", lw=1, label="mean pose (no image)")
        ax.axhline(ref["centre_plus_mean_offsets"][ref_key], color="C2", ls=":", lw=1.5,
                   label="true centre + mean offsets")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=9)
        ax.set(title=title, yscale="log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, axis="y", which="both")
    lo = min(min(row[k] for n in names for row in section["readouts"][n]["per_seed"]) for k, _ in panels)
    axes[0].set_ylim(lo / 1.6, 60)
    axes[0].set_yticks([t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 3, 5, 10, 20, 50) if t >= lo / 1.6])
    axes[0].set_ylabel("mean error (px, test, log scale)")
    axes[0].legend(fontsize=8, loc="lower left")
    n_seeds = max(len(section["readouts"][n]["per_seed"]) for n in names)
    fig.suptitle(f"Readout study: one encoder, one readout changed at a time (bars = mean, dots = seeds, up to "
                 f"{n_seeds}; red = pooled/flattened FC readouts, blue = spatial readouts; test split)", fontsize=11)
    fig.tight_layout()
    path = vis_dir / "study_readouts.png"
    save_figure(fig, path)
    return path
