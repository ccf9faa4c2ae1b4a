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
import inspect
import math
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from codec import HAND_LOSSES, LOSSES, REFINE_DEFAULT, decode, keypoint_loss
from common import (ArgumentParser, RESULTS_DIR, UsageError, atomic_write_bytes, autocast, code_version, device_arg,
                    fmt_time, jobs_used, machine_info, pick_device, pick_precision, positive, prepare_input, recipe_key,
                    record_timing, refuse_to_replace_the_deliverable, results_lock, run_cli, set_seed, set_threads,
                    torch_load, torch_save, write_json)
from dataset import data_fingerprint, load_split, make_loader, resolve_keypoints_dir, shifted_test_dir
from model import LIKELIHOOD_METHODS, METHODS, build_model, model_config, run_model, save_checkpoint, target_of
from runs import CHECKPOINT, Store, read_stored, run_dir_of, run_many

# defaults (the spec recipe): every option of make_recipe, each a CLI flag of train.py
TRAIN_METHODS = ("heatmap", "regression")  # the assignment's two networks
SCHEDULES = ("constant", "cosine")
KEEPS = ("best", "last")  # which epoch's weights a run keeps: lowest val loss (the spec) or the final epoch
DEFAULTS = dict(seed=0, epochs=30, lr=1e-3, batch_size=32, heatmap_size=64, sigma=2.0, hand_loss="strict",
                canonical_hands=False, num_train=None, precision="fp32", model_kwargs=None, loss="mse",
                schedule="constant", keep="best")
SNAPSHOT_EPOCHS, NUM_SNAPSHOT_IMAGES = (1, 5, 10, 20, 30), 4  # heatmap_snapshots.pt: val predictions while training


@dataclass
class TrainIO:
    """Where and how one training runs; none of it changes the trained numbers (those are the recipe's)."""
    out_dir: Path = RESULTS_DIR
    ckpt_name: str | None = None  # the best checkpoint's file in out_dir (train_*_model: <method>_model.pth)
    device: str = "cpu"
    log: Callable = print
    provenance: dict | None = None  # run id, recipe, code version: stored in the checkpoint
    resume_path: Path | None = None  # the training state after every epoch, so a killed run continues


def fit(model, train_loader, val_loader, recipe=None, io=None, on_epoch_end=None):
    """The one training loop over recipe["epochs"] (a make_recipe dict; None: DEFAULTS): keypoint_loss(outputs,
    targets, hand_loss, loss), Adam(lr); schedule='cosine' sets epoch e's rate to lr * (1 + cos(pi * (e - 1) /
    epochs)) / 2. After each epoch: validation, the checkpoint with the lowest val loss (keep='last': every epoch's,
    so the final one stays) to io.out_dir/io.ckpt_name (when named), on_epoch_end(epoch, val_outputs).
    io.resume_path: the training state after every epoch; called again, fit continues after the last finished epoch
    to an uninterrupted run's weights; deleted at the end. Returns the history."""
    recipe, io = {**DEFAULTS, **(recipe or {})}, io or TrainIO()
    num_epochs, lr, device, log = recipe["epochs"], recipe["lr"], io.device, io.log
    name, model = model_config(model)["method"], model.to(device).to(memory_format=torch.channels_last)
    ckpt_path = Path(io.out_dir) / io.ckpt_name if io.ckpt_name else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    identity = {"recipe": (io.provenance or {}).get("recipe"), "model": model_config(model)}
    history, done_seconds = load_training_state(io, ckpt_path, identity, model, opt, train_loader)
    t_start = time.time() - done_seconds
    for epoch in range(len(history["epochs"]) + 1, num_epochs + 1):
        t0 = time.time()
        for group in opt.param_groups:  # a function of the epoch alone, so a resumed run needs no scheduler state
            group["lr"] = (lr if recipe["schedule"] == "constant" else
                           lr * (1 + math.cos(math.pi * (epoch - 1) / num_epochs)) / 2)
        train_loss = train_epoch(model, train_loader, opt, recipe, device)
        if not math.isfinite(train_loss):
            kept = (f"; the best checkpoint so far (epoch {history['best_epoch']}) stays at {ckpt_path}"
                    if ckpt_path is not None and history["best_epoch"] is not None else "")
            raise UsageError(f"[{name}] the training loss became non-finite at epoch {epoch} (lr {lr:g}, "
                             f"{recipe['precision']}): try a lower --lr"
                             f"{'' if recipe['precision'] == 'fp32' else ' or --precision fp32'}{kept}")
        val_out, val_loss, val_px = validation(model, val_loader, recipe, device)
        seconds = time.time() - t0
        history["epochs"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                  "val_px_error": val_px, "seconds": seconds})
        best = val_loss < history["best_val_loss"]
        if best:
            history.update(best_epoch=epoch, best_val_loss=val_loss, best_val_px_error=val_px)
        if best or recipe["keep"] == "last":
            history["saved_epoch"] = epoch
            if ckpt_path is not None:
                save_checkpoint(ckpt_path, model, epoch=epoch, val_loss=val_loss, val_px_error=val_px,
                                data=checkpoint_data(model, val_loader.dataset),
                                **({"provenance": io.provenance} if io.provenance else {}))
        if on_epoch_end is not None:  # before the resume state: a resumed run has this epoch's snapshot
            on_epoch_end(epoch, val_out)
        if io.resume_path is not None:
            torch_save(io.resume_path, {"identity": identity, "threads": torch.get_num_threads(),
                                        "model": model.state_dict(), "opt": opt.state_dict(), "history": history,
                                        "seconds": time.time() - t_start, "rng": torch.get_rng_state(),
                                        "shuffle_rng": train_loader.generator.get_state()})
        eta = fmt_time((time.time() - t_start) / epoch * (num_epochs - epoch))
        log(f"[{name}] epoch {epoch:>2}/{num_epochs}  train {train_loss:.3e}  val {val_loss:.3e}  val px err "
            f"{val_px:6.2f}{' *' if best else '  '}  {seconds:5.1f}s  ETA {eta}")
    history["train_seconds"] = time.time() - t_start
    history["images_per_second"] = len(train_loader.dataset) * num_epochs / history["train_seconds"]
    if io.resume_path is not None:
        Path(io.resume_path).unlink(missing_ok=True)
    return history


def checkpoint_data(model, val_ds):
    """The target settings a checkpoint records (evaluate.py scores it with the same hand labels)."""
    if target_of(model) == "heatmap":
        return {"sigma": val_ds.sigma, "hm_size": val_ds.heatmap_size, "canonical_hands": val_ds.canonical_hands}
    return {"canonical_hands": val_ds.canonical_hands}


def train_epoch(model, loader, opt, recipe, device="cpu"):
    """One pass over `loader` with Adam steps (recipe's precision, hand_loss and loss; RLE's flow, a model attribute,
    trains with it); returns the mean batch loss (one device sync per epoch)."""
    model.train()
    loss_sum, n_batches = torch.zeros((), device=device), 0
    for images, targets in loader:
        with autocast(device, recipe["precision"]):
            out = model(prepare_input(images, device))
        batch_loss = keypoint_loss(out, targets.to(device), recipe["hand_loss"], recipe["loss"],
                                   getattr(model, "flow", None))
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        loss_sum += batch_loss.detach()
        n_batches += 1
    return float(loss_sum) / n_batches


def validation(model, val_loader, recipe, device="cpu"):
    """(outputs, loss, mean px error in image px with the default decoder) of `model` on the val split."""
    ds = val_loader.dataset
    val_out = run_model(model, val_loader, device, recipe["precision"])
    with torch.no_grad():
        val_loss = float(keypoint_loss(val_out.to(device), ds.targets.to(device), recipe["hand_loss"], recipe["loss"],
                                       getattr(model, "flow", None)))
    val_px = float((decode(target_of(model), val_out, REFINE_DEFAULT) - ds.keypoints).norm(dim=-1).mean())
    return val_out, val_loss, val_px


def load_training_state(io, ckpt_path, identity, model, opt, train_loader):
    """(history, seconds trained so far) for fit: a fresh start, or the state in io.resume_path restored into model,
    opt and RNGs when it was written for the same recipe and model and its best checkpoint is still there
    (bit-identical to an uninterrupted run with the same thread count on CPU)."""
    fresh = {"epochs": [], "best_epoch": None, "best_val_loss": math.inf}, 0.0
    resume_path, name = io.resume_path, model_config(model)["method"]
    if resume_path is None or not Path(resume_path).exists():
        return fresh
    try:
        state = torch_load(resume_path)
    except UsageError as e:
        io.log(f"[{name}] {e}; starting from epoch 1")
        return fresh
    why = ("it belongs to another recipe or model" if state.get("identity") != identity else
           "the best checkpoint written before it is gone"
           if state["history"]["best_epoch"] is not None and ckpt_path and not Path(ckpt_path).exists() else None)
    if why:
        io.log(f"[{name}] not resuming from {resume_path}: {why}; starting from epoch 1")
        return fresh
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    torch.set_rng_state(state["rng"])
    train_loader.generator.set_state(state["shuffle_rng"])
    threads = "" if state["threads"] == torch.get_num_threads() else (
        f"; it ran with {state['threads']} threads, now {torch.get_num_threads()}: the weights may differ in the last "
        f"digits from an uninterrupted run")
    io.log(f"[{name}] resuming after epoch {len(state['history']['epochs'])} ({resume_path}){threads}")
    history = state["history"]
    history.setdefault("resumed_after_epochs", []).append(len(history["epochs"]))
    return history, state["seconds"]


def train_heatmap_model(model, train_loader, val_loader, num_epochs=30, recipe=None, io=None):
    """Train HeatmapNet on Gaussian heatmap targets (MSE) for num_epochs (the rest of the recipe: DEFAULTS or
    `recipe`); best-by-val-loss checkpoint to io.out_dir/heatmap_model.pth (or io.ckpt_name); predicted heatmaps of
    the first few val images at SNAPSHOT_EPOCHS (and the last) to io.out_dir/heatmap_snapshots.pt. A resumed run keeps
    the snapshots of the epochs it had finished."""
    io = replace(io or TrainIO(), ckpt_name=(io and io.ckpt_name) or "heatmap_model.pth")
    ds, snap_path = val_loader.dataset, Path(io.out_dir) / "heatmap_snapshots.pt"
    n = min(NUM_SNAPSHOT_IMAGES, len(ds))
    snap_epochs = set(SNAPSHOT_EPOCHS) | {num_epochs}
    old = torch_load(snap_path) if snap_path.exists() else {"epochs": [], "heatmaps": []}
    by_epoch = {e: h for e, h in zip(old["epochs"], old["heatmaps"]) if e in snap_epochs}

    def on_epoch_end(epoch, val_out):
        if epoch in snap_epochs:  # entries after this epoch belong to an earlier attempt: not written
            by_epoch[epoch] = val_out[:n].half()
            kept = sorted(e for e in by_epoch if e <= epoch)
            torch_save(snap_path, {"epochs": kept, "heatmaps": torch.stack([by_epoch[e] for e in kept]),
                                   "images": ds.images[:n].clone(), "keypoints": ds.keypoints[:n].clone(),
                                   "run_id": (io.provenance or {}).get("run_id")})

    return fit(model, train_loader, val_loader, {**(recipe or {}), "epochs": num_epochs}, io, on_epoch_end)


def train_regression_model(model, train_loader, val_loader, num_epochs=30, recipe=None, io=None):
    """Train RegressionNet (or any coordinate-target model) on unit [0, 1] coordinates (MSE) for num_epochs (the rest
    of the recipe: DEFAULTS or `recipe`); best-by-val-loss checkpoint to io.out_dir/regression_model.pth (or
    io.ckpt_name)."""
    io = replace(io or TrainIO(), ckpt_name=(io and io.ckpt_name) or "regression_model.pth")
    return fit(model, train_loader, val_loader, {**(recipe or {}), "epochs": num_epochs}, io)


def loss_misfit(method, loss):
    """Why `loss` cannot train `method` (None when it can): the likelihood losses need a model that predicts a
    scale (model.LIKELIHOOD_METHODS), and those train with nothing else."""
    if (loss in ("laplace", "rle")) != (method in LIKELIHOOD_METHODS):
        return (f"--loss {loss} and method {method} do not fit: the likelihood losses (laplace, rle) train "
                f"{' or '.join(LIKELIHOOD_METHODS)} (a scale per coordinate), which trains with nothing else")
    return None


def make_recipe(method, data, **options):
    """Every setting that changes a trained model's numbers, normalised: a run's key and provenance. data:
    dataset.data_fingerprint; options: any of DEFAULTS. Heatmap size/sigma (hm px) enter only the target of heatmap
    methods (the method row's own values win) and constructors that take hm_size; loss and schedule only when not
    the spec's, and keep only when 'last'."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"make_recipe: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}")
    o = {**DEFAULTS, **options}
    row, loss, heatmap_size = METHODS[method], o["loss"], o["heatmap_size"]
    if loss_misfit(method, loss):
        raise ValueError(loss_misfit(method, loss))
    model_kwargs = dict(o["model_kwargs"] or {})
    if method in LIKELIHOOD_METHODS:
        model_kwargs.setdefault("flow", loss == "rle")
    for name, param in inspect.signature(row["model"]).parameters.items():  # every constructor option, explicit
        if param.default is not inspect.Parameter.empty:
            model_kwargs.setdefault(name, heatmap_size if name == "hm_size" else param.default)
    target = {"type": row["target"]}
    if row["target"] == "heatmap":
        target.update({"hm_size": model_kwargs.get("hm_size", heatmap_size), "sigma": float(o["sigma"]),
                       **row["target_kwargs"]})
    n_avail = data["split_sizes"]["train"]
    return {"method": method, "model": model_kwargs, "target": target, "epochs": o["epochs"], "lr": o["lr"],
            "batch_size": o["batch_size"], "seed": o["seed"], "hand_loss": o["hand_loss"],
            "canonical_hands": bool(o["canonical_hands"]),
            "num_train": n_avail if o["num_train"] is None else min(o["num_train"], n_avail),
            "precision": o["precision"], "data": data, **({"loss": loss} if loss != "mse" else {}),
            **({"schedule": o["schedule"]} if o["schedule"] != "constant" else {}),
            **({"keep": o["keep"]} if o["keep"] != "best" else {})}


def train_recipe(recipe, kp_dir, run_dir, device="cpu", log=print):
    """Train one method with one recipe (make_recipe) into run_dir (the run store's layout: the best checkpoint as
    runs.CHECKPOINT, the training state as resume.pth while it trains); returns fit's history."""
    target = recipe["target"]
    output_type = target["type"]  # 'heatmap' | 'regression', the dataset's output_type
    hm_size, sigma = target.get("hm_size", DEFAULTS["heatmap_size"]), target.get("sigma", DEFAULTS["sigma"])
    train_ds = load_split(kp_dir, "train", output_type, hm_size, sigma, recipe["canonical_hands"], recipe["num_train"])
    val_ds = load_split(kp_dir, "val", output_type, hm_size, sigma, recipe["canonical_hands"])
    train_loader = make_loader(train_ds, recipe["batch_size"], shuffle=True, seed=recipe["seed"])
    val_loader = make_loader(val_ds, 64)
    set_seed(recipe["seed"])  # each method starts from the same RNG state, whatever ran before it
    model = build_model(recipe["method"], **recipe["model"])
    provenance = {"run_id": recipe_key(recipe), "recipe": recipe, "code_version": code_version(), "device": device,
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    io = TrainIO(Path(run_dir), CHECKPOINT, device, log, provenance, Path(run_dir) / "resume.pth")
    train = train_heatmap_model if output_type == "heatmap" else train_regression_model
    return train(model, train_loader, val_loader, recipe["epochs"], recipe, io)  # fit fills the defaults


def add_recipe_args(p):
    """The recipe flags shared by train.py, baseline.py and study.py (validated before anything is created)."""
    p.add_argument("--epochs", type=positive(int, 1), default=DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=positive(int, 1), default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=positive(float, 0, strict=True), default=DEFAULTS["lr"])
    p.add_argument("--data-dir", default=None, help="course-layout folder (<root> or <root>/keypoints); "
                   "default: generate/use problem2/data")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--device", type=device_arg, default="auto", help="auto | cpu | cuda[:N] (auto: CUDA when present)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32")
    p.add_argument("--threads", type=positive(int, 0), default=0, help="torch CPU threads (0: torch's default)")


def parse_args(argv=None):
    p = ArgumentParser(description="Train HeatmapNet and RegressionNet with the spec recipe.")
    add_recipe_args(p)
    p.add_argument("--seed", type=positive(int, 0), default=DEFAULTS["seed"],
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
    p.add_argument("--keep", default=DEFAULTS["keep"], choices=KEEPS,
                   help="the weights kept: the epoch with the lowest val loss (the spec) or the last epoch")
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
    options = {k: getattr(args, k) for k in DEFAULTS if hasattr(args, k)}
    recipes = [make_recipe(method, data, **{**options, "precision": precision}) for method in methods]
    if not args.replace_results:
        refuse_to_replace_the_deliverable(args.out_dir, recipes)
    print(f"run {run_id}: device {device}, precision {precision}, {torch.get_num_threads()} threads"
          f"{f' split over {jobs} jobs' if jobs > 1 else ''}, data {kp_dir}")
    t0, runs_root = time.time(), args.out_dir / "runs"
    with results_lock(args.out_dir, "train.py"):
        stored = {recipe_key(r): read_stored(run_dir_of(runs_root, r))[0] for r in recipes}
        # on the default data, evaluated like the studies' runs (the shifted test set too), so they share them
        shifted = shifted_test_dir() if args.data_dir is None else None
        got = run_many(recipes, Store(args.out_dir, kp_dir, train_recipe, shifted, device, jobs, force=args.force),
                       need_checkpoints=True)
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
    run_cli(main)
