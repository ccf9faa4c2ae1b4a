"""Train the assignment's two networks with the spec recipe: `python train.py` (see --help).

HeatmapNet and RegressionNet (--methods adds any row of model.METHODS), same data, split and seed: MSE
(codec.keypoint_loss), Adam 1e-3, batch 32, 30 epochs, the checkpoint with the lowest val loss kept; one loop, `fit`.
Each method is a recipe-keyed run of the run store (runs.py): resumable, reused while its checkpoints are on disk
(--force retrains). When every method has finished, --out-dir gets <method>_model.pth (model.save_checkpoint: epoch,
val_loss, val_px_error in image px, provenance), the heatmap run's heatmap_snapshots.pt and, last, training_log.json
({"run_id", "config", "total_seconds", "<method>": {"recipe", "epochs": [{"epoch", "train_loss", "val_loss",
"val_px_error", "seconds"}], "best_epoch", ..., "machine"}}), so an interrupted run never replaces the last complete
one. The committed problem2/results/ takes only the committed recipe and data (--replace-results overrides).
"""
import argparse
import inspect
import math
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import torch

from codec import HAND_LOSSES, LOSSES, REFINE_DEFAULT, decode, keypoint_loss
from common import (RESULTS_DIR, UsageError, atomic_write_bytes, autocast, code_version, fmt_time, jobs_used,
                    machine_info, pick_device, pick_precision, positive, prepare_input, recipe_key,
                    record_timing, refuse_to_replace_the_deliverable, results_lock, set_seed, set_threads, torch_load,
                    torch_save, write_json)
from dataset import data_fingerprint, load_split, make_loader, resolve_keypoints_dir, shifted_test_dir
from model import LIKELIHOOD_METHODS, METHODS, build_model, model_config, run_model, save_checkpoint, target_of
from runs import CHECKPOINT, read_stored, run_dir_of, run_many

# defaults (the spec recipe); every one is a CLI flag
TRAIN_METHODS = ("heatmap", "regression")  # the assignment's two networks
SCHEDULES = ("constant", "cosine")
DEFAULTS = dict(epochs=30, batch_size=32, lr=1e-3, seed=0, heatmap_size=64, sigma=2.0, hand_loss="strict",
                snapshot_epochs=(1, 5, 10, 20, 30), num_snapshot_images=4)


def fit(model, train_loader, val_loader, num_epochs=30, lr=1e-3, device="cpu", precision="fp32",
        ckpt_path=None, ckpt_extra=None, on_epoch_end=None, name=None, log=print, hand_loss="strict",
        resume_path=None, loss="mse", schedule="constant"):
    """The one training loop: keypoint_loss(outputs, targets, hand_loss, loss), Adam(lr); schedule='cosine' sets
    epoch e's rate to lr * (1 + cos(pi * (e - 1) / num_epochs)) / 2. After each epoch: validation, the checkpoint
    with the lowest val loss to ckpt_path, on_epoch_end(epoch, val_outputs). resume_path: the training state after
    every epoch; called again, fit continues after the last finished epoch to an uninterrupted run's weights;
    deleted at the end. Returns the history."""
    name, model = name or model_config(model)["method"], model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    identity = {"recipe": (ckpt_extra or {}).get("provenance", {}).get("recipe"), "model": model_config(model)}
    history, done_seconds = load_training_state(resume_path, identity, model, opt, train_loader, ckpt_path, log, name)
    t_start = time.time() - done_seconds
    flow = getattr(model, "flow", None)  # RLE's residual density (loss='rle'), trained with the model
    for epoch in range(len(history["epochs"]) + 1, num_epochs + 1):
        t0 = time.time()
        for group in opt.param_groups:  # a function of the epoch alone, so a resumed run needs no scheduler state
            group["lr"] = lr if schedule == "constant" else lr * (1 + math.cos(math.pi * (epoch - 1) / num_epochs)) / 2
        train_loss = train_epoch(model, train_loader, opt, device, precision, hand_loss, loss, flow)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"[{name}] non-finite training loss at epoch {epoch}; stopping. The last good "
                                     f"checkpoint stays at {ckpt_path}; try a lower --lr or --precision fp32.")
        val_out, val_loss, val_px = validation(model, val_loader, device, precision, hand_loss, loss, flow)
        seconds = time.time() - t0
        history["epochs"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                  "val_px_error": val_px, "seconds": seconds})
        best = val_loss < history["best_val_loss"]
        if best:
            history.update(best_epoch=epoch, best_val_loss=val_loss, best_val_px_error=val_px)
            if ckpt_path is not None:
                save_checkpoint(ckpt_path, model, epoch=epoch, val_loss=val_loss, val_px_error=val_px,
                                **(ckpt_extra or {}))
        if on_epoch_end is not None:  # before the resume state: a resumed run has this epoch's snapshot
            on_epoch_end(epoch, val_out)
        if resume_path is not None:
            torch_save(resume_path, {"identity": identity, "threads": torch.get_num_threads(),
                                     "model": model.state_dict(), "opt": opt.state_dict(), "history": history,
                                     "seconds": time.time() - t_start, "rng": torch.get_rng_state(),
                                     "shuffle_rng": train_loader.generator.get_state()})
        eta = fmt_time((time.time() - t_start) / epoch * (num_epochs - epoch))
        log(f"[{name}] epoch {epoch:>2}/{num_epochs}  train {train_loss:.3e}  val {val_loss:.3e}  val px err "
            f"{val_px:6.2f}{' *' if best else '  '}  {seconds:5.1f}s  ETA {eta}")
    history["train_seconds"] = time.time() - t_start
    history["images_per_second"] = len(train_loader.dataset) * num_epochs / history["train_seconds"]
    if resume_path is not None:
        Path(resume_path).unlink(missing_ok=True)
    return history


def train_epoch(model, loader, opt, device, precision, hand_loss, loss, flow):
    """One pass over `loader` with Adam steps; returns the mean batch loss (one device sync per epoch)."""
    model.train()
    loss_sum, n_batches = torch.zeros((), device=device), 0
    for images, targets in loader:
        with autocast(device, precision):
            out = model(prepare_input(images, device))
        batch_loss = keypoint_loss(out, targets.to(device), hand_loss, loss, flow)
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        loss_sum += batch_loss.detach()
        n_batches += 1
    return float(loss_sum) / n_batches


def validation(model, val_loader, device, precision, hand_loss, loss, flow):
    """(outputs, loss, mean px error in image px with the default decoder) of `model` on the val split."""
    ds = val_loader.dataset
    val_out = run_model(model, val_loader, device, precision)
    with torch.no_grad():
        val_loss = float(keypoint_loss(val_out.to(device), ds.targets.to(device), hand_loss, loss, flow))
    val_px = float((decode(target_of(model), val_out, REFINE_DEFAULT) - ds.keypoints).norm(dim=-1).mean())
    return val_out, val_loss, val_px


def load_training_state(resume_path, identity, model, opt, train_loader, ckpt_path=None, log=print, name=""):
    """(history, seconds trained so far) for fit: a fresh start, or the state in resume_path restored into model, opt
    and RNGs when it was written for the same recipe and model and its best checkpoint is still there (bit-identical
    to an uninterrupted run with the same thread count on CPU)."""
    fresh = {"epochs": [], "best_epoch": None, "best_val_loss": math.inf}, 0.0
    if resume_path is None or not Path(resume_path).exists():
        return fresh
    try:
        state = torch_load(resume_path)
    except UsageError as e:
        log(f"[{name}] {e}; starting from epoch 1")
        return fresh
    why = ("it belongs to another recipe or model" if state.get("identity") != identity else
           "the best checkpoint written before it is gone"
           if state["history"]["best_epoch"] is not None and ckpt_path and not Path(ckpt_path).exists() else None)
    if why:
        log(f"[{name}] not resuming from {resume_path}: {why}; starting from epoch 1")
        return fresh
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    torch.set_rng_state(state["rng"])
    train_loader.generator.set_state(state["shuffle_rng"])
    threads = "" if state["threads"] == torch.get_num_threads() else (
        f"; it ran with {state['threads']} threads, now {torch.get_num_threads()}: the weights may differ in the last "
        f"digits from an uninterrupted run")
    log(f"[{name}] resuming after epoch {len(state['history']['epochs'])} ({resume_path}){threads}")
    history = state["history"]
    history.setdefault("resumed_after_epochs", []).append(len(history["epochs"]))
    return history, state["seconds"]


def train_heatmap_model(model, train_loader, val_loader, num_epochs=30, out_dir=RESULTS_DIR, device="cpu",
                        precision="fp32", lr=DEFAULTS["lr"], snapshot_epochs=DEFAULTS["snapshot_epochs"],
                        num_snapshot_images=DEFAULTS["num_snapshot_images"], ckpt_name="heatmap_model.pth",
                        log=print, hand_loss="strict", provenance=None, resume_path=None, loss="mse",
                        schedule="constant"):
    """Train HeatmapNet on Gaussian heatmap targets (MSE); best-by-val-loss checkpoint to out_dir/ckpt_name;
    predicted heatmaps of the first few val images at snapshot_epochs (and the last) to
    out_dir/heatmap_snapshots.pt. A resumed run keeps the snapshots of the epochs it had finished."""
    ds, snap_path = val_loader.dataset, Path(out_dir) / "heatmap_snapshots.pt"
    n = min(num_snapshot_images, len(ds))
    snap_epochs = set(snapshot_epochs) | {num_epochs} if snapshot_epochs else set()
    old = torch_load(snap_path) if snap_path.exists() and snap_epochs else {"epochs": [], "heatmaps": []}
    by_epoch = {e: h for e, h in zip(old["epochs"], old["heatmaps"]) if e in snap_epochs}

    def on_epoch_end(epoch, val_out):
        if epoch in snap_epochs:  # entries after this epoch belong to an earlier attempt: not written
            by_epoch[epoch] = val_out[:n].half()
            kept = sorted(e for e in by_epoch if e <= epoch)
            torch_save(snap_path, {"epochs": kept, "heatmaps": torch.stack([by_epoch[e] for e in kept]),
                                   "images": ds.images[:n].clone(), "keypoints": ds.keypoints[:n].clone(),
                                   "run_id": (provenance or {}).get("run_id")})

    extra = {"data": {"sigma": ds.sigma, "hm_size": ds.heatmap_size, "canonical_hands": ds.canonical_hands},
             **({"provenance": provenance} if provenance else {})}
    return fit(model, train_loader, val_loader, num_epochs, lr, device, precision, Path(out_dir) / ckpt_name,
               extra, on_epoch_end, log=log, hand_loss=hand_loss, resume_path=resume_path, loss=loss, schedule=schedule)


def train_regression_model(model, train_loader, val_loader, num_epochs=30, out_dir=RESULTS_DIR, device="cpu",
                           precision="fp32", lr=DEFAULTS["lr"], ckpt_name="regression_model.pth", log=print,
                           hand_loss="strict", provenance=None, resume_path=None, loss="mse", schedule="constant"):
    """Train RegressionNet (or any coordinate-target model) on unit [0, 1] coordinates (MSE); best-by-val-loss
    checkpoint to out_dir/ckpt_name."""
    extra = {"data": {"canonical_hands": val_loader.dataset.canonical_hands},
             **({"provenance": provenance} if provenance else {})}
    return fit(model, train_loader, val_loader, num_epochs, lr, device, precision, Path(out_dir) / ckpt_name,
               extra, log=log, hand_loss=hand_loss, resume_path=resume_path, loss=loss, schedule=schedule)


def loss_misfit(method, loss):
    """Why `loss` cannot train `method` (None when it can): the likelihood losses need a model that predicts a
    scale (model.LIKELIHOOD_METHODS), and those train with nothing else."""
    if (loss in ("laplace", "rle")) != (method in LIKELIHOOD_METHODS):
        return (f"--loss {loss} and method {method} do not fit: the likelihood losses (laplace, rle) train "
                f"{' or '.join(LIKELIHOOD_METHODS)} (a scale per coordinate), which trains with nothing else")
    return None


def make_recipe(method, data, seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"], lr=DEFAULTS["lr"],
                batch_size=DEFAULTS["batch_size"], heatmap_size=DEFAULTS["heatmap_size"], sigma=DEFAULTS["sigma"],
                hand_loss=DEFAULTS["hand_loss"], canonical_hands=False, num_train=None, precision="fp32",
                model_kwargs=None, loss="mse", schedule="constant"):
    """Every argument that changes a trained model's numbers, normalised: a run's key and provenance. data:
    dataset.data_fingerprint. Heatmap size/sigma (hm px) enter only the target of heatmap methods (the method row's
    own values win) and constructors that take hm_size; loss and schedule only when not the spec's."""
    row = METHODS[method]
    if loss_misfit(method, loss):
        raise ValueError(loss_misfit(method, loss))
    model_kwargs = dict(model_kwargs or {})
    if method in LIKELIHOOD_METHODS:
        model_kwargs.setdefault("flow", loss == "rle")
    for name, param in inspect.signature(row["model"]).parameters.items():  # every constructor option, explicit
        if param.default is not inspect.Parameter.empty:
            model_kwargs.setdefault(name, heatmap_size if name == "hm_size" else param.default)
    target = {"type": row["target"]}
    if row["target"] == "heatmap":
        target.update({"hm_size": model_kwargs.get("hm_size", heatmap_size), "sigma": float(sigma), **row["target_kwargs"]})
    n_avail = data["split_sizes"]["train"]
    return {"method": method, "model": model_kwargs, "target": target, "epochs": epochs, "lr": lr,
            "batch_size": batch_size, "seed": seed, "hand_loss": hand_loss, "canonical_hands": bool(canonical_hands),
            "num_train": n_avail if num_train is None else min(num_train, n_avail), "precision": precision,
            "data": data, **({"loss": loss} if loss != "mse" else {}),
            **({"schedule": schedule} if schedule != "constant" else {})}


def train_recipe(recipe, kp_dir, out_dir, run_id, device, ckpt_name, log=print, resume_path=None):
    """Train one method with one recipe (make_recipe) into out_dir; returns fit's history."""
    method, target = recipe["method"], recipe["target"]
    output_type = target["type"]  # 'heatmap' | 'regression', the dataset's output_type
    hm_size, sigma = target.get("hm_size", DEFAULTS["heatmap_size"]), target.get("sigma", DEFAULTS["sigma"])
    train_ds = load_split(kp_dir, "train", output_type, hm_size, sigma, recipe["canonical_hands"], recipe["num_train"])
    val_ds = load_split(kp_dir, "val", output_type, hm_size, sigma, recipe["canonical_hands"])
    train_loader = make_loader(train_ds, recipe["batch_size"], shuffle=True, seed=recipe["seed"])
    val_loader = make_loader(val_ds, 64)
    set_seed(recipe["seed"])  # each method starts from the same RNG state, whatever ran before it
    model = build_model(method, **recipe["model"])
    provenance = {"run_id": run_id, "recipe": recipe, "code_version": code_version(), "device": device,
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    common = dict(out_dir=out_dir, device=device, precision=recipe["precision"], lr=recipe["lr"], log=log,
                  hand_loss=recipe["hand_loss"], provenance=provenance, ckpt_name=ckpt_name, resume_path=resume_path,
                  loss=recipe.get("loss", "mse"), schedule=recipe.get("schedule", "constant"))
    train = train_heatmap_model if output_type == "heatmap" else train_regression_model
    return train(model, train_loader, val_loader, recipe["epochs"], **common)


def add_recipe_args(p):
    """The recipe flags shared by train.py, baseline.py and study.py (validated before anything is created)."""
    p.add_argument("--epochs", type=positive(int, 1), default=DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=positive(int, 1), default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=positive(float, 0, strict=True), default=DEFAULTS["lr"])
    p.add_argument("--data-dir", default=None, help="course-layout folder (<root> or <root>/keypoints); "
                   "default: generate/use problem2/data")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (auto: CUDA when present)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32")
    p.add_argument("--threads", type=positive(int, 0), default=0, help="torch CPU threads (0: torch's default)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train HeatmapNet and RegressionNet with the spec recipe.")
    add_recipe_args(p)
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="seeds init, shuffling and dropout (the default dataset is always generated with seed 0)")
    p.add_argument("--num-train", type=positive(int, 1), default=None,
                   help="use only the first N training images (N >= batch size)")
    p.add_argument("--heatmap-size", type=int, default=DEFAULTS["heatmap_size"], choices=(32, 64, 128))
    p.add_argument("--sigma", type=positive(float, 0, strict=True), default=DEFAULTS["sigma"],
                   help="Gaussian std in heatmap px")
    p.add_argument("--hand-loss", default=DEFAULTS["hand_loss"], choices=HAND_LOSSES,
                   help="symmetric: score the two hands in their better order per image (labels stay as given)")
    p.add_argument("--loss", default="mse", choices=LOSSES,
                   help="mse (the spec) | l1 (coordinates) | laplace, rle (likelihood losses; --methods gap_fc_nll)")
    p.add_argument("--schedule", default="constant", choices=SCHEDULES,
                   help="learning rate over the epochs: constant (the spec) or cosine decay to 0")
    p.add_argument("--methods", nargs="+", default=list(TRAIN_METHODS), choices=list(METHODS),
                   help="rows of model.METHODS (default: the assignment's two networks; add integral for IntegralNet)")
    p.add_argument("--jobs", type=positive(int, 1), default=1, help="methods trained side by side (CPU threads split)")
    p.add_argument("--canonical-hands", action="store_true", help="relabel left_hand := smaller-x hand")
    p.add_argument("--force", action="store_true", help="retrain a recipe whose run is stored in <out-dir>/runs")
    p.add_argument("--replace-results", action="store_true",
                   help="let a run with another recipe or data replace the committed problem2/results/")
    args = p.parse_args(argv)
    for m in args.methods:
        if loss_misfit(m, args.loss):
            p.error(loss_misfit(m, args.loss))
    if args.num_train is not None and args.num_train < args.batch_size:
        p.error(f"--num-train {args.num_train} is smaller than one batch (--batch-size {args.batch_size})")
    return args


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device)
    kp_dir = resolve_keypoints_dir(args.data_dir)
    data = data_fingerprint(kp_dir)
    run_id = uuid.uuid4().hex[:12]
    log_path = args.out_dir / "training_log.json"
    settings = {k: v for k, v in vars(args).items() if k not in ("data_dir", "out_dir", "replace_results")}
    methods = list(dict.fromkeys(args.methods))
    jobs = jobs_used(args.jobs, len(methods))
    settings.update(methods=methods, jobs=jobs)  # what runs: duplicates once, at most one job per method
    run_log = {"run_id": run_id, "config": {**settings, "data": data, "precision": precision,
                                            "machine": machine_info(device, precision, jobs)}}
    recipes = [make_recipe(method, data, args.seed, args.epochs, args.lr, args.batch_size, args.heatmap_size,
                           args.sigma, args.hand_loss, args.canonical_hands, args.num_train, precision,
                           loss=args.loss, schedule=args.schedule)
               for method in methods]
    if not args.replace_results:
        refuse_to_replace_the_deliverable(args.out_dir, recipes)
    print(f"run {run_id}: device {device}, precision {precision}, {torch.get_num_threads()} threads"
          f"{f' split over {jobs} jobs' if jobs > 1 else ''}, data {kp_dir}")
    t0, runs_root = time.time(), args.out_dir / "runs"
    with results_lock(args.out_dir, "train.py"):
        stored = {recipe_key(r): read_stored(run_dir_of(runs_root, r))[0] for r in recipes}
        # on the default data, evaluated like the studies' runs (the shifted test set too), so they share them
        shifted = shifted_test_dir() if args.data_dir is None else None
        got = run_many(recipes, kp_dir, runs_root, train_recipe, shifted, jobs, device, need_checkpoints=True,
                       force=args.force)
        # every method has finished: its files go into out_dir now, the log last (evaluate.py refuses a half-copied mix)
        for r in recipes:
            info, rdir = got[recipe_key(r)][0], run_dir_of(runs_root, r)
            h = run_log[r["method"]] = {"recipe": r, "run": rdir.name, **info["history"], "machine": info["machine"]}
            print(f"[{r['method']}] best epoch {h['best_epoch']}: val loss {h['best_val_loss']:.3e}, val px error "
                  f"{h['best_val_px_error']:.2f}; trained in {h['train_seconds']:.0f}s "
                  f"({h['images_per_second']:.0f} img/s)")
            atomic_write_bytes(args.out_dir / f"{r['method']}_model.pth", (rdir / CHECKPOINT).read_bytes())
            if r["method"] == "heatmap":
                atomic_write_bytes(args.out_dir / "heatmap_snapshots.pt", (rdir / "heatmap_snapshots.pt").read_bytes())
        run_log["total_seconds"] = time.time() - t0
        write_json(log_path, run_log)
        if all(got[k][0]["history"] != v.get("history") and "resumed_after_epochs" not in got[k][0]["history"]
               for k, v in stored.items()):  # the time of a whole training, not of a reuse or a resumed run
            record_timing(args.out_dir, "train.py", run_log["total_seconds"], device, precision, jobs)
    print(f"done in {fmt_time(run_log['total_seconds'])}; wrote {args.out_dir}")
    return run_log


if __name__ == "__main__":
    sys.exit(main() and 0)
