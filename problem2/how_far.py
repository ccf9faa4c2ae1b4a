"""How far each method goes: `python how_far.py` (see --help). HeatmapNet's best honest number on the course's
own labels, and regression's ladder from the spec head to RLE, one factor per step, over seeds, as recipe-keyed runs
of runs.py in --precision (each row names the device that trained it).

Schedules (HeatmapNet, symmetric hand loss): SCHEDULES; the best schedule and its decoder have the lowest mean val px
(sym). Ladder (30 epochs): LADDER, one change per row; SPATIAL: the 8x8 soft-argmax under the ladder's plain loss.
Then the plain-MSE step and the best loss (on val) at the best schedule and at LONG.
how_far_results.json: {"precision", "seeds", "decoder", "val_px_sym": {schedule: [val px, decoder]},
"best_schedule", "best_loss", "long_schedules", "means", "rows": {"<kind>: <name>": [runs.run_row + "device",
"epochs", "val_px_sym"]}, "steps": [{"from", "to", "seeds", metric: {"diff", "ci95", "n"}}]}; kind is schedule,
ladder, spatial or long ("<step> @ <schedule>").
"""
from pathlib import Path

import numpy as np

from codec import DECODERS
from common import (ArgumentParser, RESULTS_DIR, UsageError, paired_metrics, plt, positive, results_lock, run_cli,
                    save_figure, set_threads, write_json)
from dataset import data_fingerprint, resolve_keypoints_dir
from runs import ROW_METRICS, Store, collect, run_name, run_row
from train import make_recipe, train_recipe

SCHEDULES = {"30 constant": (30, "constant"), "100 constant": (100, "constant"), "100 cosine": (100, "cosine"),
             "300 constant": (300, "constant"), "300 cosine": (300, "cosine")}
LONG = ("300 constant", "300 cosine")  # the regression steps are trained at these and the best schedule
SCHEDULE_STEPS = [("30 constant", "100 constant"), ("100 constant", "100 cosine"), ("100 constant", "300 constant"),
                  ("100 cosine", "300 cosine"), ("300 constant", "300 cosine")]  # one factor each: length or decay
LADDER = {  # name: (method, loss, hand loss)
    "spec head": ("regression", "mse", "strict"),
    "no dropout/sigmoid": ("gap_fc_plain", "mse", "strict"),
    "symmetric hand loss": ("gap_fc_plain", "mse", "symmetric"),
    "L1": ("gap_fc_plain", "l1", "symmetric"),
    "Laplace NLL": ("gap_fc_nll", "laplace", "symmetric"),
    "RLE": ("gap_fc_nll", "rle", "symmetric"),
}
PLAIN_MSE, LOSS_STEPS = "symmetric hand loss", ("symmetric hand loss", "L1", "Laplace NLL", "RLE")
SPATIAL = {"soft-argmax 8x8, MSE": ("softargmax_8", "mse", "symmetric")}  # the readout study's, under the ladder's loss
HEATMAP = {"HeatmapNet": ("heatmap", "mse", "symmetric")}
TICK_LABELS = {"ladder: spec head": "RegressionNet as specified", "spatial: soft-argmax 8x8, MSE": "soft-argmax 8x8, MSE"}
METRICS = {k: ROW_METRICS[k] for k in ("px", "px_sym", "px_hands_sym", "pck_bbox_sym")}


def recipe(data, seed, step, precision, schedule="30 constant"):
    """The recipe of a HEATMAP, LADDER or SPATIAL row trained with `schedule`."""
    method, loss, hand_loss = {**HEATMAP, **LADDER, **SPATIAL}[step]
    epochs, lr_schedule = SCHEDULES[schedule]
    return make_recipe(method, data, seed=seed, epochs=epochs, hand_loss=hand_loss, precision=precision, loss=loss,
                       schedule=lr_schedule)


def val_px_sym(ev, decoder):
    """A run's val px (symmetric) with `decoder`; None when its eval.json has no val numbers."""
    return (ev["val"] or {}).get(decoder, {}).get("px_sym")


def best_decoder(runs):
    """(mean val px over seeds, decoder) of the decoder with the lowest; runs without val numbers are named."""
    decoders = DECODERS if runs[0][0]["recipe"]["target"]["type"] == "heatmap" else ("direct",)
    vals = {d: [val_px_sym(ev, d) for _, ev in runs] for d in decoders}
    scored = [(float(np.mean(v)), d) for d, v in vals.items() if None not in v]
    if not scored:
        names = ", ".join(run_name(info["recipe"]) for info, ev in runs if not ev["val"])
        raise UsageError(f"no val numbers in the eval.json of {names} (evaluated by an older layout): delete those "
                         f"eval.json files and rerun to evaluate them again (a run whose checkpoint is gone retrains)")
    return min(scored)


def row(seed, info, ev, decoder):
    machine = info["machine"]
    return {**run_row(seed, info, ev, decoder), "device": machine.get("gpu", machine["cpu"]),
            "epochs": info["recipe"]["epochs"], "val_px_sym": val_px_sym(ev, decoder)}


def seed_means(records):
    """{metric: mean over the records} for every METRICS name (runs' rows or val records alike)."""
    return {k: float(np.mean([get(r) for r in records])) for k, get in METRICS.items()}


def how_far(store, seeds=(0, 1, 2), precision="bf16"):
    """Train (or reuse) every run of the study through the run store (runs.Store) in two rounds (the long regression
    runs take the loss and schedule chosen on val in the first) and return the results dict (module docstring); None
    when a round is missing runs."""
    data, got = data_fingerprint(store.kp_dir), {}

    def train(recipes):
        got.update(collect(recipes, store))
        return None not in got.values()

    def runs_of(kind, name):
        return [got[kind, name, s] for s in seeds]

    first = {("schedule", n, s): recipe(data, s, "HeatmapNet", precision, n) for n in SCHEDULES for s in seeds}
    first.update({(kind, n, s): recipe(data, s, n, precision) for kind, steps in (("ladder", LADDER),
                                                                                 ("spatial", SPATIAL))
                  for n in steps for s in seeds})
    if not train(first):
        return None
    val_sched = {n: best_decoder(runs_of("schedule", n)) for n in SCHEDULES}
    best_schedule = min(val_sched, key=lambda n: val_sched[n][0])
    decoder = val_sched[best_schedule][1]
    best_loss = min(LOSS_STEPS, key=lambda n: best_decoder(runs_of("ladder", n))[0])
    long_steps = list(dict.fromkeys([PLAIN_MSE, best_loss]))
    long_schedules = tuple(dict.fromkeys([best_schedule, *LONG]))  # best first
    if not train({("long", f"{n} @ {sched}", s): recipe(data, s, n, precision, sched)
                  for sched in long_schedules for n in long_steps for s in seeds}):
        return None
    rows = {f"{kind}: {name}": [row(s, *got[kind, name, s], decoder if kind == "schedule" else "direct") for s in seeds]
            for kind, name in dict.fromkeys((kind, name) for kind, name, _ in got)}  # in the order trained
    pairs = [(f"schedule: {a}", f"schedule: {b}") for a, b in SCHEDULE_STEPS]
    pairs += [(f"ladder: {a}", f"ladder: {b}") for a, b in zip(LADDER, list(LADDER)[1:])]
    pairs += [(f"ladder: {PLAIN_MSE}", f"ladder: {n}") for n in LOSS_STEPS[2:]]  # every loss against MSE
    pairs += [(f"ladder: {PLAIN_MSE}", f"spatial: {n}") for n in SPATIAL]  # the readout, under the same loss
    for sched in long_schedules:
        pairs += [(f"ladder: {n}", f"long: {n} @ {sched}") for n in long_steps]
        pairs += [(f"long: {a} @ {sched}", f"long: {b} @ {sched}") for a, b in zip(long_steps, long_steps[1:])]
    pairs += [(f"long: {n} @ {a}", f"long: {n} @ {b}") for n in long_steps for a, b in zip(long_schedules, long_schedules[1:])]
    pairs += [(f"long: {best_loss} @ {best_schedule}", f"schedule: {best_schedule}")]
    means = {k: seed_means(v) for k, v in rows.items()}
    res = {"precision": precision, "seeds": list(seeds), "decoder": decoder, "val_px_sym": val_sched,
           "best_schedule": best_schedule, "best_loss": best_loss, "long_schedules": list(long_schedules),
           "means": means, "rows": rows,
           "steps": [{"from": a, "to": b, **paired_metrics(rows[a], rows[b], METRICS)} for a, b in pairs]}
    plot_how_far(res, Path(store.out_dir) / "visualizations" / "how_far.png")
    return res


def plot_how_far(res, path):
    """Left: test px (symmetric) against training epochs, HeatmapNet's schedules and the regression losses trained
    longer (symmetric hand loss). Right: the regression ladder at 30 epochs. Lines = mean over seeds, dots = seeds."""
    fig, (ax, bx) = plt().subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1, 1.3]})
    rows = res["rows"]
    lines = [("HeatmapNet, constant lr", [k for k in rows if k.startswith("schedule") and "constant" in k], "C0", "o-"),
             ("HeatmapNet, cosine lr", ["schedule: 30 constant"] + [k for k in rows if k.startswith("schedule") and
                                                                     "cosine" in k], "C0", "s--")]
    for n, color in zip(dict.fromkeys([PLAIN_MSE, res["best_loss"]]), ("C3", "C1")):
        for sched in res["long_schedules"]:
            lines.append((f"regression, {'MSE' if n == PLAIN_MSE else n}, {sched.split()[1]} lr",
                          [f"ladder: {n}", f"long: {n} @ {sched}"], color, "s--" if "cosine" in sched else "o-"))
    for label, keys, color, style in lines:
        xs = [rows[k][0]["epochs"] for k in keys]
        ax.plot(xs, [res["means"][k]["px_sym"] for k in keys], style, color=color, label=label)
        for x, k in zip(xs, keys):
            ax.plot([x] * len(rows[k]), [r["px_sym"] for r in rows[k]], ".", color=color, alpha=0.4)
    ax.set(xscale="log", yscale="log", xlabel="training epochs (Adam 1e-3; cosine: decayed to 0 over the run)",
           ylabel="test mean error, hands in either order (px)", title="Error against training budget")
    ax.set_xticks([30, 100, 300], ["30", "100", "300"])
    ax.set_yticks([0.2, 0.3, 0.5, 1, 2, 5, 10], ["0.2", "0.3", "0.5", "1", "2", "5", "10"])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    keys = [f"ladder: {n}" for n in LADDER] + [f"spatial: {n}" for n in SPATIAL]
    for off, (key, color, label) in zip((-0.2, 0.2), (("px_sym", "C3", "all keypoints"),
                                                      ("px_hands_sym", "C1", "hands"))):
        bx.bar(np.arange(len(keys)) + off, [res["means"][k][key] for k in keys], 0.4, color=color, alpha=0.6,
               label=label)
        for i, k in enumerate(keys):
            bx.plot([i + off] * len(rows[k]), [r[key] for r in rows[k]], "k.", ms=4)
    bx.axvline(len(LADDER) - 0.5, color="0.5", lw=1)
    bx.set_xticks(range(len(keys)), [TICK_LABELS.get(k, k.split(": ", 1)[1]) for k in keys], rotation=25,
                  ha="right")
    bx.set(ylabel="test mean error, hands in either order (px)",
           title="Regression at 30 epochs: bars 2-3 each add one change to the bar before;\n"
                 "L1, Laplace NLL and RLE each replace MSE in bar 3;\nright of the line: soft-argmax on the 8x8 map")
    bx.grid(alpha=0.3, axis="y")
    bx.legend(fontsize=8)
    fig.suptitle(f"How far each method goes ({res['precision']}, seeds {', '.join(map(str, res['seeds']))}; "
                 f"HeatmapNet with the symmetric hand loss, decoding rule '{res['decoder']}' chosen on validation)")
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None):
    p = ArgumentParser(description="How far each method goes: HeatmapNet schedules and the regression "
                                "ladder (spec head -> ... -> RLE), over seeds, through the run store.")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"], help="every run of the study")
    p.add_argument("--jobs", type=positive(int, 1), default=1, help="runs trained side by side")
    p.add_argument("--threads", type=positive(int, 0), default=0, help="torch CPU threads (0: default)")
    p.add_argument("--partial", action="store_true", help="record the stored runs, train none")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    set_threads(args.threads)
    kp_dir = resolve_keypoints_dir(args.data_dir)
    with results_lock(args.out_dir, "how_far.py"):
        res = how_far(Store(args.out_dir, kp_dir, train_recipe, jobs=args.jobs, partial=args.partial), args.seeds,
                      args.precision)
        if res is None:
            print("[how_far] not every run is stored yet (--partial); nothing written")
            return 1
        write_json(args.out_dir / "how_far_results.json", res)
    for k, m in res["means"].items():
        print(f"{k:<34} px {m['px']:6.2f}  sym {m['px_sym']:6.2f}  hands sym {m['px_hands_sym']:6.2f}  "
              f"PCK@0.05 sym {m['pck_bbox_sym']:.3f}")
    print(f"best schedule {res['best_schedule']} (decoder {res['decoder']}), best loss {res['best_loss']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
