"""Training throughput of train.py's input path, in images/s (report.py derives train.py's fp32 time from it).

`python benchmark.py` times `--steps` training steps (forward + backward + Adam, data loading included; 2 warmup
steps untimed) of HeatmapNet and RegressionNet on what train.py runs: load_split + make_loader, channels_last
input, codec.keypoint_loss, in fp32 and, where train.py would pick it on this CPU, in bf16 autocast.
Writes results/benchmark.json: {"config": {"steps", "batch_size", "machine"}, "rows": [{"model", "path",
"precision", "images_per_s"}]}; path is "fast" for the fp32 row (the one report.py reads) and "fast_bf16" for
the bf16 row.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from codec import keypoint_loss
from common import RESULTS_DIR, autocast, machine_info, pick_precision, positive, prepare_input, write_json
from dataset import load_split, make_loader, resolve_keypoints_dir
from model import HeatmapNet, RegressionNet


def images_per_s(model, loader, precision, steps, warmup=2):
    """Images/s over `steps` training steps after `warmup` untimed ones, cycling through `loader`."""
    model = model.train().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    it, n_images = iter(loader), 0
    for step in range(warmup + steps):
        if step == warmup:
            t0, n_images = time.perf_counter(), 0
        try:
            images, targets = next(it)
        except StopIteration:  # a new epoch, as in train.py
            it = iter(loader)
            images, targets = next(it)
        with autocast("cpu", precision):
            out = model(prepare_input(images, "cpu"))
        loss = keypoint_loss(out, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n_images += len(images)
    return n_images / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description="Time training steps of train.py's input path (images/s).")
    p.add_argument("--steps", type=positive(int, 1), default=40, help="timed steps per model and precision")
    p.add_argument("--batch-size", type=positive(int, 1), default=32)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "benchmark.json")
    args = p.parse_args(argv)
    kp_dir = resolve_keypoints_dir(args.data_dir)
    auto = pick_precision("auto", "cpu")
    rows = []
    for model_cls, output_type in ((HeatmapNet, "heatmap"), (RegressionNet, "regression")):
        loader = make_loader(load_split(kp_dir, "train", output_type), args.batch_size, shuffle=True)
        for precision in dict.fromkeys(("fp32", auto)):
            torch.manual_seed(0)
            ips = images_per_s(model_cls(), loader, precision, args.steps)
            rows.append({"model": model_cls.__name__, "path": "fast" if precision == "fp32" else f"fast_{precision}",
                         "precision": precision, "images_per_s": ips})
    for r in rows:
        print(f"{r['model']:<14}{r['precision']:<6}{r['images_per_s']:>8.1f} img/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"config": {"steps": args.steps, "batch_size": args.batch_size,
                                     "machine": machine_info("cpu", auto)}, "rows": rows})
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
