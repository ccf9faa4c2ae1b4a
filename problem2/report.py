"""report.md and README.md, filled from results/*.json: no number in them is typed by hand.

The prose lives in report_template.md and readme_template.md. Each {{name}} there is one table (table:NAME), one
named value (v:NAME) or one number of one study (KIND:arg:..., see KINDS), made here from the JSON the scripts
wrote. `python report.py` writes both documents; `--check` exits 1 when either differs from what the JSON gives
(the tests run it); a placeholder with no value stops the script, naming it. The statistics (paired differences)
come from the scripts that ran the studies; this file only formats them.
Intervals, everywhere: "-0.61 [-0.80, -0.41]" is a mean difference paired by seed with its 95 % t-interval, and a
trailing ° marks an interval that includes 0 (within seed noise).
"""
import argparse
import re
import sys
from pathlib import Path

import numpy as np

from baseline import ABLATION_METRICS, CATEGORIES, DEFAULT_VARIANT
from common import RESULTS_DIR, read_json
from evaluate import PCK_THRESHOLDS
from how_far import summary_numbers
from model import METHODS
from readouts import READOUTS, row_value

HERE = Path(__file__).resolve().parent
DOCS = {HERE / "report_template.md": HERE / "report.md", HERE / "readme_template.md": HERE.parent / "README.md"}
SLOT = re.compile(r"\{\{([^{}]+?)\}\}")
THR = [str(t) for t in PCK_THRESHOLDS]
NAMES = {m: METHODS[m]["name"] for m in ("heatmap", "regression", "integral")}
FILES = {"metrics": "metrics.json", "log": "training_log.json", "ablation": "ablation_seeds.json",
         "failures": "failure_cases.json", "study": "study_results.json", "timings": "timings.json",
         "benchmark": "benchmark.json", "how_far": "how_far_results.json",
         "best": "best/heatmap_model_test_metrics.json", "best_log": "best/training_log.json"}


def load_results(results_dir=RESULTS_DIR):
    d = Path(results_dir)
    out = {k: read_json(d / f) for k, f in FILES.items() if (d / f).exists()}
    out["stored_runs"] = len(list((d / "runs").glob("*/run.json")))
    return out


# ---- formatting; a missing value raises KeyError, which render() reports with the placeholder's name ----
def mean(vals):
    vals = list(vals)
    if not vals:
        raise KeyError("no stored runs")
    return float(np.mean(vals))


def num(x, metric=""):
    return f"{x:.3f}" if "pck" in metric else f"{x:.2f}"


def ci(d, metric=""):
    """'-0.61 [-0.80, -0.41]'; a trailing ° when the interval includes 0; '(1 seed)' when there is none."""
    f = (lambda x: f"{x:+.3f}") if "pck" in metric else (lambda x: f"{x:+.2f}")
    if d["diff"] is None:
        raise KeyError("no seeds paired")
    if d["ci95"] is None:
        return f"{f(d['diff'])} (1 seed)"
    lo, hi = d["ci95"]
    return f"{f(d['diff'])} [{f(lo)}, {f(hi)}]" + ("°" if lo <= 0 <= hi else "")


def mean_sd(vals, metric=""):
    vals = list(vals)
    if len(vals) == 1:
        return num(vals[0], metric) + " (1 seed)"
    return f"{num(mean(vals), metric)} ± {num(np.std(vals, ddof=1), metric)}"


def md(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def machine_label(m):
    """'AMD EPYC (native bf16), 2 cores, cpu' from a run's or a timing's machine record."""
    bf16 = {True: " (native bf16)", False: " (no native bf16)"}.get(m.get("native_bf16"), "")
    return ", ".join(str(x) for x in (m.get("gpu") or m.get("cpu", "?") + bf16, f"{m.get('cores')} cores",
                                      m.get("device")) if x)


def pck05(row):
    """A per-seed row's value of a 'pck...' metric is a dict over thresholds; the report quotes PCK@0.05."""
    return {k: (v["0.05"] if k.startswith("pck") else v) for k, v in row.items()}


# ---- one number of one study: {{KIND:arg:...}} ----
def ro_rows(r, name):
    return r["study"]["readouts"]["readouts"][name]["per_seed"]


def ro(r, name, metric="px"):
    """A readout's mean over seeds (readouts.py); pck_bbox_sym is PCK@0.05 with symmetric hands."""
    return num(mean(pck05(x)[metric] if "pck" in metric else row_value(x, metric) for x in ro_rows(r, name)), metric)


def step(r, a, b, metric="px"):
    """Readout b minus readout a, paired by seed (readouts.py stored it)."""
    return ci(next(s for s in r["study"]["readouts"]["steps"] if (s["from"], s["to"]) == (a, b))[metric], metric)


def share(r, a, b):
    """Readout step a -> b as a share of the whole spec gap gap_fc -> heatmap_64 (a ratio of means)."""
    m = {n: mean(x["px"] for x in ro_rows(r, n)) for n in (a, b, "gap_fc", "heatmap_64")}
    return f"{(m[b] - m[a]) / (m['heatmap_64'] - m['gap_fc']):.0%}"


def hl(r, row, metric):
    """Mean over seeds of a hand-loss row (e.g. heatmap_symmetric; study.py)."""
    return num(mean(pck05(x)[metric] for x in r["study"]["hand_loss"]["rows"][row]), metric)


def hf_row(h, name):
    """A how_far.py row: 'best' / 'best_regression' are the recipes best on val; '%' stands for ': '."""
    return {"best": f"schedule: {h['best_schedule']}",
            "best_regression": f"long: {h['best_loss']} @ {h['best_schedule']}"}.get(name, name.replace("%", ": "))


def hf(r, row, metric):
    return num(r["how_far"]["means"][hf_row(r["how_far"], row)][metric], metric)


def hfstep(r, a, b, metric="px_sym"):
    h = r["how_far"]
    return ci(next(s for s in h["steps"] if (s["from"], s["to"]) == (hf_row(h, a), hf_row(h, b)))[metric], metric)


def j(r, path):
    """Any value of the results by its path, e.g. failures.counts.both_fail (floats formatted by num)."""
    for key in path.split("."):
        r = r[key]
    if isinstance(r, (dict, list)):
        raise KeyError(f"{path} is not one value")
    return num(r) if isinstance(r, float) else str(r)


KINDS = {"j": j, "ro": ro, "step": step, "share": share, "hl": hl, "hf": hf, "hfstep": hfstep,
         "abl": lambda r, v, k: ci(r["ablation"]["variants"][v]["paired_to_default"][k], k),  # variant - default
         "shift": lambda r, name: ci(r["study"]["readouts"]["shift"][name]),           # shifted - in-range test px
         "hlx": lambda r, loss, k: ci(r["study"]["hand_loss"]["heatmap_minus_integral"][loss][k], k),
         "hlpair": lambda r, m, k: ci(r["study"]["hand_loss"]["paired"][m][k], k),       # symmetric - strict loss
         "seedpair": lambda r, pair, k: ci(r["study"]["seeds"]["paired_over_seeds"][pair][k], k),
         "budget": lambda r, m, k: ci(r["study"]["budget"]["long_paired"][m][k], k),     # long - spec epochs
         "datasteps": lambda r, m, n: ci(r["study"]["budget"]["data_steps"]["paired_to_full"][m][n]["px"]),
         "prec": lambda r, k: ci(r["study"]["precision"]["paired"][k], k)}               # bf16 - fp32


# ---- tables ----
def table_assignment(r):
    """PCK at the four thresholds, bbox and torso, and mean px: mean ± std over seeds, strict / symmetric hands."""
    s = r["study"]["seeds"]
    cell = lambda m, k: " / ".join(f"{num(s['mean'][m][k + x], k)} ± {num(s['std'][m][k + x], k)}"  # noqa: E731
                                   for x in ("", "_symmetric"))
    return md([f"method ({len(s['seeds'])} seeds)", "normalised by"] + [f"PCK@{t}" for t in THR] + ["mean px"],
              [[NAMES[m], norm] + [cell(m, k) for k in [f"pck_{norm}_{t}" for t in THR] + ["mean_px_error"]]
               for m in s["mean"] for norm in ("bbox", "torso")])


def table_readouts(r):
    rs = r["study"]["readouts"]
    cols = ("px", "px_sym", "px_head_feet", "px_hands_sym", "px_shifted", "spread_ratio", "pck_bbox_sym")
    rows = [[f"`{n}`", READOUTS[n][1], f"{x['params'] / 1e6:.2f}M"] + [mean_sd((pck05(y)[k] for y in x["per_seed"]), k)
                                                                        for k in cols] for n, x in rs["readouts"].items()]
    rows += [[f"*{n.replace('_', ' ')}*", "reference, no training", "0"] + [num(pck05(x)[k], k) for k in cols]
             for n, x in rs["references"].items()]
    return md(["readout", "what it is", "params", "px", "px sym", "head+feet px", "hands px sym", "shifted px",
               "spread ratio", "PCK@0.05 sym"], rows)


def table_readout_steps(r):
    return md(["step (to − from)", "what changes", "share of the whole gap", "px", "head+feet px", "hands px sym",
               "shifted px"], [[f"`{s['from']}` → `{s['to']}`", s["question"], share(r, s["from"], s["to"])] +
                               [ci(s[k]) for k in ("px", "px_head_feet", "px_hands_sym", "px_shifted")]
                               for s in r["study"]["readouts"]["steps"] if (s["from"], s["to"]) != ("gap_fc", "heatmap_64")])


def table_hand_loss(r):
    h = r["study"]["hand_loss"]
    keys = ("px", "px_sym", "px_hands_sym", "hand_gap_px", "pck_bbox", "pck_bbox_sym")
    return md(["method", "hand loss", "px", "px sym", "hands px sym", f"hand gap px (true {h['hand_gap_px_ground_truth']:.1f})",
               "PCK@0.05", "PCK@0.05 sym"], [[NAMES[m], loss] + [mean_sd((pck05(x)[k] for x in h["rows"][f"{m}_{loss}"]), k)
                                                                  for k in keys] for m in NAMES for loss in ("strict", "symmetric")])


def table_hand_loss_pairs(r):
    keys = ("px", "px_sym", "px_hands_sym", "hand_gap_px", "pck_bbox", "pck_bbox_sym", "best_epoch")
    return md(["symmetric − strict loss", "px", "px sym", "hands px sym", "hand gap px", "PCK@0.05", "PCK@0.05 sym",
               "best val-loss epoch"], [[NAMES[m]] + [ci(p[k], k) for k in keys]
                                        for m, p in r["study"]["hand_loss"]["paired"].items()])


def table_how_far(r):
    h = r["how_far"]
    label = lambda k: k.replace("schedule: ", "HeatmapNet, ").replace("ladder: ", "RegressionNet, 30 epochs: ").replace(  # noqa: E731
        "long: ", "RegressionNet: ")
    return md([f"recipe (epochs, lr schedule; {h['precision']})", "trained on", "px", "px sym", "hands px sym",
               "PCK@0.05 sym"], [[label(k), ", ".join(sorted({x["device"] for x in v}))] +
                                 [mean_sd((x[m] for x in v), m) for m in ("px", "px_sym", "px_hands_sym", "pck05_sym")]
                                 for k, v in h["rows"].items()])


def table_ablation(r):
    a = r["ablation"]
    rows = []
    for n in dict.fromkeys(n for names in a["studies"].values() for n in names):
        v, cfg = a["variants"][n]["runs"], a["variants"][n]["config"]
        pairs = ["(default)"] * 2 if n == DEFAULT_VARIANT else [ci(a["variants"][n]["paired_to_default"][k], k)
                                                                for k in ("px_quarter", "pck05")]
        rows.append([f"`{n}`", cfg["hm_size"], f"{cfg['sigma_img'] / 2:g}", "on" if cfg["skip"] else "off"] +
                    [mean_sd((get(x["test"]) for x in v), k) for k, get in ABLATION_METRICS.items()] + pairs)
    return md(["variant", "heatmap size", "σ", "skips", "px argmax", "px quarter", "px DARK", "px sym", "PCK@0.05",
               "px quarter − default", "PCK@0.05 − default"], rows)


def table_failures(r):
    f = r["failures"]
    return md(["keypoints where", "count", "which keypoints", "true hand gap px of their images"],
              [[CATEGORIES[c], n, ", ".join(f"{k} {v}" for k, v in f["per_keypoint"][c].items() if v),
                "{these:.1f} (all {all:.1f})".format(**f["characterisation"][c]["hand_gap_px"])]
               for c, n in f["counts"].items()])


def table_pck(r, norm):
    """The main command's seed-0 run, every decoder: PCK strict / symmetric."""
    m = r["metrics"]
    return md(["method", "decoder"] + [f"PCK@{t}" for t in THR] + ["mean px"],
              [[NAMES[k], dec] + [f"{e['strict']['pck'][norm][t]:.3f} / {e['symmetric']['pck'][norm][t]:.3f}" for t in THR]
               + [f"{e['strict']['mean_px_error']:.2f} / {e['symmetric']['mean_px_error']:.2f}"]
               for k in NAMES if k in m for dec, e in m[k]["decoders"].items()])


TABLES = {"assignment": table_assignment, "readouts": table_readouts,
          "readout_steps": table_readout_steps, "hand_loss": table_hand_loss, "hand_loss_pairs": table_hand_loss_pairs,
          "how_far": table_how_far, "ablation": table_ablation, "failures": table_failures,
          "pck_bbox": lambda r: table_pck(r, "bbox"), "pck_torso": lambda r: table_pck(r, "torso")}


# ---- named values ----
def main_time(r):
    """The main command's time by the scripts' own timers, and its machine (each step's, when they differ)."""
    t = {k: r["timings"][k] for k in ("train.py", "evaluate.py", "baseline.py") if k in r["timings"]}
    labels = {machine_label(v["machine"]) for v in t.values()}
    total = f"{sum(v['seconds'] for v in t.values()) / 60:.1f} minutes"
    if len(labels) == 1:
        return f"{total} ({labels.pop()}; `train.py` in {t['train.py']['machine']['precision']})"
    return total + " (" + "; ".join(f"`{k}` on {machine_label(v['machine'])}" for k, v in t.items()) + ")"


def fp32_train_estimate(r):
    """train.py's training time in fp32, derived (not timed): the images it trains on over benchmark.py's fp32
    fast-path images/s."""
    speed = {x["model"]: x["images_per_s"] for x in r["benchmark"]["rows"] if x["path"] == "fast"}
    seconds = sum(r["log"][m]["recipe"]["epochs"] * r["log"][m]["recipe"]["num_train"] / speed[NAMES[m]]
                  for m in ("heatmap", "regression") if m in r["log"])
    return f"about {seconds / 60:.0f} minutes (derived from `benchmark.py` on {machine_label(r['benchmark']['config']['machine'])})"


def goal(r):
    """'met', or 'not met (...)' naming each missed criterion of how_far.py's goal with its test mean."""
    h = r["how_far"]
    means = h["means"][f"schedule: {h['best_schedule']}"]
    missed = [f"{label} {num(means[k], k)} {'<' if 'pck' in k else '>'} {h['goal'][k]}"
              for k, label in (("px_hands_sym", "hands"), ("px_sym", "all keypoints"), ("pck05_sym", "PCK@0.05"))
              if (means[k] < h["goal"][k] if "pck" in k else means[k] > h["goal"][k])]
    return "met" if not missed else "not met (" + ", ".join(missed) + ")"


def seed_mean(r, method):
    return r["study"]["seeds"]["mean"][method]["mean_px_error"]


VALUES = {
    "n_seeds": lambda r: str(len(r["study"]["seeds"]["seeds"])),
    "splits": lambda r: " / ".join(f"{n} {k}" for k, n in r["metrics"]["provenance"]["data"]["split_sizes"].items()),
    "ratio": lambda r: f"{seed_mean(r, 'regression') / seed_mean(r, 'heatmap'):.1f}",
    "main_time": main_time, "fp32_train_estimate": fp32_train_estimate, "goal": goal,
    "hf_ratio": lambda r: "{:.0f}".format(np.divide(*[r["how_far"]["means"][hf_row(r["how_far"], n)]["px_sym"]
                                                      for n in ("best_regression", "best")])),
    "best_machine": lambda r: machine_label(r["best_log"]["config"]["machine"]),
    **{f"best_{k}": (lambda r, k=k: num(summary_numbers(r["best"]["heatmap"]["decoders"][r["how_far"]["decoder"]])[k], k))
       for k in ("px_sym", "px_hands_sym", "pck05_sym")},
    "ablation_seeds": lambda r: ", ".join(map(str, r["ablation"]["seeds"])),
    "n_readouts": lambda r: str(len(r["study"]["readouts"]["readouts"])),
    "goal_text": lambda r: ", ".join(f"{label} {'≥' if 'pck' in k else '≤'} {r['how_far']['goal'][k]}" for k, label in (
        ("px_hands_sym", "hands px sym"), ("px_sym", "all keypoints px sym"), ("pck05_sym", "PCK@0.05 sym"))),
}


def value(name, r):
    kind, *args = name.split(":")
    return TABLES[args[0]](r) if kind == "table" else VALUES[args[0]](r) if kind == "v" else KINDS[kind](r, *args)


def render(text, results, where="template"):
    """The template with every {{placeholder}} filled; a placeholder without a value stops, naming it."""
    def fill(m):
        try:
            return value(m.group(1), results)
        except (KeyError, StopIteration) as e:  # a value the JSON lacks; any other error is a bug: traceback
            raise SystemExit(f"{where}: no value for {{{{{m.group(1)}}}}} ({type(e).__name__}: {e}); run the "
                             "script that writes it, or fix the name") from None
    return SLOT.sub(fill, text)


def main(argv=None):
    p = argparse.ArgumentParser(description="Write (or --check) report.md and README.md from their templates.")
    p.add_argument("--check", action="store_true", help="exit 1 if a document differs from what the JSON gives")
    args = p.parse_args(argv)
    results = load_results()
    stale = []
    for template, doc in DOCS.items():
        new = render(template.read_text(), results, template.name)
        if not doc.exists() or doc.read_text() != new:
            stale.append(doc.name)
            if not args.check:
                doc.write_text(new)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run `python problem2/report.py`")
        return 1
    print(("checked" if args.check else "written") + ": " + ", ".join(d.name for d in DOCS.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
