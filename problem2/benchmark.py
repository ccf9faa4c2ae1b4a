"""Training speed in fp32 (report.py derives train.py's fp32 time from it, the README's line for CPUs without native
bf16): `python benchmark.py` times train.py's own epoch (train.train_epoch) over --steps batches of each of the
assignment's networks, after one untimed batch. Writes results/benchmark.json: {"config": {"steps", "batch_size",
"machine"}, "rows": [{"method", "images_per_s"}]}.
"""
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from common import ArgumentParser, RESULTS_DIR, machine_info, positive, run_cli, write_json
from dataset import load_split, make_loader, resolve_keypoints_dir
from model import METHODS, build_model
from train import DEFAULTS, TRAIN_METHODS, train_epoch


def images_per_s(method, kp_dir, steps, batch_size):
    """fp32 training images/s of `method` on the first `steps` batches of the train split."""
    ds = load_split(kp_dir, "train", METHODS[method]["target"])
    model = build_model(method).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for n in (batch_size, steps * batch_size):  # warm-up, then timed
        loader = make_loader(Subset(ds, range(min(n, len(ds)))), batch_size)
        t0 = time.perf_counter()
        train_epoch(model, loader, opt, {**DEFAULTS, "precision": "fp32"})
    return len(loader.dataset) / (time.perf_counter() - t0)


def main(argv=None):
    p = ArgumentParser(description="Time train.py's training epoch in fp32 (images/s).")
    p.add_argument("--steps", type=positive(int, 1), default=40, help="timed batches per network")
    p.add_argument("--batch-size", type=positive(int, 1), default=32)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "benchmark.json")
    args = p.parse_args(argv)
    kp_dir = resolve_keypoints_dir(args.data_dir)
    rows = [{"method": m, "images_per_s": images_per_s(m, kp_dir, args.steps, args.batch_size)} for m in TRAIN_METHODS]
    for r in rows:
        print(f"{r['method']:<12}fp32 {r['images_per_s']:8.1f} img/s")
    write_json(args.out, {"config": {"steps": args.steps, "batch_size": args.batch_size,
                                     "machine": machine_info("cpu", "fp32")}, "rows": rows})
    return rows


if __name__ == "__main__":
    run_cli(main)
