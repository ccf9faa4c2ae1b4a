"""The "why" study: `python study.py` (see --help). Reuses train.py's loop and evaluate.py's decoding/metrics.

Studies (each through the recipe-keyed run store of runs.py, results/runs/: a run is trained once and shared by every
study whose recipe is identical; --jobs N trains N side by side; --partial trains nothing and writes each study from
the runs stored):
  readouts    The controlled readout study (readouts.py): 9 readouts on one encoder x --seeds (fp32); its gap_fc,
              integral_64 and heatmap_64 rows are the three spec methods over seeds, the report's main table.
  hand_loss   The symmetric hand loss vs the strict one, three methods x --seeds (fp32); writes
              results/heatmap_symmetric_model.pth (seed 0).
  precision   bf16 minus fp32 training: the three methods' spec recipe x --seeds in each precision.

study_results.json holds one section per study, keyed by its name. Paired differences are {"diff", "ci95", "n"}
(common.paired_difference); per-seed rows are runs.run_row's; test split, from each run's eval.json.
"""
import argparse
import shutil
import sys
import time
from pathlib import Path

from codec import HAND_LOSSES
from common import (RESULTS_DIR, fmt_time, paired_difference, paired_metrics, positive, read_json, results_lock,
                    set_threads, write_json)
from dataset import data_fingerprint, load_split, resolve_keypoints_dir, shifted_test_dir
from evaluate import hand_gap
import readouts
import train
from runs import CHECKPOINT, ROW_METRICS, STUDY_PRECISION, collect, run_dir_of, run_row

METHODS = ("heatmap", "regression", "integral")
STUDIES = ("readouts", "hand_loss", "precision")


def collect_runs(recipes, kp_dir, results_dir, jobs=1, partial=False, log=print):
    """runs.collect in results_dir/runs, evaluated on the default shifted test set."""
    return collect(recipes, kp_dir, results_dir / "runs", train.train_recipe, shifted_test_dir(), jobs, partial, log)


def study_hand_loss(kp_dir, results_dir, seeds, jobs=1, partial=False, log=print, epochs=train.DEFAULTS["epochs"]):
    """The symmetric hand loss (train.py --hand-loss symmetric) on the faithful labels, for the three methods
    over seeds, next to the strict loss of the same recipe (run store, fp32). The seed-0 HeatmapNet is also
    written to results/heatmap_symmetric_model.pth (loads into HeatmapNet)."""
    data = data_fingerprint(kp_dir)
    recipes = {(m, loss, s): train.make_recipe(m, data, s, epochs, hand_loss=loss, precision=STUDY_PRECISION)
               for m in METHODS for loss in HAND_LOSSES for s in seeds}
    got = collect_runs(recipes, kp_dir, results_dir, jobs, partial, log)
    rows = {}
    for (m, loss, s), run in got.items():
        if run is not None:
            rows.setdefault(f"{m}_{loss}", []).append(run_row(s, *run))
    ckpt = run_dir_of(results_dir / "runs", recipes["heatmap", "symmetric", seeds[0]]) / CHECKPOINT
    if ckpt.exists():
        shutil.copyfile(ckpt, results_dir / "heatmap_symmetric_model.pth")
    return {"precision": STUDY_PRECISION, "seeds": list(seeds), "rows": rows,
            "hand_gap_px_ground_truth": float(hand_gap(load_split(kp_dir, "test", "regression").keypoints).mean()),
            "paired": {m: paired_metrics(rows.get(f"{m}_strict", []), rows.get(f"{m}_symmetric", []), ROW_METRICS)
                       for m in METHODS},  # symmetric minus strict loss; below, HeatmapNet minus IntegralNet
            "heatmap_minus_integral": {loss: paired_metrics(rows.get(f"integral_{loss}", []),
                                                            rows.get(f"heatmap_{loss}", []), ROW_METRICS)
                                       for loss in HAND_LOSSES}}


def study_precision(kp_dir, results_dir, seeds, jobs=1, partial=False, log=print, epochs=train.DEFAULTS["epochs"]):
    """bf16 minus fp32 training of the three methods' spec recipe over seeds, paired by (method, seed). Each row
    names the machine that trained it: a machine or thread-count effect is not separated from precision."""
    data = data_fingerprint(kp_dir)
    recipes = {(m, p, s): train.make_recipe(m, data, s, epochs, precision=p)
               for m in METHODS for p in ("fp32", "bf16") for s in seeds}
    got = collect_runs(recipes, kp_dir, results_dir, jobs, partial, log)
    pairs = [{p: {"method": m, **run_row(s, *got[m, p, s]), "machine": got[m, p, s][0]["machine"]}
              for p in ("fp32", "bf16")} for m in METHODS for s in seeds
             if got[m, "fp32", s] and got[m, "bf16", s]]
    return {"seeds": list(seeds), "pairs": pairs, "paired": {"n": len(pairs), **{
        k: paired_difference([get(x["fp32"]) for x in pairs], [get(x["bf16"]) for x in pairs])
        for k, get in ROW_METRICS.items() if k in ("px", "px_sym", "pck_bbox")}}}


def main(argv=None):
    p = argparse.ArgumentParser(description="Why heatmaps beat regression, measured: the controlled readout study, "
                                "the symmetric hand loss, bf16 vs fp32.")
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
    run = dict(jobs=args.jobs, partial=args.partial)
    fns = {"readouts": lambda: readouts.study_readouts(kp_dir, results_dir, args.seeds, precision=args.precision,
                                                       **run),
           "hand_loss": lambda: study_hand_loss(kp_dir, results_dir, args.seeds, **run),
           "precision": lambda: study_precision(kp_dir, results_dir, args.seeds, **run)}
    with results_lock(results_dir, "study.py"):
        results = {k: v for k, v in read_json(json_path, "python problem2/study.py", default={}).items() if k in STUDIES}
        for study in args.studies:
            t0 = time.time()
            results[study] = fns[study]()
            write_json(json_path, results)
            print(f"[study] {study} written in {fmt_time(time.time() - t0)}")


if __name__ == "__main__":
    sys.exit(main())
