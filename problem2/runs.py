"""The run store: each run is trained once, evaluated once, and reused only for the identical recipe
(train.make_recipe: everything that changes a trained model's numbers, the data fingerprint included).

<runs_root>/<method>-<recipe key>/ holds run.json {"recipe", "history" (train.fit's), "machine", "code_version"} and
eval.json {"eval_key", "epoch", "decoder" (the default one), "val" | "test": {decoder: evaluate.summarize()},
"shifted": summarize() of the default decoder}, both committed, so studies need no checkpoint (runs evaluated by an
older layout were reshaped: null where it computed nothing, see "migrated"); for a run a study probes
(probe_of), probe.json {"eval_key", "placement": evaluate.hand_placement(), "readouts": {read-out: summarize()}} on
the test split, committed too; and, gitignored, model.pth (best by val loss), heatmap_snapshots.pt and, while
training, resume.pth (asked again, a killed run continues).
run_many() trains independent recipes in `jobs` worker processes with the CPU threads split between them; a run's
numbers depend on its thread count, so `jobs` runs with T threads each equal sequential runs with `--threads T`.
"""
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from common import (UsageError, code_version, fmt_time, job_results, jobs_used, machine_info, pick_device, read_json,
                    recipe_key, results_lock, write_json)
from dataset import annotations_sha256, load_split, shifted_test_dir
from evaluate import default_decoder, hand_placement, predict_all_decoders, predict_map_readouts, summarize
from model import load_checkpoint, target_of

EVAL_VERSION = 2
STUDY_PRECISION = "fp32"  # the studies' runs: every CPU has fp32, so stored runs are reusable across machines
CHECKPOINT = "model.pth"  # the epoch with the lowest val loss (or the last, with keep=last)
PROBE = "probe.json"  # what a study measures beyond eval.json with the checkpoint (probe_of)
# the numbers of a run_row that studies pair by seed, by name (PCK at 0.05, bbox; pck_bbox_15/_20 at 0.15/0.2)
ROW_METRICS = {**{k: (lambda row, k=k: row[k]) for k in ("px", "px_sym", "px_head_feet", "px_hands_sym", "px_shifted",
                                                         "hand_gap_px", "best_epoch")},
               **{k: (lambda row, k=k: row[k]["0.05"]) for k in ("pck_bbox", "pck_bbox_sym", "pck_bbox_shifted")},
               **{k: (lambda row, t=t: row["pck_bbox"][t])
                  for k, t in (("pck_bbox_15", "0.15"), ("pck_bbox_20", "0.2"))}}


def run_name(recipe):
    """The run's folder name: <method>-<recipe key>."""
    return f"{recipe['method']}-{recipe_key(recipe)}"


def run_dir_of(runs_root, recipe):
    return Path(runs_root) / run_name(recipe)


def eval_key(kp_dir, shifted_dir):
    return {"version": EVAL_VERSION, "test": annotations_sha256(kp_dir),
            "shifted": annotations_sha256(shifted_dir) if shifted_dir else None}


def evaluate_run(rdir, recipe, kp_dir, shifted_dir=None, device="cpu"):
    """eval.json of a run's checkpoint: summarize() per decoder on val and test, and of the default decoder on the
    shifted test set when given."""
    model, ckpt = load_checkpoint(Path(rdir) / CHECKPOINT, method=recipe["method"])
    decoder = default_decoder(target_of(model))
    splits = {"val": (kp_dir, "val"), "test": (kp_dir, "test"), "shifted": (shifted_dir, "test")}
    ev = {"eval_key": eval_key(kp_dir, shifted_dir), "epoch": ckpt["epoch"], "decoder": decoder}
    for name, (folder, split) in splits.items():
        if folder is not None:
            ds = load_split(folder, split, "regression", canonical_hands=recipe["canonical_hands"])
            scores = {d: summarize(kp, ds.keypoints) for d, kp in predict_all_decoders(model, ds, device).items()}
            ev[name] = scores[decoder] if name == "shifted" else scores
    return ev


@dataclass
class Store:
    """One script's use of the run store: where runs live (<out_dir>/runs), the data they train and are scored on, how
    a missing run is trained (train.train_recipe), and how: device, `jobs` side by side, force (retrain stored runs),
    partial (collect records what is stored and trains nothing), log."""
    out_dir: Path
    kp_dir: Path
    train_fn: Callable
    shifted_dir: Path | None = None  # the translation test set every run is also scored on (None: not scored)
    device: str = "auto"
    jobs: int = 1
    force: bool = False
    partial: bool = False
    log: Callable | None = print

    @property
    def root(self):
        return Path(self.out_dir) / "runs"


def ensure_run(recipe, store, need_checkpoints=False):
    """(run_dir, run.json, eval.json) of `recipe`: reused when stored with the identical recipe and eval key (and, with
    need_checkpoints, its checkpoints on disk), else (or with store.force) trained with store.train_fn and/or evaluated
    now. Holds the run folder's lock, so one run is never trained twice at once."""
    rdir, key, log = run_dir_of(store.root, recipe), eval_key(store.kp_dir, store.shifted_dir), store.log
    with results_lock(rdir, "runs.ensure_run"):
        info, ev = read_stored(rdir)
        files = [CHECKPOINT] + ["heatmap_snapshots.pt"] * (recipe["target"]["type"] == "heatmap")  # train.py copies
        have_ckpts = all((rdir / f).exists() for f in files)
        stored = info.get("recipe") == recipe
        if stored and not store.force and ev.get("eval_key") == key and (have_ckpts or not need_checkpoints):
            log(f"[runs] {rdir.name}: reusing (same recipe, already evaluated)")
            return rdir, info, ev
        if store.force or not (stored and have_ckpts):
            why = ("--force" if stored and store.force else "no stored run with this recipe" if not stored else
                   f"its checkpoints (gitignored) are not on this machine and "
                   f"{'they are needed' if need_checkpoints else 'its evaluation is missing or outdated'}. Its stored "
                   f"numbers may change (CPU kernels and thread counts differ between machines): regenerate every "
                   f"study that uses it (`python study.py --partial`)")
            log(f"[runs] {rdir.name}: training ({why})")
            # until trained and evaluated, a stored file would describe another training (resume.pth lets a killed
            # run continue)
            for f in ("run.json", "eval.json", PROBE):
                (rdir / f).unlink(missing_ok=True)
            version = code_version()  # of the code this process runs, read before training starts
            history = store.train_fn(recipe, store.kp_dir, rdir, store.device,
                                     lambda line: log(f"  {rdir.name} {line}"))
            info = {"recipe": recipe, "history": history, "machine": machine_info(store.device, recipe["precision"]),
                    "code_version": version}
            write_json(rdir / "run.json", info)
        ev = evaluate_run(rdir, recipe, store.kp_dir, store.shifted_dir, store.device)
        write_json(rdir / "eval.json", ev)
        return rdir, info, ev


def probe_of(rdir, recipe, kp_dir, device="cpu"):
    """A map network's checkpoint on the test split beyond eval.json: where its predicted hands land
    (evaluate.hand_placement, default read-out) and summarize() under every read-out of its maps
    (evaluate.predict_map_readouts). Stored in the run's probe.json the first time, while the checkpoint is on disk,
    and read from there afterwards; None when neither is there."""
    rdir, key = Path(rdir), {**eval_key(kp_dir, None), "probe_version": 2}
    stored = read_json(rdir / PROBE, default={})
    if stored.get("eval_key") == key:
        return stored
    if not (rdir / CHECKPOINT).exists():
        return None
    model, _ = load_checkpoint(rdir / CHECKPOINT, method=recipe["method"])
    ds = load_split(kp_dir, "test", "regression", canonical_hands=recipe["canonical_hands"])
    preds = predict_map_readouts(model, ds, device)
    default = default_decoder(target_of(model)) if target_of(model) == "heatmap" else "mean"  # IntegralNet's own
    probe = {"eval_key": key, "placement": hand_placement(preds[default], ds.keypoints),
             "readouts": {name: summarize(kp, ds.keypoints) for name, kp in preds.items()}}
    write_json(rdir / PROBE, probe)
    return probe


def read_stored(rdir):
    """(run.json, eval.json) of a run folder, {} for a missing one."""
    return tuple(read_json(Path(rdir) / f, default={}) for f in ("run.json", "eval.json"))


def _worker(task, live_log=None):
    """One ensure_run; its log lines are printed live (sequential) or collected (worker process)."""
    recipe, store, need_checkpoints = task
    lines = []
    log = lines.append if live_log is None else (lambda s: (lines.append(s), live_log(s)))
    try:
        _, info, ev = ensure_run(recipe, replace(store, log=log), need_checkpoints)
    except UsageError as e:
        return recipe, None, None, str(e), lines
    return recipe, info, ev, None, lines


def run_many(recipes, store, need_checkpoints=False):
    """ensure_run for every recipe (duplicates by key run once), in store.jobs processes with the CPU threads
    split between them; results equal a sequential run with the same threads per run (each is seeded by its recipe).
    Returns {recipe key: (run.json, eval.json)} and prints progress with an ETA for the whole batch."""
    log = store.log
    store = replace(store, device=pick_device(store.device), log=None)  # what goes to a worker: picklable
    code_version()  # cached at start (see common.code_version)
    unique = {recipe_key(r): r for r in recipes}
    tasks = [(r, store, need_checkpoints) for r in unique.values()]
    out, t0, trained = {}, time.time(), []
    jobs = jobs_used(store.jobs, len(tasks))  # as job_results runs them; in this process lines go through `log` live
    fn = functools.partial(_worker, live_log=log if jobs == 1 else functools.partial(print, flush=True))
    with job_results(fn, tasks, jobs) as results:
        for i, (recipe, info, ev, error, lines) in enumerate(results, 1):
            if info is None:
                raise UsageError(error)
            out[recipe_key(recipe)] = (info, ev)
            if any(": training (" in line for line in lines):
                trained.append(info["history"]["train_seconds"])
            left = len(tasks) - i
            eta = f", ETA {fmt_time(np.mean(trained) * left / max(1, min(jobs, left)))}" if trained and left else ""
            log(f"[runs] {i}/{len(tasks)} done ({recipe['method']}, seed {recipe['seed']}); elapsed "
                f"{fmt_time(time.time() - t0)}{eta}")
    return out


def collect(recipes, store):
    """{label: (run.json, eval.json)} for {label: recipe}, trained/reused through run_many (with store.partial, only
    what is stored), every run scored on the translation test set too (store.shifted_dir, default
    dataset.shifted_test_dir(), shared by every study); None for a recipe with no run stored and evaluated with the
    current eval key."""
    store = replace(store, shifted_dir=store.shifted_dir or shifted_test_dir())
    if store.partial:
        store.log("[runs] --partial: recording the stored runs, training none")
    else:
        run_many(list(recipes.values()), store)
    key, out = eval_key(store.kp_dir, store.shifted_dir), {}
    for label, recipe in recipes.items():
        info, ev = read_stored(run_dir_of(store.root, recipe))
        out[label] = (info, ev) if info.get("recipe") == recipe and ev.get("eval_key") == key else None
    return out


def run_row(seed, info, ev, decoder=None):
    """One stored run's numbers, the one row shape every store study records: evaluate.summarize() of its checkpoint
    on the test split with `decoder` (default: the run's default), the shifted test set's px and PCK (default
    decoder), the checkpoint's epoch (best_epoch: the epoch whose weights were kept), the training time."""
    return {"seed": seed, "run": run_name(info["recipe"]), **ev["test"][decoder or ev["decoder"]],
            "px_shifted": ev["shifted"]["px"], "pck_bbox_shifted": ev["shifted"]["pck_bbox"],
            "best_epoch": info["history"].get("saved_epoch", info["history"]["best_epoch"]),
            "train_seconds": info["history"]["train_seconds"]}
