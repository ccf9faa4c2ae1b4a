"""Training speed on this CPU, with and without common.reuse_freed_memory: `python benchmark.py` times train.py's own
epoch (train.train_epoch) in fp32 (the path of every CPU without native bf16) over --steps batches of each of the
assignment's networks, after one untimed batch, each measurement in a fresh process. Besides images/s it records
where the CPU time went: the kernel's share of the timed steps' CPU time (getrusage: system / (user + system)) and
the minor page faults per second. Writes results/benchmark.json: {"config": {"steps", "batch_size", "machine"},
"rows": [{"method", "allocator", "images_per_s", "kernel_share", "minor_faults_per_s"}]}.
"""
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch.utils.data import Subset

from common import ArgumentParser, RESULTS_DIR, machine_info, positive, reuse_freed_memory, run_cli, write_json
from dataset import load_split, make_loader, resolve_keypoints_dir
from model import METHODS, build_model
from train import DEFAULTS, TRAIN_METHODS, train_epoch

ALLOCATORS = {"glibc default": False, "reuse_freed_memory": True}  # what train.py and every script run with: the last


def measure(method, allocator, kp_dir, steps, batch_size):
    """One row of benchmark.json, measured in the calling (fresh) process."""
    if ALLOCATORS[allocator]:
        reuse_freed_memory()
    ds = load_split(kp_dir, "train", METHODS[method]["target"])
    model = build_model(method).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=DEFAULTS["lr"])
    for n in (batch_size, steps * batch_size):  # warm-up, then timed
        loader = make_loader(Subset(ds, range(min(n, len(ds)))), batch_size)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        train_epoch(model, loader, opt, {**DEFAULTS, "precision": "fp32"})
        seconds, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {"method": method, "allocator": allocator, "images_per_s": len(loader.dataset) / seconds,
            "kernel_share": system / (user + system), "minor_faults_per_s": (r1.ru_minflt - r0.ru_minflt) / seconds}


def main(argv=None):
    p = ArgumentParser(description="Time train.py's training epoch in fp32 (images/s, the kernel's share of the CPU "
                       "time) with glibc's default allocator settings and with reuse_freed_memory.")
    p.add_argument("--steps", type=positive(int, 1), default=40, help="timed batches per network")
    p.add_argument("--batch-size", type=positive(int, 1), default=32)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "benchmark.json")
    args = p.parse_args(argv)
    kp_dir = resolve_keypoints_dir(args.data_dir)
    rows = []
    for method in TRAIN_METHODS:
        for allocator in ALLOCATORS:  # each in a new process: the allocator's state is per process
            with ProcessPoolExecutor(1, multiprocessing.get_context("spawn")) as pool:
                rows.append(pool.submit(measure, method, allocator, kp_dir, args.steps, args.batch_size).result())
            r = rows[-1]
            print(f"{method:<12}{allocator:<20}fp32 {r['images_per_s']:7.1f} img/s, kernel {r['kernel_share']:6.1%} "
                  f"of the CPU time, {r['minor_faults_per_s']:9.0f} minor faults/s", flush=True)
    write_json(args.out, {"config": {"steps": args.steps, "batch_size": args.batch_size,
                                     "machine": machine_info("cpu", "fp32")}, "rows": rows})
    return rows


if __name__ == "__main__":
    run_cli(main)
