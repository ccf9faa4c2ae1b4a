"""Markdown tables of report.md and README.md, generated from the results JSON (never typed by hand).

`python report.py` rewrites every block
    <!-- table:NAME -->
    ...
    <!-- /table -->
and every inline value <!-- v:NAME -->...<!-- /v --> in problem2/report.md and README.md from
problem2/results/*.json; `python report.py --check` exits 1 when a
block differs from what the JSON gives (tests/test_report.py runs it), so a number in the report that
disagrees with the committed results fails the test suite.
"""
import argparse
import math
import re
import sys
from pathlib import Path

import numpy as np

from baseline import DEFAULT_VARIANT, STUDIES as ABLATIONS, variant_config, variant_name
from codec import KEYPOINT_NAMES
from common import RESULTS_DIR, read_json
from evaluate import PCK_THRESHOLDS
from how_far import summary_numbers
from model import METHODS
from readouts import (READOUTS, STEP_METRICS, STEPS, paired_between, paired_by_seed, paired_difference, row_value,
                      verdict)
from study import BUDGET_METRICS, HAND_LOSS_METRICS, PRECISION_METRICS

HERE = Path(__file__).resolve().parent
DOCS = [HERE / "report.md", HERE.parent / "README.md"]
THR = [str(t) for t in PCK_THRESHOLDS]
KPS = KEYPOINT_NAMES
NAMES = {m: METHODS[m]["name"] for m in ("heatmap", "regression", "integral")}
ASSIGNMENT_STEPS = ("train.py", "evaluate.py", "baseline.py")  # the README's first command
BLOCK = re.compile(r"(<!-- table:(\w+) -->\n)(.*?)(<!-- /table -->)", re.S)
INLINE = re.compile(r"(<!-- v:(\w+) -->)(.*?)(<!-- /v -->)")


def load_results(results_dir=RESULTS_DIR):
    files = {"metrics": "metrics.json", "log": "training_log.json", "ablation": "ablation_seeds.json",
             "failures": "failure_cases.json", "study": "study_results.json", "timings": "timings.json",
             "benchmark": "benchmark.json", "how_far": "how_far_results.json",
             "best": "best/heatmap_model_test_metrics.json", "best_log": "best/training_log.json"}
    out = {k: read_json(Path(results_dir) / f) for k, f in files.items() if (Path(results_dir) / f).exists()}
    out["stored_runs"] = {p.parent.name: read_json(p)["machine"] for p in (Path(results_dir) / "runs").glob("*/run.json")}
    return out


def md(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]) + "\n"


def _final(metrics, method):
    dec = metrics["refine_default"] if method == "heatmap" else "direct"
    return metrics[method]["decoders"][dec]


def _methods(metrics):
    return [m for m in ("heatmap", "regression", "integral") if m in metrics]


def table_headline(r):
    s = r["study"]["seeds"]
    rows = []
    for m in (m for m in NAMES if m in s["mean"]):  # the seeded study's methods, whatever train.py trained
        mu, sd = s["mean"][m], s["std"][m]
        rows.append([NAMES[m]] + [f"{mu[k]:.3f} ± {sd[k]:.3f}" for k in ("pck_bbox_0.05", "pck_bbox_0.1")] +
                    [f"{mu[k]:.2f} ± {sd[k]:.2f}" for k in ("mean_px_error", "mean_px_error_symmetric")])
    return md(["method (test, %d seeds)" % len(s["seeds"]), "PCK@0.05 bbox", "PCK@0.1 bbox", "mean error px",
               "mean error px, symmetric hands"], rows)


def table_pck(r, norm):
    m = r["metrics"]
    rows = []
    for method in _methods(m):
        for dec in m[method]["decoders"]:
            e = m[method]["decoders"][dec]
            rows.append([NAMES[method], dec] + [f"{e['strict']['pck'][norm][t]:.3f} / {e['symmetric']['pck'][norm][t]:.3f}"
                                                for t in THR] +
                        [f"{e['strict']['auc'][norm]:.3f} / {e['symmetric']['auc'][norm]:.3f}",
                         f"{e['strict']['mean_px_error']:.2f} / {e['symmetric']['mean_px_error']:.2f}"])
    return md(["method", "decoder"] + [f"PCK@{t}" for t in THR] + ["AUC@0.2", "mean px error"], rows)


def table_per_keypoint(r):
    m = r["metrics"]
    rows = []
    for method in _methods(m):
        e = _final(m, method)
        rows.append([NAMES[method]] + [f"{e['strict']['per_keypoint_px_error'][k]:.2f}" for k in KPS] +
                    [f"{e['symmetric']['per_keypoint_px_error'][k]:.2f}" for k in ("left_hand", "right_hand")])
    return md(["method (strict, px)"] + KPS + ["left_hand sym", "right_hand sym"], rows)


def table_per_keypoint_pck(r):
    m = r["metrics"]
    rows = []
    for method in _methods(m):
        e = _final(m, method)
        rows.append([NAMES[method]] + [f"{e['strict']['pck_per_keypoint']['bbox'][k]['0.05']:.3f}" for k in KPS])
    return md(["method (PCK@0.05 bbox, strict)"] + KPS, rows)


def table_decoders(r):
    m = r["metrics"]["heatmap"]["decoders"]
    return md(["HeatmapNet decoder", "mean px", "median px", "mean px (symmetric)", "PCK@0.05 bbox"],
              [[d, f"{e['strict']['mean_px_error']:.2f}", f"{e['strict']['median_px_error']:.2f}",
                f"{e['symmetric']['mean_px_error']:.2f}", f"{e['strict']['pck']['bbox']['0.05']:.3f}"] for d, e in m.items()])


def table_seeds(r):
    """PCK at the four thresholds, bbox and torso, strict and symmetric, and mean px error: mean ± std over seeds."""
    s = r["study"]["seeds"]
    rows = []
    for m in s["mean"]:
        for norm in ("bbox", "torso"):
            for suffix, label in (("", "strict"), ("_symmetric", "symmetric")):
                keys = [f"pck_{norm}_{t}{suffix}" for t in THR] + [f"mean_px_error{suffix}"]
                rows.append([NAMES[m], norm, label] + [f"{s['mean'][m][k]:.3f} ± {s['std'][m][k]:.3f}" for k in keys])
    return md([f"method (seeds {' '.join(map(str, s['seeds']))})", "normalisation", "hands"] +
              [f"PCK@{t}" for t in THR] + ["mean px error"], rows)


def table_seed_pairs(r):
    """Each pair's difference paired by seed, mean with a 95% t-interval (* = the interval excludes 0)."""
    s = r["study"]["seeds"]
    keys = ["pck_bbox_0.05", "pck_bbox_0.05_symmetric", "mean_px_error", "mean_px_error_symmetric"]
    rows = [[pair.replace("-", " − ")] + [_ci(v[k], "{:+.3f}") for k in keys]
            for pair, v in s["paired_over_seeds"].items()]
    return md([f"difference (paired by seed, seeds {' '.join(map(str, s['seeds']))}; 95% t-interval)"] +
              [k.replace("_", " ") for k in keys], rows)


# the numbers of an ablation run the report compares to the default variant: name -> value of one run's "test"
ABLATION_METRICS = {**{f"px_{d}": (lambda t, d=d: t[d]["strict"]["mean_px_error"]) for d in ("argmax", "quarter", "dark")},
                    "px_sym": lambda t: t["quarter"]["symmetric"]["mean_px_error"],
                    "pck05": lambda t: t["quarter"]["strict"]["pck"]["bbox"]["0.05"]}


def ablation_pair(r, name, metric):
    """Variant minus default variant, paired by seed (over the seeds both have), 95% t-interval."""
    runs = {n: v["runs"] for n, v in r["ablation"]["variants"].items()}
    get = ABLATION_METRICS[metric]
    return paired_by_seed(runs.get(DEFAULT_VARIANT, []), runs.get(name, []), lambda row: get(row["test"]))[1]


def table_ablation(r):
    """Mean ± std over the recorded seeds per variant, and the paired differences (quarter decoder, strict px and
    PCK@0.05) to the default variant with a 95% t-interval (* = the interval excludes 0, i.e. beyond seed noise)."""
    a = r["ablation"]
    rows = []
    for study, names in a["studies"].items():
        for n in (n for n in names if n in a["variants"]):  # --partial leaves out a variant with no stored run
            v = a["variants"][n]
            c, runs = v["config"], v["runs"]
            col = lambda m, fmt="{:.2f}": _mean_sd([ABLATION_METRICS[m](row["test"]) for row in runs], fmt)  # noqa: E731
            rows.append([study, n, c["hm_size"], f"{c['sigma_img']:g}", "on" if c["skip"] else "off", len(runs),
                         col("px_argmax"), col("px_quarter"), col("px_dark"), col("pck05", "{:.3f}"), col("px_sym")] +
                        (["(default)"] * 2 if n == DEFAULT_VARIANT else
                         [_ci(ablation_pair(r, n, "px_quarter")), _ci(ablation_pair(r, n, "pck05"), "{:+.3f}")]))
    return md(["study", "variant", "hm", "σ (img px)", "skips", "seeds", "px argmax", "px quarter", "px dark",
               "PCK@0.05 (quarter)", "sym px (quarter)", "px quarter − default [95% CI]",
               "PCK@0.05 − default [95% CI]"], rows)


def ablation_beyond_noise(r):
    """Every (variant, metric) whose paired difference to the default excludes 0, or a sentence saying none does;
    says how many comparisons were made (the intervals are not corrected for multiplicity)."""
    a, found, n_max, tried = r["ablation"], [], 0, 0
    for n in a["variants"]:
        if n == DEFAULT_VARIANT:
            continue
        for m in ABLATION_METRICS:
            d = ablation_pair(r, n, m)
            n_max, tried = max(n_max, d["n"]), tried + 1
            if d["ci95"] is not None and not d["ci95"][0] <= 0 <= d["ci95"][1]:
                found.append(f"{n} {m.replace('_', ' ')} {_ci(d, QUOTED[_unit(m)][0])}")
    if n_max < 2:
        return "none can be, with one seed per variant (no interval)"
    of = f"of {tried} comparisons, each a 95% interval not corrected for the number of comparisons"
    return (f"{'; '.join(found)} ({len(found)} {of})" if found else
            f"none (every interval includes 0, n={n_max}; {of})")


def table_failures(r):
    f = r["failures"]
    rows = []
    for cat, n in f["counts"].items():
        c = f["characterisation"][cat]
        fmt = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731
        rows.append([cat.replace("_", " "), n, ", ".join(f"{k} {v}" for k, v in f["per_keypoint"][cat].items() if v),
                     f"{c['share_of_failures_that_are_hands']:.2f}",
                     f"{fmt(c['hands_swapped_fraction']['these'])} (all {c['hands_swapped_fraction']['all']:.2f})",
                     f"{fmt(c['hand_gap_px']['these'])} (all {c['hand_gap_px']['all']:.1f})",
                     f"{fmt(c['off_centre_px']['these'])} (all {c['off_centre_px']['all']:.1f})"])
    return md(["category (keypoints)", "count", "which keypoints", "share hands", "hands swapped (rows with a failing hand)",
               "hand gap px", "figure off-centre px"], rows)


def _symmetric_loss_rows(r):
    """(label, rows) of the symmetric hand-loss runs per method (study_results.json -> hand_loss), mean over seeds."""
    h = r["study"].get("hand_loss", {})
    rows = h.get("rows", {})
    return [(f"{m} faithful, symmetric loss ({h['precision']}, seeds {' '.join(str(x['seed']) for x in rows[f'{m}_symmetric'])})",
             rows[f"{m}_symmetric"]) for m in METHODS if rows.get(f"{m}_symmetric")]


def table_hands(r):
    """The hands study's runs (one seed each), then the symmetric hand loss (mean over its seeds)."""
    h = r["study"]["hands"]
    rows = [[k.replace("_", " "), f"{v['strict']['mean_px_error']:.2f}", f"{v['strict']['hand_px_error']:.2f}",
             f"{v['symmetric']['hand_px_error']:.2f}", f"{v['strict']['pck_bbox']['0.05']:.3f}",
             f"{v['symmetric']['pck_bbox']['0.05']:.3f}"] for k, v in h.items() if k not in ("hand_gap_px", "runs")]
    mean = lambda xs, get, fmt="{:.2f}": fmt.format(np.mean([get(x) for x in xs]))  # noqa: E731
    rows += [[label, mean(xs, lambda x: x["px"]), mean(xs, lambda x: x["px_hands"]), mean(xs, lambda x: x["px_hands_sym"]),
              mean(xs, lambda x: x["pck_bbox"]["0.05"], "{:.3f}"), mean(xs, lambda x: x["pck_bbox_sym"]["0.05"], "{:.3f}")]
             for label, xs in _symmetric_loss_rows(r)]
    return md(["model / labels / decoding", "mean px (strict)", "hand px (strict)", "hand px (symmetric)",
               "PCK@0.05 strict", "PCK@0.05 symmetric"], rows)


def table_hand_gap(r):
    g = dict(r["study"]["hands"]["hand_gap_px"])
    g.update({label: float(np.mean([x["hand_gap_px"] for x in xs])) for label, xs in _symmetric_loss_rows(r)})
    return md(["", *[k.replace("_", " ") for k in g]], [["mean distance between the two hands (px)", *[f"{v:.1f}" for v in g.values()]]])


def table_hand_loss(r):
    """The symmetric hand loss next to the strict loss of the same recipe (fp32 runs), mean ± std over seeds."""
    h = r["study"]["hand_loss"]
    rows = []
    for name, runs in h["rows"].items():
        col = lambda f, fmt="{:.2f}": _mean_sd([f(x) for x in runs], fmt)  # noqa: E731
        method, loss = name.rsplit("_", 1)
        rows.append([NAMES[method], loss, " ".join(str(x["seed"]) for x in runs), col(lambda x: x["px"]),
                     col(lambda x: x["px_sym"]), col(lambda x: x["px_hands"]), col(lambda x: x["px_hands_sym"]),
                     col(lambda x: x["pck_bbox"]["0.05"], "{:.3f}"), col(lambda x: x["pck_bbox_sym"]["0.05"], "{:.3f}"),
                     col(lambda x: x["hand_gap_px"], "{:.1f}"),
                     " / ".join(f"{x['best_epoch']}-{x['best_px_epoch']}" for x in runs)])
    return md(["method", "hand loss", "seeds", "px strict", "px sym", "hand px strict", "hand px sym",
               "PCK@0.05 strict", "PCK@0.05 sym", f"predicted hand gap px (true {h['hand_gap_px_ground_truth']:.1f})",
               "best epoch per seed (val loss-val px)"],
              rows)


def table_hand_loss_pairs(r):
    """Symmetric minus strict hand loss, paired by seed, per method (95% t-interval; * = beyond seed noise)."""
    pairs = r["study"]["hand_loss"].get("paired", {})
    rows = [[NAMES[m], " ".join(map(str, p["seeds"])) or "–", _ci(p["px"]), _ci(p["px_sym"]), _ci(p["px_hands_sym"]),
             _ci(p["pck_bbox"], "{:+.3f}"), _ci(p["pck_bbox_sym"], "{:+.3f}"), _ci(p["hand_gap_px"], "{:+.1f}"),
             _ci(p["best_epoch"], "{:+.1f}")]
            for m, p in pairs.items()]
    return md(["method (symmetric − strict loss)", "seeds", "px strict", "px sym", "hand px sym", "PCK@0.05 strict",
               "PCK@0.05 sym", "predicted hand gap px", "best val-loss epoch"], rows)


def table_translation(r):
    t = r["study"]["translation"]
    methods = [m for m in NAMES if m in t]
    bins = [d["distance_px"] for d in t[methods[0]]["by_distance"]]
    rows = [[NAMES[m], f"{t[m]['in_range']['strict']['mean_px_error']:.2f}",
             f"{t[m]['shifted']['strict']['mean_px_error']:.2f}", f"{t[m]['shifted']['symmetric']['mean_px_error']:.2f}",
             f"{t[m]['shifted']['strict']['pck_bbox']['0.1']:.3f}"] +
            [f"{d['mean_px_error']:.2f}" for d in t[m]["by_distance"]] for m in methods]
    return md(["method", "in-range test px", "shifted test px", "shifted px (sym)", "shifted PCK@0.1"] +
              [f"{lo}–{hi} px out (n={d['n_images']})" for (lo, hi), d in zip(bins, t[methods[0]]["by_distance"])], rows)


def table_data(r):
    d = r["study"]["data_efficiency"]
    rows = [[NAMES[m]] + [f"{e:.2f} / {p:.3f}" for e, p in zip(d[m]["mean_px_error"], d[m]["pck_bbox_0.05"])]
            for m in NAMES if m in d]
    return md(["method (mean px / PCK@0.05)"] + [f"{n} train" for n in d["sizes"]], rows)


NOT_RUN_BUDGET = "(no stored runs yet: `python study.py --studies budget --jobs 2` trains them, resumable)\n"


def table_budget_long(r):
    """Spec-length vs long training, mean ± std over the stored seeds and paired by seed (long minus spec)."""
    b = r["study"].get("budget")
    if not b or not b["long"]:
        return NOT_RUN_BUDGET
    short, long_ = map(str, b["epochs"])
    rows = []
    for m, by_e in b["long"].items():
        col = lambda e, get, fmt="{:.2f}": _mean_sd([get(x) for x in by_e.get(e, [])], fmt)  # noqa: E731
        pair = b["long_paired"][m]
        rows.append([NAMES[m], " ".join(map(str, pair["seeds"])) or "–",
                     col(short, lambda x: x["px"]), col(long_, lambda x: x["px"]), _ci(pair["px"]),
                     col(short, lambda x: x["pck_bbox"]["0.05"], "{:.3f}"),
                     col(long_, lambda x: x["pck_bbox"]["0.05"], "{:.3f}"), _ci(pair["pck_bbox"], "{:+.3f}"),
                     col(long_, lambda x: x["best_epoch"], "{:.0f}")])
    return md(["method", "paired seeds", f"px, {short} epochs", f"px, {long_} epochs", f"px {long_} − {short} [95% CI]",
               f"PCK@0.05, {short}", f"PCK@0.05, {long_}", f"PCK@0.05 {long_} − {short} [95% CI]",
               f"best epoch of {long_}"], rows)


def table_data_steps(r):
    """Test px / PCK@0.05 vs training-set size at a fixed number of optimisation steps, mean ± std over seeds."""
    b = r["study"].get("budget")
    if not b or not b["data_steps"]["rows"]:
        return NOT_RUN_BUDGET
    d = b["data_steps"]
    rows = [[NAMES[m]] + [f"{_mean_sd([x['px'] for x in by_n.get(str(n), [])])} / "
                          f"{_mean_sd([x['pck_bbox']['0.05'] for x in by_n.get(str(n), [])], '{:.3f}')}"
                          for n in d["sizes"]] for m, by_n in d["rows"].items()]
    return md(["method (px / PCK@0.05)"] + [f"{n} train ({d['epochs'][str(n)]} epochs)" for n in d["sizes"]], rows)


def table_data_steps_paired(r):
    """Each smaller training set minus the full set at the same number of optimisation steps, paired by seed
    (study.py: data_steps.paired_to_full): px and PCK@0.05 with a 95% CI; * where the interval excludes 0."""
    b = r["study"].get("budget")
    if not b or not b["data_steps"].get("paired_to_full"):
        return NOT_RUN_BUDGET
    d = b["data_steps"]
    full, smaller = d["sizes"][-1], d["sizes"][:-1]
    batch = d["batch_size"]
    steps = lambda m, n: _mean_sd([x["best_epoch"] * math.ceil(n / batch) for x in d["rows"][m].get(str(n), [])],  # noqa: E731
                                  "{:.0f}")
    rows = [[NAMES[m], f"{n} − {full}", " ".join(map(str, p[str(n)]["seeds"])) or "–", _ci(p[str(n)]["px"]),
             _ci(p[str(n)]["pck_bbox"], "{:+.3f}"), _ci(p[str(n)]["px_valpx"]), f"{steps(m, n)} / {steps(m, full)}"]
            for m, p in d["paired_to_full"].items() for n in smaller]
    return md(["method", "train images", "paired seeds", "px difference [95% CI]", "PCK@0.05 difference [95% CI]",
               "px difference, val-px rule [95% CI]", "val-loss rule's checkpoint, Adam steps (smaller / full set)"],
              rows)


def table_precision(r):
    """Stored runs whose recipes differ only in precision: test numbers side by side, bf16 minus fp32 paired."""
    pr = r["study"].get("precision")
    if not pr or not pr["pairs"]:
        return "(no pair of stored runs differs only in precision yet)\n"
    fmt = {k: QUOTED[_unit(k)][0].replace("+", "") for k in PRECISION_METRICS}
    trained_on = lambda row: f"{machine_name(row['machine'])}, threads {row['machine'].get('threads')}"  # noqa: E731
    rows = [[p["label"], trained_on(p["fp32"]), trained_on(p["bf16"])] +
            [f"{fmt[k].format(get(p['fp32']))} / {fmt[k].format(get(p['bf16']))}" for k, get in PRECISION_METRICS.items()]
            for p in pr["pairs"]]
    rows.append([f"**bf16 − fp32, paired over {pr['paired']['n']} recipes [95% CI]**", "", ""] +
                [_ci(pr["paired"][k], QUOTED[_unit(k)][0]) for k in PRECISION_METRICS])
    return md(["recipe (stored in both precisions)", "fp32 trained on", "bf16 trained on", "px fp32 / bf16",
               "sym px fp32 / bf16", "PCK@0.05 fp32 / bf16"], rows)


def machine_name(m):
    """'AMD EPYC (native bf16), 2 cores, cpu': which machine (CPU or GPU, cores, device) from a timing's machine
    record; the bf16 note only where the record says (records before "native_bf16" existed say nothing)."""
    bf16 = {True: " (native bf16)", False: " (no native bf16)"}.get(m.get("native_bf16"), "")
    return ", ".join(str(x) for x in (m.get("gpu") or (m.get("cpu") and m["cpu"] + bf16), f"{m.get('cores')} cores",
                                      m.get("device")) if x)


def run_settings(m):
    """'bf16, 2 jobs': how a step ran on its machine (precision; parallel jobs when more than one)."""
    return ", ".join(str(x) for x in (m.get("precision"), m.get("jobs") and f"{m['jobs']} jobs") if x)


def machine_label(m):
    """'AMD EPYC, 2 cores, cpu, bf16' (+ ', 2 jobs' when runs went side by side) from a timing's machine record."""
    if not m:
        return "not recorded"
    return ", ".join(x for x in (machine_name(m), run_settings(m)) if x)


def table_timing(r):
    """timings.json as measured; the first command's total only when one machine timed all of its steps."""
    t = r["timings"]
    rows = [[f"`{k}`", f"{v['seconds'] / 60:.1f}", machine_label(v.get("machine"))] for k, v in t.items()]
    first = [t[k] for k in ASSIGNMENT_STEPS if k in t]
    if len(first) == len(ASSIGNMENT_STEPS) and len({machine_name(v.get("machine") or {}) for v in first}) == 1:
        rows.append(["**first command (" + " + ".join(f"`{k}`" for k in ASSIGNMENT_STEPS) + ")**",
                     f"**{sum(v['seconds'] for v in first) / 60:.1f}**", ""])
    return md(["step", "wall minutes", "machine (CPU, cores, device, precision, parallel jobs)"], rows)


def assignment_timing(r):
    """The README's first command: one total when one machine timed all its steps (how each step ran when they
    differ: precision, jobs), else each step with its own machine."""
    t = r["timings"]
    machine = {k: t[k].get("machine") or {} for k in ASSIGNMENT_STEPS}
    names = {machine_name(m) for m in machine.values()}
    if len(names) == 1 and all(machine.values()):
        total = f"{sum(t[k]['seconds'] for k in ASSIGNMENT_STEPS) / 60:.1f} minutes on {names.pop()}"
        settings = {k: run_settings(m) for k, m in machine.items()}
        if len(set(settings.values())) == 1:
            return f"{total}, {settings['train.py']}" if settings["train.py"] else total
        return f"{total} (" + "; ".join(f"`{k}` {v}" for k, v in settings.items()) + ")"
    return ("; ".join(f"`{k}` {t[k]['seconds'] / 60:.1f} min on {machine_label(t[k].get('machine'))}"
                      for k in ASSIGNMENT_STEPS) + " (the steps were last timed on different machines, so this is not "
            "one end-to-end time)")


def integral_selected_epochs(r, rule):
    """'4, 6, 6 (seeds 0, 1, 2)': the epoch IntegralNet's checkpoint is selected at under `rule` (val_loss or
    val_px), per seed of the readout study's integral_64 runs (strict loss)."""
    rows = r["study"]["readouts"]["readouts"]["integral_64"]["per_seed"]
    return (", ".join(str(x["best_epoch"][rule]) for x in rows) +
            " (seeds " + ", ".join(str(x["seed"]) for x in rows) + ")")


def table_training(r):
    """Both checkpoint-selection rules per method: lowest val loss (the spec's, saved) and lowest val px error."""
    log = r["log"]
    rows = [[NAMES[m], log[m]["best_epoch"], f"{log[m]['best_val_loss']:.2e}", f"{log[m]['best_val_px_error']:.2f}",
             log[m]["best_px_epoch"], f"{log[m]['best_px_val_px_error']:.2f}",
             f"{log[m]['train_seconds']:.0f}", f"{log[m]['images_per_second']:.0f}"] for m in NAMES if m in log]
    return md(["method", "best val-loss epoch (saved)", "its val loss", "its val px", "best val-px epoch",
               "its val px", "train s", "img/s"], rows)


def _mean_sd(vals, fmt="{:.2f}"):
    if len(vals) < 2:
        return (fmt.format(vals[0]) + " (n=1)") if vals else "–"
    return f"{fmt.format(np.mean(vals))} ± {fmt.format(np.std(vals, ddof=1))}"


def _ci(d, fmt="{:+.2f}"):
    if d["diff"] is None:
        return "–"
    if d["ci95"] is None:
        return fmt.format(d["diff"]) + f" (n={d['n']}, no interval)"
    real = "" if d["ci95"][0] <= 0 <= d["ci95"][1] else " *"
    return f"{fmt.format(d['diff'])} [{fmt.format(d['ci95'][0])}, {fmt.format(d['ci95'][1])}]{real}"


def table_readouts(r):
    ro = r["study"]["readouts"]
    rows = []
    for name, x in ro["readouts"].items():
        ps = x["per_seed"]
        col = lambda k: _mean_sd([row[k] for row in ps])  # noqa: E731
        rows.append([f"`{name}`", x["isolates"], f"{len(ps)}/{len(ro['seeds'])}", f"{x['params'] / 1e6:.2f}M",
                     col("px"), col("px_sym"), col("px_head_feet"), col("px_hands_sym"), col("px_shifted"),
                     _mean_sd([row["spread_ratio"] for row in ps]),
                     _mean_sd([row["pck_bbox_sym"]["0.05"] for row in ps], "{:.3f}"),
                     " / ".join("{}-{}".format(row["best_epoch"]["val_loss"], row["best_epoch"]["val_px"]) for row in ps) or "–",
                     _mean_sd([row["by_val_px"]["px"] for row in ps])])
    for name, x in ro["references"].items():
        rows.append([f"*{name.replace('_', ' ')}*", "reference, no training", "–", "0", f"{x['px']:.2f}",
                     f"{x['px_sym']:.2f}", f"{x['px_head_feet']:.2f}", f"{x['px_hands_sym']:.2f}", f"{x['px_shifted']:.2f}",
                     f"{x['spread_ratio']:.2f}", f"{x['pck_bbox_sym']['0.05']:.3f}", "–", "–"])
    return md(["readout", "what it isolates", "seeds done", "params", "px", "px sym", "px head+feet", "px hands sym",
               "px shifted", "spread ratio", "PCK@0.05 sym", "best epoch (val loss - val px) per seed",
               "px, val-px rule"], rows)


def table_readout_steps(r):
    ro = r["study"]["readouts"]
    rows = [[f"`{s['from']}` → `{s['to']}`", " ".join(map(str, s["seeds"])) or "–"] +
            [_ci(s[k]) for k in ("px", "px_head_feet", "px_hands_sym", "px_shifted")] for s in ro["steps"]]
    return md(["step (to − from, paired by seed)", "seeds", "px", "px head+feet", "px hands sym", "px shifted"], rows)


KEY_STEPS = (("gap_fc", "flatten_fc"), ("gap_fc", "softargmax_8"), ("gap_fc_plain", "softargmax_8"),
             ("softargmax_8", "integral_64"),
             ("integral_64", "heatmap_64"), ("gap_fc", "heatmap_64"))  # the short answer of Section 1


QUESTIONS = {(a, b): q for a, b, q in STEPS}


def readout_findings(r, only=None):
    """One generated sentence per readout step: means over the paired seeds, the paired difference with its
    95% interval, the seed-noise verdict (readouts.verdict) and its size relative to the whole spec gap."""
    ro = r["study"]["readouts"]
    per_seed = {n: {row["seed"]: row["px"] for row in x["per_seed"]} for n, x in ro["readouts"].items()}
    lines = []
    for s in ro["steps"]:
        key = (s["from"], s["to"])
        if only is not None and key not in only:
            continue
        q = QUESTIONS[key]
        head = f"- `{s['from']}` → `{s['to']}` — {q}{'' if q.endswith(('?', '.')) else '.'}"
        d = s["px"]
        if d["diff"] is None:
            lines.append(f"{head} Not measured yet.")
            continue
        mean = {x: np.mean([per_seed[x][seed] for seed in s["seeds"]]) for x in key}
        share = ""
        ends = [per_seed.get(n, {}) for n in ("gap_fc", "heatmap_64")]
        if key != ("gap_fc", "heatmap_64") and all(x in e for e in ends for x in s["seeds"]):
            total = np.mean([ends[1][x] - ends[0][x] for x in s["seeds"]])  # the spec gap over the same seeds
            share = (f"; that is {d['diff'] / total:.0%} of the whole `gap_fc` → `heatmap_64` difference (a ratio "
                     "of means, no interval)")
        lines.append(f"{head} Mean error {mean[key[0]]:.2f} → {mean[key[1]]:.2f} px (seeds "
                     f"{', '.join(map(str, s['seeds']))}); paired difference {_ci(d)} px: {verdict(d)}{share}. "
                     f"Head + feet {_ci(s['px_head_feet'])}, hands (symmetric) {_ci(s['px_hands_sym'])}, "
                     f"shifted test set {_ci(s['px_shifted'])} px.")
    return "\n".join(lines) + "\n"


def readout_spread(r):
    """Spread ratio per readout (mean over its seeds) and of the two references, one generated sentence."""
    ro = r["study"]["readouts"]
    parts = [f"`{n}` {np.mean([row['spread_ratio'] for row in x['per_seed']]):.2f}" + (
        f" (n={len(x['per_seed'])})" if len(x["per_seed"]) < len(ro["seeds"]) else "")
        for n, x in ro["readouts"].items() if x["per_seed"]]
    refs = ", ".join(f"{n.replace('_', ' ')} {x['spread_ratio']:.2f}" for n, x in ro["references"].items())
    return ("Spread ratio (std of the predicted coordinates / std of the true ones, test split; below 1 = predictions "
            f"pulled toward the mean pose): {', '.join(parts)}; references: {refs}.\n")


SOURCED = {"seeds": "Section 3, tables over seeds", "translation": "4.2", "hands": "4.4",
           "data_efficiency": "4.5, data efficiency"}


def sources(r):
    """Which run made each study section: the recipe-keyed store (the section lists its runs) or the legacy run."""
    ab = r["ablation"]
    rows = [row for v in ab["variants"].values() for row in v["runs"]]
    in_store = bool(rows) and all(row.get("run") in r.get("stored_runs", ()) for row in rows)
    lines = [f"- Section 5, `ablation_seeds.json`: {ab['recipe']['precision']} runs, seeds "
             f"{', '.join(map(str, ab['seeds']))}, " + ("the run store (`results/runs/`)" if in_store else
                                                        "the last full run (its run folders are not in the store)")]
    lines.append("- 4.0 readouts and the 4.4 hand-loss table: the run store (fp32); each row names its seeds, and "
                 "`study_results.json` names each run")
    if "budget" in r["study"]:
        b = r["study"]["budget"]
        seeds = {m: sorted({x["seed"] for v in by_e.values() for x in v}) for m, by_e in b["long"].items()}
        lines.append(f"- 4.5 longer budget and fixed steps, `study_results.json` → `budget`: the run store "
                     f"({b['precision']}); seeds stored per method: " +
                     "; ".join(f"{NAMES[m]} {', '.join(map(str, s))}" for m, s in seeds.items()))
    for key, where in SOURCED.items():
        if key not in r["study"]:
            lines.append(f"- {where}: not computed yet")
            continue
        src = (f"the run store (fp32; runs named in `study_results.json` → `{key}` → `runs`)" if "runs" in r["study"][key] else
               "the last full bf16 run and its companion runs (before the run store; not yet replaced)")
        lines.append(f"- {where}, `study_results.json` → `{key}`: {src}")
    machines = {}
    for m in r.get("stored_runs", {}).values():
        label = f"{m.get('gpu', m['cpu'])} ({m['cores']} cores, {m['device']}, {m['threads']} thread(s) per run)"
        machines[label] = machines.get(label, 0) + 1
    lines.append("- The store's runs by machine (each run.json names its own): " +
                 "; ".join(f"{label}: {n}" for label, n in sorted(machines.items())))
    return "\n".join(lines) + "\n"


def table_benchmark(r):
    b = r["benchmark"]
    rows = [[x["model"], x["path"], x["precision"], f"{x['images_per_s']:.0f}", f"{x['gflop_per_image']:.2f}",
             f"{x['gflops_achieved']:.0f}", f"{x['gemm_peak_gflops']:.0f}", f"{x['fraction_of_peak']:.0%}",
             f"{x['data_share']:.1%}"] for x in b["rows"]]
    rows += [[f"**{k}: fast / plain**", "", "", f"**{v:.2f}x**", "", "", "", "", ""] for k, v in b["speedup"].items()]
    return md(["model", "input path", "precision", "img/s", "GFLOP/img (fwd+bwd)", "GFLOP/s", "GEMM peak GFLOP/s",
               "of peak", "data share"], rows)


def table_scaling(r):
    """--jobs scaling: independent HeatmapNet trainings side by side (benchmark.json "scaling")."""
    rows = [[x["jobs"], x["threads"], f"{x['images_per_s']:.1f}", f"{x['wall_s']:.1f}", x["steps_per_job"]]
            for x in r["benchmark"].get("scaling", [])]
    return md(["jobs", "threads each", "img/s, all jobs", "wall s", "steps per job"], rows)


TABLES = {"headline": table_headline, "scaling": table_scaling, "readouts": table_readouts,
          "readout_steps": table_readout_steps, "pck_bbox": lambda r: table_pck(r, "bbox"),
          "pck_torso": lambda r: table_pck(r, "torso"), "per_keypoint": table_per_keypoint,
          "per_keypoint_pck": table_per_keypoint_pck, "decoders": table_decoders, "seeds": table_seeds,
          "seed_pairs": table_seed_pairs, "ablation": table_ablation, "failures": table_failures, "hands": table_hands,
          "hand_gap": table_hand_gap, "hand_loss": table_hand_loss, "hand_loss_pairs": table_hand_loss_pairs,
          "budget_long": table_budget_long, "data_steps": table_data_steps,
          "data_steps_paired": table_data_steps_paired, "precision": table_precision,
          "translation": table_translation, "data": table_data, "timing": table_timing, "training": table_training, "benchmark": table_benchmark,
          "readout_findings": readout_findings, "readout_summary": lambda r: readout_findings(r, KEY_STEPS),
          "readout_spread": readout_spread, "sources": sources}


def store_training_seconds(study):
    """Training seconds of the distinct runs behind the readout, hand-loss and budget sections: a run that two
    sections share (the strict hand-loss rows are readout runs) is counted once."""
    rows = [row for x in study.get("readouts", {}).get("readouts", {}).values() for row in x["per_seed"]]
    rows += [row for v in study.get("hand_loss", {}).get("rows", {}).values() for row in v]
    budget = study.get("budget", {})
    rows += [row for by_e in budget.get("long", {}).values() for v in by_e.values() for row in v]
    rows += [row for by_n in budget.get("data_steps", {}).get("rows", {}).values() for v in by_n.values() for row in v]
    return sum({row["run"]: row["train_seconds"] for row in rows}.values())


def _decoder_px(r, decoder):
    return r["metrics"]["heatmap"]["decoders"][decoder]["strict"]["mean_px_error"]


def _seed_mean(r, method, key):
    return r["study"]["seeds"]["mean"][method][key]


def _shifted(r, method):
    return r["study"]["translation"][method]["shifted"]["strict"]["mean_px_error"]


def _in_range(r, method):
    return r["study"]["translation"][method]["in_range"]["strict"]["mean_px_error"]


def scaling_gain(r):
    """Throughput of 2 jobs x 1 thread over 1 job x 2 threads (benchmark.json "scaling")."""
    s = {(x["jobs"], x["threads"]): x["images_per_s"] for x in r["benchmark"].get("scaling", [])}
    return f"{s[2, 1] / s[1, 2]:.1f}" if (2, 1) in s and (1, 2) in s else "(not measured)"


def table_how_far(r):
    """how_far.py's rows: mean ± std over seeds on test (heatmaps with the decoder chosen on val), device per row."""
    h = r["how_far"]
    rows = [[k.replace("schedule: ", "HeatmapNet, ").replace("ladder: ", "regression, 30 epochs: ").replace(
        "long: ", "regression: "), ", ".join(sorted({x["device"].replace("Intel(R) Xeon(R) Processor", "Intel Xeon")
                                                      for x in v}))] +
            [_mean_sd([x[m] for x in v], "{:.3f}" if m.startswith("pck") else "{:.2f}")
             for m in ("px", "px_sym", "px_hands_sym", "pck05_sym")] for k, v in h["rows"].items()]
    return md([f"recipe (seeds {', '.join(map(str, h['seeds']))}, {h['precision']})", "trained on", "px", "px sym",
               "hands px sym", "PCK@0.05 sym"], rows)


def table_how_far_steps(r):
    """how_far.py's paired steps (to minus from, by seed; 95% t-interval; * = the interval excludes 0)."""
    return md(["from", "to", "px sym", "hands px sym", "PCK@0.05 sym"],
              [[st["from"], st["to"], _ci(st["px_sym"]), _ci(st["px_hands_sym"]), _ci(st["pck05_sym"], "{:+.3f}")]
               for st in r["how_far"]["steps"]])


def _hf_step(r, a, b, metric="px_sym"):
    st = next(x for x in r["how_far"]["steps"] if x["from"] == a and x["to"] == b)
    pck = metric.startswith("pck")
    return _ci(st[metric], "{:+.3f}" if pck else "{:+.2f}") + ("" if pck else " px")


def _best(r, key):
    """The committed best-recipe checkpoint's own numbers (results/best: train.py + evaluate.py), decoder as chosen
    on val by how_far.py."""
    if "best" not in r:
        return "(not trained yet)"
    if key == "machine":
        return machine_label(r["best_log"]["config"]["machine"])
    value = summary_numbers(r["best"]["heatmap"]["decoders"][r["how_far"]["decoder"]])
    return f"{value[key]:.3f}" if key.startswith("pck") else f"{value[key]:.2f}"


def _hf_goal(r):
    """'met', or 'not met: <each missed criterion with its value and bound>' for the best recipe's test means."""
    h = r["how_far"]
    means, goal = h["means"][f"schedule: {h['best_schedule']}"], h["goal"]
    missed = [f"{label} {means[k]:.3f} < {goal[k]}" if k.startswith("pck") else f"{label} {means[k]:.2f} > {goal[k]} px"
              for k, label in (("px_hands_sym", "hands"), ("px_sym", "all keypoints"), ("pck05_sym", "PCK@0.05"))
              if (means[k] < goal[k] if k.startswith("pck") else means[k] > goal[k])]
    return "met" if not missed else "not met: " + ", ".join(missed)


def _hf_best(r):
    h = r["how_far"]
    return f"long: {h['best_loss']} @ {h['best_schedule']}", f"schedule: {h['best_schedule']}"


# numbers quoted in prose: <!-- v:NAME -->value<!-- /v -->
VALUES = {
    "n_seeds": lambda r: str(len(r["study"]["seeds"]["seeds"])),
    "hm_px": lambda r: f"{_seed_mean(r, 'heatmap', 'mean_px_error'):.2f}",
    "rg_px": lambda r: f"{_seed_mean(r, 'regression', 'mean_px_error'):.2f}",
    "int_px": lambda r: f"{_seed_mean(r, 'integral', 'mean_px_error'):.2f}",
    "rg_over_hm_px": lambda r: f"{_seed_mean(r, 'regression', 'mean_px_error') / _seed_mean(r, 'heatmap', 'mean_px_error'):.1f}",
    "hm_pck05": lambda r: f"{_seed_mean(r, 'heatmap', 'pck_bbox_0.05'):.3f}",
    "rg_pck05": lambda r: f"{_seed_mean(r, 'regression', 'pck_bbox_0.05'):.3f}",
    "int_pck05": lambda r: f"{_seed_mean(r, 'integral', 'pck_bbox_0.05'):.3f}",
    "hm_shift_px": lambda r: f"{_shifted(r, 'heatmap'):.2f}",
    "rg_shift_px": lambda r: f"{_shifted(r, 'regression'):.2f}",
    "int_shift_px": lambda r: f"{_shifted(r, 'integral'):.2f}",
    "hm_in_px": lambda r: f"{_in_range(r, 'heatmap'):.2f}",
    "rg_in_px": lambda r: f"{_in_range(r, 'regression'):.2f}",
    "int_in_px": lambda r: f"{_in_range(r, 'integral'):.2f}",
    "ro_seeds_done": lambda r: str(sum(len(x["per_seed"]) for x in r["study"]["readouts"]["readouts"].values())),
    "ro_seeds_total": lambda r: str(len(r["study"]["readouts"]["readouts"]) * len(r["study"]["readouts"]["seeds"])),
    **{f"dec_val_{d}": (lambda r, d=d: f"{r['metrics']['decoder_selection']['mean_px_error'][d]:.2f}")
       for d in ("argmax", "quarter", "dark")},
    "dec_val_best": lambda r: r["metrics"]["decoder_selection"]["best"],
    # argmax minus a sub-pixel decoder, test mean px of the assignment's HeatmapNet (metrics.json, one model)
    **{f"dec_gain_{d}": (lambda r, d=d: f"{_decoder_px(r, 'argmax') - _decoder_px(r, d):.2f}") for d in ("quarter", "dark")},
    "shift_n_images": lambda r: str(r["study"]["translation"]["shifted_test"]["num_images"]),
    "assignment_timing": assignment_timing,
    "log_machine": lambda r: machine_label(r["log"]["config"].get("machine")),
    "log_methods": lambda r: ", ".join(NAMES[m] for m in r["log"]["config"]["methods"]),
    "study_store_minutes": lambda r: f"{store_training_seconds(r['study']) / 60:.0f}",
    "bench_hm_img_s": lambda r: f"{next(x['images_per_s'] for x in r['benchmark']['rows'] if x['model'] == 'HeatmapNet' and x['path'] == 'fast'):.0f}",
    "data_share_hm": lambda r: f"{next(x['data_share'] for x in r['benchmark']['rows'] if x['model'] == 'HeatmapNet' and x['path'] == 'fast'):.1%}",
    "bench_machine": lambda r: machine_label(r["benchmark"]["config"].get("machine")),
    "hm_img_s": lambda r: f"{r['log']['heatmap']['images_per_second']:.0f}",
    "fail_hm_only": lambda r: str(r["failures"]["counts"]["heatmap_only"]),
    "fail_rg_only": lambda r: str(r["failures"]["counts"]["regression_only"]),
    "fail_both": lambda r: str(r["failures"]["counts"]["both_fail"]),
    "fail_both_gap": lambda r: f"{r['failures']['characterisation']['both_fail']['hand_gap_px']['these']:.1f}",
    "all_gap": lambda r: f"{r['failures']['characterisation']['both_fail']['hand_gap_px']['all']:.1f}",
    "fixed_sym_hm": lambda r: str(r["failures"]["fixed_by_symmetric_matching"]["heatmap"]),
    **{f"int_best_epochs_{rule}": (lambda r, rule=rule: integral_selected_epochs(r, rule))
       for rule in ("val_loss", "val_px")},
    "scaling_gain": scaling_gain,
    "speedup_hm": lambda r: f"{r['benchmark']['speedup']['HeatmapNet']:.1f}",
    "speedup_rg": lambda r: f"{r['benchmark']['speedup']['RegressionNet']:.1f}",
}


# quoted numbers of the hands study: name -> (variant, matching, key) in study_results.json["hands"]
HAND_VALUES = {
    "hm_hand_px_faithful": ("heatmap_faithful", "strict", "hand_px_error"),
    "hm_hand_px_joint": ("heatmap_faithful_joint_hands", "strict", "hand_px_error"),
    "hm_hand_px_joint_sym": ("heatmap_faithful_joint_hands", "symmetric", "hand_px_error"),
    "hm_hand_px_canonical": ("heatmap_canonical", "strict", "hand_px_error"),
    "rg_hand_px_faithful": ("regression_faithful", "strict", "hand_px_error"),
    "rg_hand_px_canonical": ("regression_canonical", "strict", "hand_px_error"),
    "rg_px_canonical": ("regression_canonical", "strict", "mean_px_error"),
    "hm_px_canonical": ("heatmap_canonical", "strict", "mean_px_error"),
    "int_px_canonical": ("integral_canonical", "strict", "mean_px_error"),
}
VALUES.update({name: (lambda r, v=v, m=m, k=k: f"{r['study']['hands'][v][m][k]:.2f}")
               for name, (v, m, k) in HAND_VALUES.items()})
VALUES.update({f"gap_{short}": (lambda r, key=key: f"{r['study']['hands']['hand_gap_px'][key]:.1f}")
               for short, key in (("gt", "ground_truth"), ("hm", "heatmap_faithful"), ("rg", "regression_faithful"),
                                  ("rg_canonical", "regression_canonical"))})

# readout means quoted in prose: ro_<readout>_<metric> (mean over the seeds stored; n shown when not all are)

def _mean_n(vals, n_all=None, fmt="{:.2f}"):
    """A mean quoted in prose, with its n unless it covers all n_all seeds."""
    if not vals:
        return "(not measured yet)"
    return fmt.format(np.mean(vals)) + ("" if len(vals) == n_all else f" (n={len(vals)})")


def _readout_mean(r, name, metric):
    ro = r["study"]["readouts"]
    return _mean_n([row_value(row, metric) for row in ro["readouts"][name]["per_seed"]], len(ro["seeds"]))


VALUES.update({f"ro_{n}_{m}": (lambda r, n=n, m=m: _readout_mean(r, n, m)) for n in READOUTS
               for m in ("px", "px_head_feet", "px_hands_sym", "px_shifted", "spread_ratio", "px_valpx")})


def _unit(metric):
    """How a quoted number of this metric is written: 'pck' (a fraction), 'epochs' or 'px'."""
    return "pck" if metric.startswith("pck") else "epochs" if metric.endswith("epoch") else "px"


def _hand_loss_mean(r, name, metric):
    pck = metric.startswith("pck")
    return _mean_n([x[metric]["0.05"] if pck else x[metric] for x in r["study"]["hand_loss"]["rows"].get(name, [])],
                   fmt={"pck": "{:.3f}", "epochs": "{:.1f}", "px": "{:.2f}"}[_unit(metric)])


VALUES.update({f"hl_{m}_{loss}_{k}": (lambda r, n=f"{m}_{loss}", k=k: _hand_loss_mean(r, n, k))
               for m in METHODS for loss in ("strict", "symmetric")
               for k in ("px", "px_sym", "px_hands", "px_hands_sym", "pck_bbox", "pck_bbox_sym", "hand_gap_px",
                         "best_epoch")})

QUOTED = {"px": ("{:+.2f}", " px"), "pck": ("{:+.3f}", ""), "epochs": ("{:+.1f}", " epochs")}  # _unit -> (format, unit)


def _quoted(d, unit="px", noise="seed noise"):
    """A paired difference as quoted in prose: value and interval, unit, and the verdict (readouts.verdict)."""
    fmt, suffix = QUOTED[unit]
    return f"{_ci(d, fmt)}{suffix}, {verdict(d, noise)}"


def _step(r, a, b):
    return next(s for s in r["study"]["readouts"]["steps"] if (s["from"], s["to"]) == (a, b))


# hl_pair_<method>_<metric>: symmetric minus strict hand loss; step_<a>__<b>_<metric>: a readout step;
# sel_<readout>: px under the val-px selection rule minus px under the val-loss rule (all paired by seed)
VALUES.update({f"hl_pair_{m}_{k}": (lambda r, m=m, k=k: _quoted(r["study"]["hand_loss"]["paired"][m][k], _unit(k)))
               for m in METHODS for k in HAND_LOSS_METRICS})
# hlx_<a>__<b>_<metric>: two rows of the hand-loss study (<method>_<loss>), b minus a, paired by seed
HL_ROWS = [f"{m}_{loss}" for m in METHODS for loss in ("strict", "symmetric")]
VALUES.update({f"hlx_{a}__{b}_{k}": (lambda r, a=a, b=b, k=k: _quoted(paired_by_seed(
    r["study"]["hand_loss"]["rows"].get(a, []), r["study"]["hand_loss"]["rows"].get(b, []), HAND_LOSS_METRICS[k])[1],
    _unit(k))) for a in HL_ROWS for b in HL_ROWS if a != b for k in HAND_LOSS_METRICS})


def hand_loss_interaction(r, a, b, metric):
    """How the symmetric hand loss changes the gap between methods a and b: per seed (b - a under the symmetric
    loss) minus (b - a under the strict loss), over the seeds all four runs have, 95% t-interval."""
    rows = {k: {x["seed"]: HAND_LOSS_METRICS[metric](x) for x in v} for k, v in r["study"]["hand_loss"]["rows"].items()}
    names = [f"{m}_{loss}" for loss in ("strict", "symmetric") for m in (a, b)]
    seeds = sorted(set.intersection(*(set(rows.get(n, {})) for n in names)))
    gap = lambda loss, s: rows[f"{b}_{loss}"][s] - rows[f"{a}_{loss}"][s]  # noqa: E731
    return paired_difference([gap("strict", s) for s in seeds], [gap("symmetric", s) for s in seeds])


# hli_<a>__<b>_<metric>: the change of (b minus a) from the strict to the symmetric hand loss
VALUES.update({f"hli_{a}__{b}_{k}": (lambda r, a=a, b=b, k=k: _quoted(hand_loss_interaction(r, a, b, k), _unit(k)))
               for a in METHODS for b in METHODS if a != b for k in HAND_LOSS_METRICS})
VALUES["hl_true_gap"] = lambda r: f"{r['study']['hand_loss']['hand_gap_px_ground_truth']:.1f}"
VALUES.update({f"step_{a}__{b}_{m}": (lambda r, a=a, b=b, m=m: _quoted(_step(r, a, b)[m])) for a, b, _ in STEPS
               for m in STEP_METRICS})
VALUES.update({f"sel_{n}": (lambda r, n=n: _quoted(r["study"]["readouts"]["selection"][n])) for n in READOUTS})
# any two readouts paired by seed, beyond the interpreted STEPS (pair_<a>__<b>_px: b minus a), and each readout's
# in-range -> shifted change within its own runs (shift_<readout>: px_shifted minus px)
VALUES.update({f"pair_{a}__{b}_px": (lambda r, a=a, b=b: _quoted(paired_between(r["study"]["readouts"], a, b, "px")[1]))
               for a in READOUTS for b in READOUTS if a != b})
VALUES.update({f"shift_{n}": (lambda r, n=n: _quoted(paired_between(r["study"]["readouts"], n, n, "px",
                                                                    "px_shifted")[1])) for n in READOUTS})
VALUES.update({f"ref_{n}_{m}": (lambda r, n=n, m=m: f"{r['study']['readouts']['references'][n][m]:.2f}")
               for n in ("mean_pose", "centre_plus_mean_offsets")
               for m in ("px", "px_head_feet", "px_hands_sym", "px_shifted", "spread_ratio")})

# abl_<variant>_<metric>: an ablation variant minus the default variant, paired by seed
VALUES.update({f"abl_{n}_{m}": (lambda r, n=n, m=m: _quoted(ablation_pair(r, n, m), _unit(m)))
               for n in {variant_name(variant_config(o)) for v in ABLATIONS.values() for o in v} for m in ABLATION_METRICS})
VALUES["abl_beyond_noise"] = ablation_beyond_noise
VALUES.update({f"budget_{k}_epochs": (lambda r, i=i: str(r["study"]["budget"]["epochs"][i]))
               for i, k in enumerate(("spec", "long"))})
VALUES["budget_precision"] = lambda r: r["study"]["budget"]["precision"]


def _budget_rows(r, method, which):
    """The budget study's stored rows of one method at the spec's ('spec') or the long ('long') length."""
    b = r["study"]["budget"]
    return b["long"].get(method, {}).get(str(b["epochs"][("spec", "long").index(which)]), [])


def _rows_mean(r, rows, metric):
    """Mean of a BUDGET_METRICS metric over budget-study rows, with n unless it covers every seed asked for."""
    return _mean_n([BUDGET_METRICS[metric](x) for x in rows], len(r["study"]["budget"]["seeds"]),
                   QUOTED[_unit(metric)][0].replace("+", ""))


def budget_ratio(r, which):
    """RegressionNet's mean test px over HeatmapNet's, both at the spec's or the long length (budget study)."""
    rows = {m: _budget_rows(r, m, which) for m in ("regression", "heatmap")}
    if not all(rows.values()):
        return "(not measured yet)"
    ratio = np.mean([x["px"] for x in rows["regression"]]) / np.mean([x["px"] for x in rows["heatmap"]])
    n = {m: len(v) for m, v in rows.items()}
    return f"{ratio:.1f}x" + ("" if set(n.values()) == {len(r["study"]["budget"]["seeds"])} else
                              f" (seeds: regression {n['regression']}, heatmap {n['heatmap']})")


def data_epochs_px(r, method, size):
    d = r["study"]["data_efficiency"]
    return f"{dict(zip(d['sizes'], d[method]['mean_px_error']))[size]:.2f}"


# budget_<method>_<spec|long>_<metric>: mean over the stored seeds; budget_pair_<method>_<metric>: long minus spec
# (paired by seed); budget_ratio_<spec|long>: regression px / heatmap px; budget_val_<method>_<field>: the long
# runs' own validation px (long_val_px); dsteps_<method>_<size>_<metric>: the fixed-step runs; dsteps_pair_<method>_
# <size>_<metric>: that size minus the full set at fixed steps (paired by seed); deff_<method>_<size>_px: the
# fixed-epoch data-efficiency runs (study.py --studies data; one seed). Sizes: study.py's defaults and the full set.
VALUES.update({f"budget_{m}_{w}_{k}": (lambda r, m=m, w=w, k=k: _rows_mean(r, _budget_rows(r, m, w), k))
               for m in NAMES for w in ("spec", "long") for k in BUDGET_METRICS})
VALUES.update({f"budget_pair_{m}_{k}": (lambda r, m=m, k=k: _quoted(r["study"]["budget"]["long_paired"].get(
    m, {}).get(k, {"diff": None}), _unit(k))) for m in NAMES for k in BUDGET_METRICS})
VALUES.update({f"budget_ratio_{w}": (lambda r, w=w: budget_ratio(r, w)) for w in ("spec", "long")})
VALUES.update({f"budget_val_{m}_{f}": (lambda r, m=m, f=f: _mean_n(
    [x[f] for x in r["study"]["budget"].get("long_val_px", {}).get(m, [])], len(r["study"]["budget"]["seeds"]),
    "{:.0f}" if f == "best_epoch" else "{:.2f}")) for m in NAMES for f in ("best_to_spec", "best", "best_epoch", "last")})
VALUES.update({f"dsteps_{m}_{n}_{k}": (lambda r, m=m, n=n, k=k: _rows_mean(
    r, r["study"]["budget"]["data_steps"]["rows"].get(m, {}).get(str(n), []), k))
               for m in NAMES for n in (125, 250, 500, 1000) for k in ("px", "pck_bbox")})
VALUES.update({f"dsteps_pair_{m}_{n}_{k}": (lambda r, m=m, n=n, k=k: _quoted(r["study"]["budget"]["data_steps"].get(
    "paired_to_full", {}).get(m, {}).get(str(n), {}).get(k, {"diff": None}), _unit(k)))
               for m in NAMES for n in (125, 250, 500) for k in ("px", "pck_bbox", "px_valpx")})
VALUES.update({f"deff_{m}_{n}_px": (lambda r, m=m, n=n: data_epochs_px(r, m, n)) for m in NAMES
               for n in (125, 250, 500, 1000)})

# prec_<metric>: bf16 minus fp32 over the stored recipe pairs (study.study_precision)
VALUES.update({f"prec_{k}": (lambda r, k=k: _quoted(r["study"]["precision"]["paired"][k], _unit(k),
                                                     "the spread over the pairs")) for k in PRECISION_METRICS})
VALUES["prec_n"] = lambda r: str(r["study"]["precision"]["paired"]["n"])


def ablation_runs(r):
    """'3 seeds per variant (seeds 0, 1, 2; fp32)': what the ablation table is made of (with --partial, how
    many of the asked-for runs are stored, and which variants lack some)."""
    a = r["ablation"]
    seeds, precision = a["seeds"], a["recipe"]["precision"]
    many = f"{len(seeds)} seeds" if len(seeds) > 1 else "one seed"
    text = f"{many} per variant ({'seeds' if len(seeds) > 1 else 'seed'} {', '.join(map(str, seeds))}; {precision})"
    names = list(dict.fromkeys(n for names in a["studies"].values() for n in names))
    have = {n: len(a["variants"].get(n, {}).get("runs", [])) for n in names}
    short = [f"{n} {k}" for n, k in have.items() if k < len(seeds)]
    if not short:
        return text
    return (f"{text} asked for, {sum(have.values())} of {len(names) * len(seeds)} runs stored so far (`baseline.py "
            f"--partial`); seeds stored where not all: {', '.join(short)}")


VALUES["abl_runs"] = ablation_runs


def fp32_train_estimate(r):
    """train.py's training time on the benchmark's CPU in fp32, derived (not timed): the images train.py's run
    trained on (epochs x training images per method) over benchmark.json's fast-path images/s for that model."""
    speed = {x["model"]: x["images_per_s"] for x in r["benchmark"]["rows"] if x["path"] == "fast"}
    names = {"heatmap": "HeatmapNet", "regression": "RegressionNet"}
    seconds = sum(r["log"][m]["recipe"]["epochs"] * r["log"][m]["recipe"]["num_train"] / speed[names[m]]
                  for m in names if m in r["log"])
    return f"{seconds / 60:.0f} minutes"


VALUES["fp32_train_estimate"] = fp32_train_estimate
TABLES.update(how_far=table_how_far, how_far_steps=table_how_far_steps)
VALUES.update({
    "hf_best_schedule": lambda r: r["how_far"]["best_schedule"], "hf_decoder": lambda r: r["how_far"]["decoder"],
    "hf_best_loss": lambda r: r["how_far"]["best_loss"],
    "hf_goal": lambda r: _hf_goal(r),
    **{f"hf_hm_{m}": (lambda r, m=m: f"{r['how_far']['means'][_hf_best(r)[1]][m]:{'.3f' if m.startswith('pck') else '.2f'}}")
       for m in ("px_sym", "px_hands_sym", "pck05_sym")},
    "hf_rg_px_sym": lambda r: f"{r['how_far']['means'][_hf_best(r)[0]]['px_sym']:.2f}",
    "hf_ratio": lambda r: f"{r['how_far']['means'][_hf_best(r)[0]]['px_sym'] / r['how_far']['means'][_hf_best(r)[1]]['px_sym']:.0f}",
    "hf_gap": lambda r: _hf_step(r, *_hf_best(r)),
    "hf_30_100": lambda r: _hf_step(r, "schedule: 30 constant", "schedule: 100 constant"),
    "hf_100_300": lambda r: _hf_step(r, "schedule: 100 constant", "schedule: 300 constant"),
    "hf_300_cos": lambda r: _hf_step(r, "schedule: 300 constant", "schedule: 300 cosine"),
    **{f"best_{k}": (lambda r, k=k: _best(r, k)) for k in ("px_sym", "px_hands_sym", "pck05_sym", "machine")},
    "hf_100_300_cos": lambda r: _hf_step(r, "schedule: 100 cosine", "schedule: 300 cosine"),
    "hf_100_cos": lambda r: _hf_step(r, "schedule: 100 constant", "schedule: 100 cosine"),
    "hf_plain": lambda r: _hf_step(r, "ladder: spec head", "ladder: no dropout/sigmoid"),
    **{f"hf_loss_{k}": (lambda r, n=n: _hf_step(r, "ladder: symmetric hand loss", f"ladder: {n}"))
       for k, n in (("l1", "L1"), ("laplace", "Laplace NLL"), ("rle", "RLE"))},
})


def render(text, results):
    """Text with every table block and every inline value regenerated from `results`."""
    text = BLOCK.sub(lambda mt: mt.group(1) + TABLES[mt.group(2)](results) + mt.group(4), text)
    return INLINE.sub(lambda mt: mt.group(1) + VALUES[mt.group(2)](results) + mt.group(4), text)


def main(argv=None):
    p = argparse.ArgumentParser(description="Regenerate (or --check) the results tables in report.md and README.md.")
    p.add_argument("--check", action="store_true", help="exit 1 if a table block is out of date")
    args = p.parse_args(argv)
    results = load_results()
    stale = []
    for doc in DOCS:
        if not doc.exists():
            continue
        text = doc.read_text()
        new = render(text, results)
        if new != text:
            stale.append(doc.name)
            if not args.check:
                doc.write_text(new)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run `python problem2/report.py`")
        return 1
    print("tables " + ("checked" if args.check else "written") + f" ({len(DOCS)} documents)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
