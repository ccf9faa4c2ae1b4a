"""Train HeatmapNet and RegressionNet with the spec recipe: `python train.py` (see --help).

Both seed methods (and the third, IntegralNet = soft-argmax on the HeatmapNet body): same data, split and seed; MSE loss, Adam lr 1e-3, batch 32, 30 epochs; the checkpoint
with the lowest validation loss is kept. One training loop (`fit`) serves both; they differ only in
their targets (heatmaps vs unit coordinates) and in how outputs are decoded to pixels.

Writes into --out-dir (default problem2/results/), every file atomically (temp + rename):
  heatmap_model.pth, regression_model.pth,
  integral_model.pth                        {"config": model_config, "state_dict", "epoch", "val_loss",
                                             "val_px_error", "data": {"sigma", "canonical_hands", "hm_size"}}
                                             (torch.load(..., weights_only=True); model.load_checkpoint)
  heatmap_snapshots.pt                      {"epochs": [E], "heatmaps": [E, n, K, H, W] float16,
                                             "images": [n, 1, 128, 128], "keypoints": [n, K, 2] img px}
                                             predicted heatmaps of n fixed val images during training
  training_log.json                         {"config": {...run settings, device, precision, torch},
                                             "<method>": {"epochs": [{"epoch", "train_loss", "val_loss",
                                                 "val_px_error", "seconds"}], "best_epoch", "best_val_loss",
                                                 "best_val_px_error", "train_seconds", "images_per_second"}}
  val_px_error = mean Euclidean error over val keypoints in 128-px image space (heatmaps decoded with
  evaluate.REFINE_DEFAULT); train_loss is the mean over the epoch's batches.
"""
import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dataset import (atomic_torch_save, atomic_write_json, load_split, make_loader, record_timing,
                     resolve_keypoints_dir)
from evaluate import REFINE_DEFAULT, decode_outputs, run_model
from model import (HeatmapNet, IntegralNet, RegressionNet, autocast, model_config, pick_device, pick_precision,
                   prepare_input, save_checkpoint)

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
# ---- defaults (the spec recipe); every one is a CLI flag
DEFAULTS = dict(epochs=30, batch_size=32, lr=1e-3, seed=0, heatmap_size=64, sigma=2.0,
                snapshot_epochs=(1, 5, 10, 20, 30), num_snapshot_images=4)


METHODS = {"heatmap": "heatmap", "regression": "regression", "integral": "regression"}  # method -> target type


def set_seed(seed):
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_writable(out_dir):
    """Fail at start, not after 30 epochs, when results cannot be written."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write_test{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise SystemExit(f"error: cannot write results to {out_dir}: {e}") from None


def fmt_time(seconds):
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def fit(model, train_loader, val_loader, num_epochs=30, lr=1e-3, device="cpu", precision="fp32",
        ckpt_path=None, ckpt_extra=None, on_epoch_end=None, name=None, log=print):
    """The one training loop. MSE between model output and the loader's targets, Adam(lr).

    Validation each epoch: loss on val_loader and mean pixel error (image px) of the decoded outputs
    against val_loader.dataset.keypoints. The model with the lowest val loss is saved to ckpt_path.
    on_epoch_end(epoch, val_outputs) is called after each epoch (used for heatmap snapshots).
    Returns the history: a dict with 'epochs' (one dict per epoch) and the best-epoch summary.
    """
    name = name or model_config(model)["method"]
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    val_kp = val_loader.dataset.keypoints
    val_targets = val_loader.dataset.targets
    history = {"epochs": [], "best_epoch": None, "best_val_loss": math.inf}
    t_start = time.time()
    for epoch in range(1, num_epochs + 1):
        t0 = time.time()
        model.train()
        loss_sum, n_batches = torch.zeros((), device=device), 0
        for images, targets in train_loader:
            with autocast(device, precision):
                out = model(prepare_input(images, device))
            loss = F.mse_loss(out.float(), targets.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            n_batches += 1
        train_loss = float(loss_sum) / n_batches  # one sync per epoch
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"[{name}] non-finite training loss at epoch {epoch}; stopping. "
                                     f"The last good checkpoint (if any) is kept at {ckpt_path}. "
                                     f"Try a lower --lr or --precision fp32.")
        val_out = run_model(model, val_loader, device, precision)
        val_loss = float(F.mse_loss(val_out, val_targets))
        val_kp_pred = decode_outputs(val_out, model.output_type, REFINE_DEFAULT)
        val_px = float((val_kp_pred - val_kp).norm(dim=-1).mean())
        seconds = time.time() - t0
        history["epochs"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                  "val_px_error": val_px, "seconds": seconds})
        best = val_loss < history["best_val_loss"]
        if best:
            history.update(best_epoch=epoch, best_val_loss=val_loss, best_val_px_error=val_px)
            if ckpt_path is not None:
                save_checkpoint(ckpt_path, model, epoch=epoch, val_loss=val_loss, val_px_error=val_px,
                                **(ckpt_extra or {}))
        if on_epoch_end is not None:
            on_epoch_end(epoch, val_out)
        elapsed = time.time() - t_start
        eta = elapsed / epoch * (num_epochs - epoch)
        log(f"[{name}] epoch {epoch:>2}/{num_epochs}  train {train_loss:.3e}  val {val_loss:.3e}  "
            f"val px err {val_px:6.2f}{' *' if best else '  '}  {seconds:5.1f}s  ETA {fmt_time(eta)}")
    history["train_seconds"] = time.time() - t_start
    n_train = len(train_loader.dataset)
    history["images_per_second"] = n_train * num_epochs / history["train_seconds"]
    return history


def train_heatmap_model(model, train_loader, val_loader, num_epochs=30, out_dir=RESULTS_DIR, device="cpu",
                        precision="fp32", lr=DEFAULTS["lr"], snapshot_epochs=DEFAULTS["snapshot_epochs"],
                        num_snapshot_images=DEFAULTS["num_snapshot_images"], ckpt_name="heatmap_model.pth",
                        log=print):
    """Train HeatmapNet on Gaussian heatmap targets (MSE); best-by-val-loss checkpoint to out_dir/ckpt_name;
    predicted heatmaps of the first few val images at snapshot_epochs (and the last) to heatmap_snapshots.pt."""
    ds = val_loader.dataset
    n = min(num_snapshot_images, len(ds))
    snap_epochs = sorted({e for e in snapshot_epochs if e <= num_epochs} | {num_epochs})
    snaps = {"epochs": [], "heatmaps": [], "images": ds.images[:n].clone(), "keypoints": ds.keypoints[:n].clone()}

    def on_epoch_end(epoch, val_out):
        if snapshot_epochs and epoch in snap_epochs:
            snaps["epochs"].append(epoch)
            snaps["heatmaps"].append(val_out[:n].half())
            atomic_torch_save(Path(out_dir) / "heatmap_snapshots.pt",
                              {**snaps, "heatmaps": torch.stack(snaps["heatmaps"])})

    extra = {"data": {"sigma": ds.sigma, "hm_size": ds.heatmap_size, "canonical_hands": ds.canonical_hands}}
    return fit(model, train_loader, val_loader, num_epochs, lr, device, precision, Path(out_dir) / ckpt_name,
               extra, on_epoch_end, log=log)


def train_regression_model(model, train_loader, val_loader, num_epochs=30, out_dir=RESULTS_DIR, device="cpu",
                           precision="fp32", lr=DEFAULTS["lr"], ckpt_name="regression_model.pth", log=print):
    """Train RegressionNet (or IntegralNet) on unit [0, 1] coordinates (MSE); best-by-val-loss checkpoint to
    out_dir/ckpt_name."""
    extra = {"data": {"canonical_hands": val_loader.dataset.canonical_hands}}
    return fit(model, train_loader, val_loader, num_epochs, lr, device, precision, Path(out_dir) / ckpt_name,
               extra, log=log)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train HeatmapNet and RegressionNet (spec recipe by default).")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="seeds init, shuffling and dropout (the default dataset is always generated with seed 0)")
    p.add_argument("--num-train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--heatmap-size", type=int, default=DEFAULTS["heatmap_size"], choices=(32, 64, 128))
    p.add_argument("--sigma", type=float, default=DEFAULTS["sigma"], help="Gaussian std in heatmap px")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                   help="integral = soft-argmax on the HeatmapNet body (the 'why' study's third method)")
    p.add_argument("--canonical-hands", action="store_true", help="relabel left_hand := smaller-x hand")
    p.add_argument("--data-dir", default=None, help="course-layout folder (<root> or <root>/keypoints); "
                   "default: generate/use problem2/data")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (auto: CUDA when present)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    check_writable(args.out_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    kp_dir = resolve_keypoints_dir(args.data_dir)
    log_path = args.out_dir / "training_log.json"
    run_log = {"config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                          "data_dir": str(kp_dir), "device": device, "precision": precision,
                          "torch": torch.__version__, "threads": torch.get_num_threads()}}
    print(f"device {device}, precision {precision}, {torch.get_num_threads()} threads, data {kp_dir}")
    t0 = time.time()
    for method in args.methods:
        target = METHODS[method]
        train_ds = load_split(kp_dir, "train", target, args.heatmap_size, args.sigma, args.canonical_hands,
                              args.num_train)
        val_ds = load_split(kp_dir, "val", target, args.heatmap_size, args.sigma, args.canonical_hands)
        train_loader = make_loader(train_ds, args.batch_size, shuffle=True, seed=args.seed)
        val_loader = make_loader(val_ds, 64)
        set_seed(args.seed)  # each method starts from the same RNG state, whatever ran before it
        common = dict(out_dir=args.out_dir, device=device, precision=precision, lr=args.lr)
        if method == "heatmap":
            model = HeatmapNet(hm_size=args.heatmap_size)
            run_log[method] = train_heatmap_model(model, train_loader, val_loader, args.epochs, **common)
        else:
            model = RegressionNet() if method == "regression" else IntegralNet(hm_size=args.heatmap_size)
            run_log[method] = train_regression_model(model, train_loader, val_loader, args.epochs,
                                                     ckpt_name=f"{method}_model.pth", **common)
        atomic_write_json(log_path, run_log)
        h = run_log[method]
        print(f"[{method}] best epoch {h['best_epoch']}: val loss {h['best_val_loss']:.3e}, val px error "
              f"{h['best_val_px_error']:.2f}; {h['train_seconds']:.0f}s ({h['images_per_second']:.0f} img/s)")
    run_log["total_seconds"] = time.time() - t0
    atomic_write_json(log_path, run_log)
    record_timing(args.out_dir, "train.py", run_log["total_seconds"])
    print(f"done in {fmt_time(run_log['total_seconds'])}; wrote {args.out_dir}")
    return run_log


if __name__ == "__main__":
    sys.exit(main() and 0)
