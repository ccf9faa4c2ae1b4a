"""report.md, report_appendix.md and README.md, filled from results/*.json by `python report.py` (--check: exit 1 when
one differs): no number in them is typed by hand. Each {{KIND:arg:...}} in their templates (DOCS) is filled by
KINDS, e.g. {{table:ablation}}, {{v:n_seeds}}, {{ci:study.hand_loss.paired.heatmap:px}} (the paired difference stored
at that dotted path, key px); a placeholder with no value stops the script, naming it. px are written to 2 decimals,
PCK (a metric named 'pck...') to 3; "-0.61 [-0.80, -0.41]" is a mean difference paired by seed with its 95 %
t-interval, a trailing 'ns' (not significant) marks one that includes 0 (within seed noise).
"""
import re
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np

from baseline import ABLATION_METRICS, CATEGORIES, DEFAULT_VARIANT
from common import ArgumentParser, RESULTS_DIR, UsageError, machine_label, main_time, read_json, run_cli, write_text
from evaluate import PCK_THRESHOLDS
from model import METHODS
from study import LADDER, LAST_EPOCH_RERUN, ONE_FACTOR, POSITION_ROWS, READOUT_LABELS, READOUTS

HERE = Path(__file__).resolve().parent
DOCS = {HERE / "report_template.md": HERE / "report.md",
        HERE / "report_appendix_template.md": HERE / "report_appendix.md",
        HERE / "readme_template.md": HERE.parent / "README.md"}
SLOT = re.compile(r"\{\{([^{}]+?)\}\}")
LIST_ITEM = re.compile(r" *(- |\d+\. )")  # a bullet or numbered item (nested: indented) starts a paragraph
THR = [str(t) for t in PCK_THRESHOLDS]
NAMES = {m: METHODS[m]["name"] for m in ("heatmap", "regression", "integral")}
FILES = {"metrics": "metrics.json", "log": "training_log.json", "ablation": "ablation_seeds.json",
         "failures": "failure_cases.json", "study": "study_results.json", "timings": "timings.json",
         "benchmark": "benchmark.json", "how_far": "how_far_results.json", "main_command": "main_command.json",
         "best": "best/heatmap_model_test_metrics.json", "best_log": "best/training_log.json"}


class Results(dict):
    """The results by FILES key, remembering which files a placeholder read (named when a value is missing or of the
    wrong type)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = []

    def __getitem__(self, key):
        self.read.append(key)
        return super().__getitem__(key)


def load_results(results_dir=RESULTS_DIR):
    """Each results JSON that exists, by its FILES key; stored_runs: how many runs results/runs holds; run_machines:
    the machine label of each stored run, by folder name; run_cpus: the CPU model of each run trained on a CPU."""
    d = Path(results_dir)
    runs = {p.parent.name: read_json(p).get("machine", {}) for p in (d / "runs").glob("*/run.json")}
    return Results({**{k: read_json(d / f) for k, f in FILES.items() if (d / f).exists()},
                    "stored_runs": len(runs), "run_machines": {k: machine_label(m) for k, m in runs.items()},
                    "run_cpus": {k: m.get("cpu") for k, m in runs.items() if m.get("device", "cpu") == "cpu"}})


# formatting; a missing value raises KeyError, which render() reports with the placeholder's name
def mean(vals):
    vals = list(vals)
    if not vals:
        raise KeyError("no stored runs")
    return float(np.mean(vals))


def num(x, metric="", sign=""):
    """A PCK (metric name contains 'pck') to 3 decimals, anything else (px, ratios) to 2; sign='+' always signs."""
    return f"{x:{sign}.{3 if 'pck' in metric else 2}f}"


def ci(d, metric=""):
    """'-0.61 [-0.80, -0.41]' from a stored {diff, ci95, n}; a trailing ' ns' (not significant) when the interval
    includes 0."""
    if d["diff"] is None:
        raise KeyError("no seeds paired")
    diff = num(d["diff"], metric, "+")
    if d["ci95"] is None:
        return f"{diff} (1 seed)"
    lo, hi = d["ci95"]
    return f"{diff} [{bound(lo, metric)}, {bound(hi, metric)}]" + (" ns" if lo <= 0 <= hi else "")


def bound(x, metric):
    """An interval bound as num() writes it, but one that is not 0 and would round to 0 keeps a significant digit."""
    return num(x, metric, "+") if x == 0 or float(num(x, metric)) else f"{x:+.1g}"


def mean_sd(vals, metric=""):
    """'mean ± std' over seeds; a std that would round to 0 keeps a significant digit (float noise below 1e-9 is 0)."""
    vals = list(vals)
    if len(vals) == 1:
        return num(vals[0], metric) + " (1 seed)"
    sd = float(np.std(vals, ddof=1))
    return f"{num(mean(vals), metric)} ± {bound(sd if sd > 1e-9 else 0.0, metric).lstrip('+')}"


def val(row, k):
    """A per-seed row's number k; a PCK stored per threshold ({'0.05': ...}) gives PCK@0.05, the one quoted."""
    v = row[k]
    return v["0.05"] if isinstance(v, dict) else v


def sd_cells(rows, keys):
    """'mean ± std' over the per-seed rows, one cell per key."""
    return [mean_sd((val(x, k) for x in rows), k) for k in keys]


def md(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


# one number: {{KIND:arg:...}}, see KINDS
def get(r, path):
    """The value at a dotted path of the results, e.g. failures.counts.both_fail (a list's item by its index)."""
    for key in path.split("."):
        r = r[int(key)] if isinstance(r, list) else r[key]
    return r


def j(r, path):
    """One value by its path (a float to 2 decimals); a dict or list is an error."""
    x = get(r, path)
    if isinstance(x, (dict, list)):
        raise KeyError(f"{path} is not one value")
    return num(x) if isinstance(x, float) else str(x)


def stored_step(steps, a, b):
    """The stored {from, to, metric: {diff, ci95, n}} of b minus a."""
    return next(s for s in steps if (s["from"], s["to"]) == (a, b))


def step(steps, a, b, metric):
    """b minus a, paired by seed, as ci() writes it."""
    return ci(stored_step(steps, a, b)[metric], metric)


def percent(x):
    """'79 %' for 0.79."""
    return f"{x:.0%}".replace("%", " %")


def share(steps, a, b, metric="pck_bbox"):
    """'78 %': b minus a as a share of HeatmapNet minus RegressionNet (the gap of Table 1), seed-mean differences."""
    gap = stored_step(steps, "gap_fc", "heatmap_64")[metric]["diff"]
    return percent(stored_step(steps, a, b)[metric]["diff"] / gap)


def split(hand_loss, rule, part):
    """'79 %': the step of the layers after the encoder ('layers') or of the targets ('targets') as a share of their
    sum, HeatmapNet minus RegressionNet, in PCK@0.05 (seed means of the paired differences that study.py hand_loss
    stored under `rule`)."""
    layers, targets = (hand_loss[k][rule]["pck_bbox"]["diff"]
                       for k in ("integral_minus_regression", "heatmap_minus_integral"))
    return percent((layers if part == "layers" else targets) / (layers + targets))


def far_images(r):
    """How many test images have hands more than two PCK@0.05 radii apart (study hand_loss placement)."""
    return r["study"]["hand_loss"]["placement"]["heatmap"][0]["images"]


HEATMAP_FAILS = ("regression_only", "both_fail")  # the failure categories where HeatmapNet fails


def heatmap_misses_on_other_hand(r):
    """'all 123' or '120 of 123': of the hands HeatmapNet misses (failure analysis), those within the success radius
    of the image's other true hand."""
    chars = r["failures"]["characterisation"]
    on = sum(chars[c]["hands"]["heatmap"]["on_other_hand"] for c in HEATMAP_FAILS)
    missed = sum(chars[c]["hands"]["count"] for c in HEATMAP_FAILS)
    return f"all {missed}" if on == missed else f"{on} of {missed}"


def kept_epochs(rows):
    """'29, 30, 30': the epoch each seed's run kept."""
    return ", ".join(str(x["best_epoch"]) for x in rows)


def complete(readout_section):
    """The readout study's section, refused (KeyError) while any readout misses a seed: its tables say 'n seeds'."""
    if not all(x["complete"] for x in readout_section["readouts"].values()):
        raise KeyError("the readout study is missing runs; run study.py")
    return readout_section


def hf_row(h, name):
    """A how_far.py row: 'best' / 'best_regression' are the recipes best on val; '%' stands for ': '."""
    return {"best": f"schedule: {h['best_schedule']}",
            "best_regression": f"long: {h['best_loss']} @ {h['best_schedule']}"}.get(name, name.replace("%", ": "))


# tables: {{table:NAME}}
SPEC_READOUTS = {"heatmap": "heatmap_64", "regression": "gap_fc", "integral": "integral_64"}  # the spec methods
SPEC_STEPS = {("gap_fc", "heatmap_64"), ("gap_fc", "integral_64")}  # their differences, not readout steps


MATCHING = {"": "as labelled", "_sym": "either order"}  # strict / symmetric hand matching, as the tables name them


def table_assignment(r, norm="bbox", methods=("heatmap", "regression")):
    """PCK at the four thresholds (normalised by `norm`) and mean px: mean ± std over the readout study's seeds of the
    spec methods, one row per method and hand matching (strict, then symmetric)."""
    ro = complete(r["study"]["readouts"])
    rows = {m: ro["readouts"][SPEC_READOUTS[m]]["per_seed"] for m in methods}
    return md(["method", "hands matched"] + [f"PCK@{t}" for t in THR] + ["mean error (px)"],
              [[NAMES[m], label] + [mean_sd((x[f"pck_{norm}{sfx}"][t] for x in rows[m]), "pck") for t in THR]
               + [mean_sd((x["px" + sfx] for x in rows[m]))] for sfx, label in MATCHING.items() for m in methods])


def table_one_factor(r):
    """RegressionNet, then each change of study.ONE_FACTOR made to it alone: parameters, seed-mean PCK@0.05, its
    paired change, and the seed-mean px."""
    ro = complete(r["study"]["readouts"])
    rows = ro["readouts"]
    cells = lambda n, d: [f"{rows[n]['params'] / 1e6:.2f}M", mean_sd((val(x, "pck_bbox") for x in rows[n]["per_seed"]),  # noqa: E731
                                                                     "pck"), d, mean_sd(x["px"] for x in rows[n]["per_seed"])]
    return md(["change to RegressionNet, one at a time", "params", "PCK@0.05", "PCK@0.05 change", "mean error (px)"],
              [["none: RegressionNet as specified"] + cells("gap_fc", "")] +
              [[what] + cells(n, step(ro["steps"], "gap_fc", n, "pck_bbox")) for n, what in ONE_FACTOR])


# each LADDER step's change made alone to RegressionNet (study.ONE_FACTOR's run), where one was trained; step 1 is
# made to RegressionNet itself
LADDER_ALONE = {"flatten_fc": "flatten_fc", "flatten_fc_nodropout": "gap_fc_nodropout",
                "flatten_fc_plain": "gap_fc_nosigmoid"}


def table_ladder(r, last=len(LADDER) - 1):
    """study.LADDER's steps 0 to `last` (steps 1-5 change RegressionNet's layers after the encoder into IntegralNet's,
    step 6 the targets, to HeatmapNet): each row one change from the row above, its seed-mean PCK@0.05, the paired
    change from the row above, and the paired change the same change makes alone to RegressionNet (LADDER_ALONE;
    blank where not trained)."""
    ro = complete(r["study"]["readouts"])
    rows = ro["readouts"]
    return md(["step", "change from the row above", "PCK@0.05", "PCK@0.05 change",
               "the same change alone on RegressionNet"],
              [[str(i), what] + sd_cells(rows[n]["per_seed"], ("pck_bbox",))
               + [step(ro["steps"], LADDER[i - 1][0], n, "pck_bbox") if i else "",
                  step(ro["steps"], "gap_fc", LADDER_ALONE[n], "pck_bbox") if n in LADDER_ALONE else ""]
               for i, (n, what) in enumerate(LADDER[:last + 1])])


def table_ladder_last(r):
    """Table 3's rows whose networks were also trained keeping the last epoch (study.LAST_EPOCH_RERUN): that run's
    seed-mean PCK@0.05 as labelled and in either order, the paired change from the row above, the shifted PCK@0.05."""
    hl = r["study"]["hand_loss"]
    rows = [(i, n, what) for i, (n, what) in enumerate(LADDER) if READOUTS[n][0] in LAST_EPOCH_RERUN]
    return md(["step", "change from the row above", "PCK@0.05", "PCK@0.05, either order", "PCK@0.05 change",
               "PCK@0.05, shifted figures"],
              [[str(i), what, *sd_cells(hl["rows"][f"{READOUTS[n][0]}_strict_last"], ("pck_bbox", "pck_bbox_sym")),
                ci(hl["ladder_last"][n]["pck_bbox"], "pck_bbox") if i else "",
                *sd_cells(hl["rows"][f"{READOUTS[n][0]}_strict_last"], ("pck_bbox_shifted",))] for i, n, what in rows])


def table_position(r):
    """study.POSITION_ROWS: params, seed-mean PCK@0.05, its paired change from RegressionNet, and PCK@0.05 on the
    shifted test set."""
    ro = complete(r["study"]["readouts"])
    rows = ro["readouts"]
    return md(["network", "params", "PCK@0.05", "PCK@0.05 change", "PCK@0.05, shifted figures"],
              [[what, f"{rows[n]['params'] / 1e6:.2f}M", *sd_cells(rows[n]["per_seed"], ("pck_bbox",)),
                step(ro["steps"], "gap_fc", n, "pck_bbox") if n != "gap_fc" else "",
                *sd_cells(rows[n]["per_seed"], ("pck_bbox_shifted",))] for n, what in POSITION_ROWS])


def table_readouts(r):
    """Each readout's mean ± std over seeds (study.py), then the references, which need no training."""
    rs = r["study"]["readouts"]
    cols = (("px", "px"), ("px_sym", "px, either order"), ("px_shifted", "shifted px"), ("spread_ratio", "spread ratio"),
            ("pck_bbox", "PCK@0.05"), ("pck_bbox_sym", "PCK@0.05, either order"))
    keys = [k for k, _ in cols]
    return md(["variant", "what it is"] + [label for _, label in cols],
              [[READOUT_LABELS[n], READOUTS[n][1]] + sd_cells(x["per_seed"], keys) for n, x in rs["readouts"].items()]
              + [[f"*{n.replace('_', ' ')}* (no training)", "reference"] + [num(val(x, k), k) for k in keys]
                 for n, x in rs["references"].items()])


CROSS_MACHINE = ("ladder: spec head", "spatial: soft-argmax 8x8, MSE")  # how_far rows trained on CPUs, not the GPU


def table_how_far(r, cross_machine=False):
    """how_far.py's recipes: mean ± std over seeds of the test numbers of the val-loss checkpoint; the rows trained on
    the GPU, or (cross_machine) the rows trained on CPUs."""
    h = r["how_far"]
    prefixes = {"schedule: ": "HeatmapNet, ", "ladder: ": "pooled regression, 30 epochs: ", "long: ": "pooled regression: ",
                "spatial: ": "the 8x8 map read by a soft-argmax, 30 epochs: "}
    label = lambda k: next(new + k[len(old):] for old, new in prefixes.items()  # noqa: E731
                           if k.startswith(old)).replace("spec head", "as specified").replace(
        "soft-argmax 8x8, MSE", "symmetric hand loss, MSE")
    return md(["recipe (epochs, learning-rate schedule)", "px", "px, either order", "hands px, either order",
               "PCK@0.05, either order"],
              [[label(k)] + sd_cells(v, ("px", "px_sym", "px_hands_sym", "pck_bbox_sym"))
               for k, v in h["rows"].items() if (k in CROSS_MACHINE) == cross_machine])


def variant_label(cfg):
    """A plain name of an ablation variant: what differs from the default (σ in image px, and in the cells of its
    heatmap, train.py --sigma's unit)."""
    cells = cfg["sigma_img"] * cfg["hm_size"] / 128
    sigma = f"σ {cfg['sigma_img']:g} image px = {cells:g} cell{'s' * (cells != 1)}"
    return ", ".join(x for x in (f"{cfg['hm_size']}x{cfg['hm_size']}" if cfg["hm_size"] != 64 else "",
                                 sigma if cfg["sigma_img"] != 4 else "",
                                 "no skips" if not cfg["skip"] else "") if x) or f"default (64x64, {sigma}, skips)"


def table_ablation(r):
    """Every ablation variant (baseline.py), decoded with the quarter step: mean ± std over seeds of PCK@0.05 (as
    labelled, and in either order) and px, with the paired differences to the default."""
    a, rows = r["ablation"], []
    for n in dict.fromkeys(n for names in a["studies"].values() for n in names):
        v, cfg = a["variants"][n]["runs"], a["variants"][n]["config"]
        pair = lambda k: "(default)" if n == DEFAULT_VARIANT else ci(a["variants"][n]["paired_to_default"][k], k)  # noqa: E731
        cell = lambda k: mean_sd((ABLATION_METRICS[k](x["test"]) for x in v), k)  # noqa: E731
        rows.append([variant_label(cfg), cell("pck05"), pair("pck05"), cell("pck05_sym"), cell("px_quarter"),
                     pair("px_quarter")])
    return md(["variant", "PCK@0.05", "PCK@0.05 change", "PCK@0.05, either order", "mean error (px)",
               "mean error change (px)"], rows)


def table_steps(r):
    """The readout study's paired steps, but the spec methods' differences."""
    return md(["step (to − from)", "px", "head + feet px", "hands px, either order", "shifted px", "PCK@0.05"],
              [[f"{READOUT_LABELS[s['from']]} → {READOUT_LABELS[s['to']]}"]
               + [ci(s[k], k) for k in ("px", "px_head_feet", "px_hands_sym", "px_shifted", "pck_bbox")]
               for s in r["study"]["readouts"]["steps"]
               if (s["from"], s["to"]) not in SPEC_STEPS])


def table_failures(r):
    """failure_cases.json: keypoints one method gets right and the other not, or neither, by body part."""
    f, parts = r["failures"], {"head": ("head",), "hands": ("left_hand", "right_hand"),
                               "feet": ("left_foot", "right_foot")}
    return md(["keypoints where", "head", "hands", "feet", "all",
               "true hands' distance apart, mean over the row's hands (px)"],
              [[CATEGORIES[c]] + [sum(f["per_keypoint"][c][k] for k in ks) for ks in parts.values()] +
               [n, num(f["characterisation"][c]["hand_gap_px"]["these"])] for c, n in f["counts"].items()])


def main_text_runs(r):
    """The per-seed rows of the runs behind the main text: the readout study, the hand loss, the ablations."""
    st, a = r["study"], r["ablation"]["variants"]
    return ([x for v in st["readouts"]["readouts"].values() for x in v["per_seed"]]
            + [x for v in st["hand_loss"]["rows"].values() for x in v] + [x for v in a.values() for x in v["runs"]])


def main_cpus(r):
    """'N CPU models (A, B, ...)' that trained the main text's runs (from each run's run.json)."""
    cpus = sorted({r["run_cpus"][x["run"]] for x in main_text_runs(r) if x["run"] in r["run_cpus"]})
    return f"{len(cpus)} CPU model{'s' * (len(cpus) != 1)} ({'; '.join(cpus)})"


def table_machines(r):
    """Where each part's runs were trained: the distinct machines of its stored runs, with counts."""
    st, h, a = r["study"], r["how_far"]["rows"], r["ablation"]["variants"]
    parts = {"Tables 1, 2, B1-B2, C1-C3, C5 (Sections 1, 3, 4)": [x for v in st["readouts"]["readouts"].values()
                                                             for x in v["per_seed"]],
             "Tables 3, C4, C6-C8 (Section 4)": [x for v in st["hand_loss"]["rows"].values() for x in v],
             "Appendix A, HeatmapNet rows": [x for k, v in h.items() if k.startswith("schedule") for x in v],
             "Appendix A, regression rows": [x for k, v in h.items() if not k.startswith("schedule")
                                            and k not in CROSS_MACHINE for x in v],
             "Appendix A, first regression row": h["ladder: spec head"],
             "Appendix A, soft-argmax row": [x for k, v in h.items() if k.startswith("spatial") for x in v],
             "Table 4 (Section 5)": [x for v in a.values() for x in v["runs"]]}
    rows = []
    for part, runs in parts.items():
        counts = Counter(r["run_machines"].get(x["run"], "not stored") for x in runs)
        rows.append([part, len(runs), "; ".join(f"{m} ({n})" for m, n in counts.most_common())])
    rows += [[f"committed models ({k})", 1, machine_label(r["log"][k]["machine"])] for k in ("heatmap", "regression")]
    rows.append(["`results/best/`", 1, machine_label(r["best_log"]["config"]["machine"])])
    return md(["part of the report", "runs", "trained on (runs)"], rows)


HAND_LOSS_ROWS = {"strict": "as labelled", "strict_last": "as labelled (last epoch)", "symmetric": "symmetric",
                  "symmetric_last": "symmetric (last epoch)"}
HAND_LOSS_NAMES = {**NAMES, "softargmax_8": READOUT_LABELS["softargmax_8"]}


def table_hand_loss(r, cols, methods=tuple(NAMES), epochs=False):
    """Each method under each hand loss stored (study.py hand_loss; some also keeping their last epoch): mean ± std
    over seeds of `cols` {key: header}; epochs: a column of each seed's kept epoch first."""
    rows = r["study"]["hand_loss"]["rows"]
    return md(["method", "hand loss"] + ["epochs kept"] * epochs + list(cols.values()),
              [[HAND_LOSS_NAMES[m], HAND_LOSS_ROWS[loss]] + [kept_epochs(rows[f"{m}_{loss}"])] * epochs
               + sd_cells(rows[f"{m}_{loss}"], cols)
               for m in methods for loss in HAND_LOSS_ROWS if f"{m}_{loss}" in rows])


# Section 4's Table 2: the spec networks and IntegralNet, which has HeatmapNet's layers and RegressionNet's targets
WHY_ROWS = {"regression": ("the 8x8 grid averaged into FC layers", "coordinates"),
            "integral": ("HeatmapNet's decoder to 64x64 maps", "coordinates"),
            "heatmap": ("HeatmapNet's decoder to 64x64 maps", "heatmaps")}


def table_why(r):
    """WHY_ROWS (study.py hand_loss), PCK@0.05 mean ± std over seeds, three ways, one change apart: trained and scored
    as labelled; trained as labelled, scored in either order; trained with the symmetric hand loss, scored in either
    order."""
    rows = r["study"]["hand_loss"]["rows"]
    return md(["network", "after the encoder", "trained on", "as labelled", "scored in either order",
               "symmetric loss, scored in either order"],
              [[NAMES[m], layers, target, *sd_cells(rows[f"{m}_strict"], ("pck_bbox", "pck_bbox_sym")),
                *sd_cells(rows[f"{m}_symmetric"], ("pck_bbox_sym",))] for m, (layers, target) in WHY_ROWS.items()])


# Appendix C's Table C8: Section 4's two steps under each choice measured (key in study hand_loss, PCK key)
TWO_STEPS = [("as labelled, epoch of lowest validation loss (Section 4)", "strict", "pck_bbox"),
             ("symmetric loss, scored in either order, epoch of lowest validation loss (Section 4)", "symmetric",
              "pck_bbox_sym"),
             ("as labelled, last epoch", "strict_last", "pck_bbox"),
             ("symmetric loss, scored in either order, last epoch", "symmetric_last", "pck_bbox_sym")]


def table_two_steps(r):
    """IntegralNet − RegressionNet (the layers after the encoder) and HeatmapNet − IntegralNet (the targets), paired
    by seed, in PCK@0.05 under each TWO_STEPS setting."""
    h = r["study"]["hand_loss"]
    return md(["setting", "layers after the encoder: IntegralNet − RegressionNet", "targets: HeatmapNet − IntegralNet"],
              [[label, ci(h["integral_minus_regression"][key][k], k), ci(h["heatmap_minus_integral"][key][k], k)]
               for label, key, k in TWO_STEPS])


READ_OUTS = {"mean": "mean position under the map", "argmax": "peak (argmax)", "quarter": "peak + quarter step"}


def table_readouts_probed(r):
    """The probed networks, as labelled at their epoch of lowest val loss (study hand_loss readouts_probed), each under
    every read-out of their maps: PCK@0.05 as labelled and in either order, mean error and the head and feet's
    (mean ± std over seeds)."""
    ro = r["study"]["hand_loss"]["readouts_probed"]
    return md(["network", "read-out", "PCK@0.05", "PCK@0.05, either order", "mean error (px)", "head and feet (px)"],
              [[NAMES[m], READ_OUTS[d], *sd_cells(rows, ("pck_bbox", "pck_bbox_sym", "px", "px_head_feet"))]
               for m in ("heatmap", "integral") for d, rows in ro[m].items()])


HAND_KEYS = ("px", "px_sym", "px_hands_sym", "hand_gap_px", "pck_bbox", "pck_bbox_sym")
TABLES = {
    "assignment": table_assignment, "assignment_torso": lambda r: table_assignment(r, "torso", tuple(SPEC_READOUTS)),
    "one_factor": table_one_factor,
    "ladder_layers": lambda r: table_ladder(r, [n for n, _ in LADDER].index("integral_64")),  # steps 0-5
    "position": table_position, "why": table_why,
    "two_steps": table_two_steps,
    "ladder_last": table_ladder_last, "readouts_probed": table_readouts_probed,
    "assignment_integral": lambda r: table_assignment(r, "bbox", ("integral",)), "readouts_full": table_readouts,
    "how_far": table_how_far, "how_far_spatial": lambda r: table_how_far(r, True),
    "ablation": table_ablation,
    "failures": table_failures, "machines": table_machines,
    "readout_steps": table_steps,
    "hand_loss_full": lambda r: table_hand_loss(r, {"pck_bbox": "PCK@0.05", "pck_bbox_sym": "PCK@0.05, either order",
                                                    "px": "px", "px_sym": "px, either order",
                                                    "px_hands_sym": "hands px, either order"},
                                                tuple(HAND_LOSS_NAMES), epochs=True),
    "hand_loss_pairs": lambda r: md(  # symmetric minus strict hand loss, paired by seed
        ["symmetric − as-labelled loss", "px", "px, either order", "hands px, either order",
         "between the predicted hands (px)", "PCK@0.05", "PCK@0.05, either order"],
        [[NAMES[m]] + [ci(p[k], k) for k in HAND_KEYS] for m, p in r["study"]["hand_loss"]["paired"].items()]),
}


# named values
def main_command_time(r, precision):
    """'N minutes including the install (M of them), on <machine>' from main_command.json (time_main.py on a fresh
    clone), with the source of a measurement time_main.py did not make."""
    m = r["main_command"].get(precision)
    if m is None:
        flag = " --precision fp32" if precision == "fp32_forced" else ""
        return f"not measured yet (`python problem2/time_main.py{flag}` on such a CPU records it)"
    total, machine = (m["install_seconds"] + m["command_seconds"]) / 60, machine_label(m["machine"])
    return (f"{total:.1f} minutes including the install ({m['install_seconds'] / 60:.1f} of them), on {machine}"
            + (f" ({m['source']})" if m.get("source") else ""))


def allocator_gain(r):
    """benchmark.py's fp32 speed with glibc's default allocator settings and with reuse_freed_memory, per network."""
    rows = {(x["method"], x["allocator"]): x for x in r["benchmark"]["rows"]}
    before, after = "glibc default", "reuse_freed_memory"
    return "; ".join(f"{NAMES[m]} {rows[m, before]['images_per_s']:.0f} -> {rows[m, after]['images_per_s']:.0f} img/s "
                     f"(kernel {rows[m, before]['kernel_share']:.0%} -> {rows[m, after]['kernel_share']:.0%} of the "
                     f"CPU time)" for m in ("heatmap", "regression")) + (
        f", on {machine_label(r['benchmark']['config']['machine'])}")


VALUES = {
    "n_seeds": lambda r: str(len(complete(r["study"]["readouts"])["seeds"])),
    "splits": lambda r: " / ".join(f"{n} {k}" for k, n in r["metrics"]["provenance"]["data"]["split_sizes"].items()),
    "main_time": lambda r: main_time(r["timings"]), "allocator_gain": allocator_gain,
    "main_bf16": lambda r: main_command_time(r, "bf16"), "main_fp32": lambda r: main_command_time(r, "fp32"),
    "main_fp32_forced": lambda r: main_command_time(r, "fp32_forced"),
    "heatmap_failures": lambda r: str(sum(r["failures"]["counts"][c] for c in HEATMAP_FAILS)),
    # of HeatmapNet's failing hands, those within the success radius of the image's other true hand
    "heatmap_misses_on_other_hand": heatmap_misses_on_other_hand,
    "torso_px": lambda r: f"{r['metrics']['normaliser_px']['torso']:.0f}",
    "bbox_px": lambda r: f"{r['metrics']['normaliser_px']['bbox']:.0f}",
    **{f"radius_{k}": (lambda r, t=t: f"{t * r['metrics']['normaliser_px']['bbox']:.1f}")  # PCK@t's radius, px
       for k, t in (("05", 0.05), ("10", 0.1))},
    "sigma_px": lambda r: f"{r['log']['config']['sigma'] * 128 / r['log']['config']['heatmap_size']:g}",  # image px
    "exact_heatmap": lambda r: f"{r['metrics']['heatmap']['exact_fraction']:.2f}",
    # as labelled, the most PCK@0.05 any network can expect: every head and foot right, and of each image whose hands
    # are more than two PCK@0.05 radii apart (evaluate.hand_placement's images), one hand of the coin-flip pair
    "labelled_ceiling": lambda r: num(1 - 2 / 5 * 0.5 * far_images(r) / r["failures"]["num_images"], "pck"),
    "far_images": lambda r: str(far_images(r)),
    "n_test": lambda r: str(r["failures"]["num_images"]),
    "centre_reference_pck05": lambda r: num(r["study"]["readouts"]["references"]["centre_plus_mean_offsets"][
        "pck_bbox"]["0.05"], "pck"),  # no training, told each figure's true centre
    "mean_pose_pck05": lambda r: num(r["study"]["readouts"]["references"]["mean_pose"]["pck_bbox"]["0.05"], "pck"),
    "main_cpus": main_cpus,
    "flatten_extra_params": lambda r: "{:.2f}M".format(np.subtract(*(r["study"]["readouts"]["readouts"][n]["params"]
                                                                    for n in ("flatten_fc", "gap_fc"))) / 1e6),
    **{f"best_{k}": (lambda r, k=k: num(val(r["best"]["heatmap"]["decoders"][r["how_far"]["decoder"]], k), k))
       for k in ("px_sym", "px_hands_sym", "pck_bbox_sym")},
}


KINDS = {  # {{KIND:arg:...}} -> its text; a path is dotted (study.hand_loss.paired), k a metric key (px, pck_bbox, ...)
    "table": lambda r, name: TABLES[name](r), "v": lambda r, name: VALUES[name](r), "j": j,
    "ci": lambda r, path, k: ci(get(r, path)[k], k),  # a paired difference a study script stored
    "ro": lambda r, name, k: num(mean(val(x, k) for x in r["study"]["readouts"]["readouts"][name]["per_seed"]), k),
    "hl": lambda r, row, k: num(mean(val(x, k) for x in r["study"]["hand_loss"]["rows"][row]), k),  # seed mean
    "step": lambda r, a, b, k="px": step(r["study"]["readouts"]["steps"], a, b, k),  # readout b - a
    "share": lambda r, a, b: share(r["study"]["readouts"]["steps"], a, b),  # b - a as a share of the PCK@0.05 gap
    "split": lambda r, rule, part: split(r["study"]["hand_loss"], rule, part),  # Section 4's two steps as shares
    "ep": lambda r, row: kept_epochs(r["study"]["hand_loss"]["rows"][row]),  # the epoch each seed's run kept
    "pl": lambda r, m, k, key="placement": num(mean(x[k] for x in r["study"]["hand_loss"][key][m]), "pck"),  # placement
    "default": lambda r, d, k: num(mean(val(x["test"][d], k) for x in r["ablation"]["variants"][DEFAULT_VARIANT][
        "runs"]), k),  # the default HeatmapNet's seed mean (baseline.py --seeds), read by decoder d
    "rl": lambda r, m, d, k: num(mean(val(x, k) for x in r["study"]["hand_loss"]["readouts_probed"][m][d]), k),
    "hf": lambda r, row, k: num(r["how_far"]["means"][hf_row(r["how_far"], row)][k], k),  # a recipe's seed mean
    "hfstep": lambda r, a, b: step(r["how_far"]["steps"], hf_row(r["how_far"], a), hf_row(r["how_far"], b), "px_sym"),
    "pck": lambda r, name, t, sfx="": num(mean(x[f"pck_bbox{sfx}"][t] for x in r["study"]["readouts"]["readouts"][name][
        "per_seed"]), "pck"),  # a readout's seed-mean PCK (bbox) at threshold t; sfx '_sym' or '_shifted'
}


def render(text, results, where="template"):
    """The template with every {{placeholder}} filled; a placeholder without a value stops, naming it."""
    results = results if isinstance(results, Results) else Results(results)

    def fill(m):
        kind, *args = m.group(1).split(":")
        results.read.clear()
        try:
            return KINDS[kind](results, *args)
        except (KeyError, StopIteration, TypeError, ValueError, AttributeError, IndexError) as e:  # the JSON lacks it
            files = ", ".join(dict.fromkeys(FILES[k] for k in results.read if k in FILES)) or "?"
            raise UsageError(f"{where}: no value for {{{{{m.group(1)}}}}} ({type(e).__name__}: {e}) in results/"
                             f"{files}; rerun the script that writes it, or fix the name") from None
    return SLOT.sub(fill, text)


def reflow(text, width=120):
    """Prose paragraphs and bullets re-wrapped to `width` columns after the numbers are filled in (a filled number is
    shorter than its placeholder); tables, headings, images, comments and code blocks are left as they are."""
    out, para, in_code = [], [], False

    def flush():
        if para:
            item, indent = LIST_ITEM.match(para[0]), len(para[0]) - len(para[0].lstrip())
            words = " ".join(line.strip() for line in para)
            out.extend(textwrap.wrap(words, width, initial_indent=" " * indent,
                                     subsequent_indent=" " * (len(item.group()) if item else indent),
                                     break_long_words=False, break_on_hyphens=False))
            para.clear()
    for line in text.split("\n"):
        if line.startswith("```"):
            in_code = not in_code
        keep = in_code or line.startswith("```") or not line.strip() or line.startswith(("|", "#", "![", "<!--"))
        if keep or LIST_ITEM.match(line):
            flush()
        if keep:
            out.append(line)
        else:
            para.append(line)
    flush()
    return "\n".join(out)


def main(argv=None):
    p = ArgumentParser(description="Write (or --check) report.md, report_appendix.md and README.md from their "
                                "templates.")
    p.add_argument("--check", action="store_true", help="exit 1 if a document differs from what the JSON gives")
    args = p.parse_args(argv)
    results = load_results()
    new = {doc: reflow(render(template.read_text(), results, template.name)) for template, doc in DOCS.items()}
    stale = [doc for doc, text in new.items() if not doc.exists() or doc.read_text() != text]
    if args.check and stale:
        print(f"out of date: {', '.join(d.name for d in stale)}; run `python problem2/report.py`")
        return 1
    for doc in stale:
        write_text(doc, new[doc])
    print(("checked" if args.check else "written") + ": " + ", ".join(d.name for d in DOCS.values()))
    return 0


if __name__ == "__main__":
    run_cli(main)
