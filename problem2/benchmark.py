"""Training throughput: this repo's input path vs the plain path a typical student writes, in one run.

`python benchmark.py` times training steps (forward + backward + Adam, data loading included) of both
models and prints, per path: images/s, model GFLOP per image (forward + backward, counted by
torch.utils.flop_counter), achieved GFLOP/s, a same-run GEMM peak for the same dtype, and the ratio.
  fast path : in-memory split (PNGs decoded once), batch gathers, precomputed heatmaps, channels_last,
              bf16 autocast where the CPU has native bf16 (else fp32) -- what train.py does;
  plain path: fp32, NCHW, a Dataset whose __getitem__ opens the PNG with PIL and builds the heatmaps
              with numpy per keypoint, default DataLoader collate.
Also the data-loading share of a fast-path step. Ratios within one run are what count: absolute
times on a shared 2-core machine are noise. Writes results/benchmark.json (schema: {"config", "rows":
[{model, path, precision, images_per_s, gflop_per_image, gflops_achieved, gemm_peak_gflops,
fraction_of_peak, data_share}], "speedup": {model: fast/plain}, "scaling": [{jobs, threads, images_per_s,
images_per_s_per_job, wall_s, steps_per_job}]}): `--jobs` scaling of independent HeatmapNet trainings.
"""
import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from common import RESULTS_DIR, autocast, machine_info, pick_precision, prepare_input, write_json
from dataset import load_split, make_loader, resolve_keypoints_dir
from model import HeatmapNet, RegressionNet


class PlainDataset(Dataset):
    """What a typical first implementation does: decode + build targets per item, every epoch."""

    def __init__(self, image_dir, annotation_file, output_type, heatmap_size=64, sigma=2.0):
        self.image_dir, self.output_type = Path(image_dir), output_type
        self.heatmap_size, self.sigma = heatmap_size, sigma
        self.entries = json.loads(Path(annotation_file).read_text())["images"]

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, idx):
        e = self.entries[idx]
        image = np.asarray(Image.open(self.image_dir / e["file_name"]).convert("L"), dtype=np.float32) / 255.0
        kps = np.asarray(e["keypoints"], dtype=np.float32)
        if self.output_type == "regression":
            target = ((kps + 0.5) / 128).reshape(-1)   # written out by hand on purpose: the "plain" path
        else:
            s = self.heatmap_size
            ys, xs = np.mgrid[0:s, 0:s]
            target = np.zeros((len(kps), s, s), np.float32)
            for k, (x, y) in enumerate(kps):
                hx, hy = (x + 0.5) * s / 128 - 0.5, (y + 0.5) * s / 128 - 0.5
                target[k] = np.exp(-((xs - hx) ** 2 + (ys - hy) ** 2) / (2 * self.sigma**2))
        return torch.from_numpy(image)[None], torch.from_numpy(target)


def time_steps(model, loader, precision, channels_last, steps, warmup=2):
    """Images/s over `steps` training steps after `warmup`, and the data-loading share of that time."""
    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    it, n_images, t_data, t0 = iter(loader), 0, 0.0, None
    for step in range(warmup + steps):
        if step == warmup:
            t0, n_images, t_data = time.perf_counter(), 0, 0.0
        td = time.perf_counter()
        try:
            images, targets = next(it)
        except StopIteration:
            it = iter(loader)
            images, targets = next(it)
        images = prepare_input(images, "cpu") if channels_last else images
        t_data += time.perf_counter() - td
        with autocast("cpu", precision):
            out = model(images)
        loss = F.mse_loss(out.float(), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n_images += len(images)
    total = time.perf_counter() - t0
    return n_images / total, t_data / total


def flops_per_image(model, batch=8):
    """Forward + backward FLOPs of one image (FLOP = 2 x multiply-accumulates)."""
    x = torch.rand(batch, 1, 128, 128)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def gemm_peak_gflops(precision, n=2048, reps=10):
    """Achieved GFLOP/s of an n x n matmul in the given precision: the machine's practical ceiling."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def _scaling_worker(args):
    """One worker of the scaling benchmark: `steps` fast-path HeatmapNet training steps with `threads` threads."""
    kp_dir, threads, steps, batch_size, precision = args
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ds = load_split(kp_dir, "train", "heatmap", limit=batch_size * 4)
    ips, _ = time_steps(HeatmapNet(), make_loader(ds, batch_size, shuffle=True), precision, True, steps)
    return ips


def measure_scaling(kp_dir, configs=((1, 2), (2, 1)), steps=8, batch_size=32, precision="fp32"):
    """Training throughput of `jobs` independent HeatmapNet trainings side by side with `threads` threads each
    (what `--jobs` does): total images/s over the whole machine and the wall time of the batch, per (jobs, threads)."""
    rows = []
    for jobs, threads in configs:
        ctx = mp.get_context("spawn")
        with ctx.Pool(jobs) as pool:
            pool.map(abs, range(jobs))  # start the workers before timing
            t0 = time.perf_counter()
            per_job = pool.map(_scaling_worker, [(kp_dir, threads, steps, batch_size, precision)] * jobs)
            wall = time.perf_counter() - t0
        rows.append({"jobs": jobs, "threads": threads, "images_per_s": float(sum(per_job)),
                     "images_per_s_per_job": [float(x) for x in per_job], "wall_s": wall, "steps_per_job": steps})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description="Time training steps: this repo's input path vs a plain per-item path.")
    p.add_argument("--steps", type=int, default=12, help="timed steps per configuration")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "benchmark.json")
    p.add_argument("--scaling", nargs="+", default=["1x2", "2x1"], metavar="JOBSxTHREADS",
                   help="jobs x threads combinations for the --jobs scaling table (default: 1x2 2x1)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    kp_dir = resolve_keypoints_dir(args.data_dir)
    fast_precision = pick_precision("auto", "cpu")
    peaks = {prec: gemm_peak_gflops(prec) for prec in sorted({"fp32", fast_precision})}
    rows, speedup = [], {}
    for model_cls, output_type in ((HeatmapNet, "heatmap"), (RegressionNet, "regression")):
        gflop = flops_per_image(model_cls()) / 1e9
        fast_ds = load_split(kp_dir, "train", output_type)
        plain_ds = PlainDataset(kp_dir / "train", kp_dir / "train_annotations.json", output_type)
        paths = {"fast": (make_loader(fast_ds, args.batch_size, shuffle=True), fast_precision, True),
                 "plain": (DataLoader(plain_ds, args.batch_size, shuffle=True), "fp32", False)}
        ips = {}
        for path, (loader, precision, channels_last) in paths.items():
            torch.manual_seed(0)
            ips[path], data_share = time_steps(model_cls(), loader, precision, channels_last, args.steps)
            achieved = ips[path] * gflop
            rows.append({"model": model_cls.__name__, "path": path, "precision": precision,
                         "images_per_s": ips[path], "gflop_per_image": gflop, "gflops_achieved": achieved,
                         "gemm_peak_gflops": peaks[precision], "fraction_of_peak": achieved / peaks[precision],
                         "data_share": data_share})
        speedup[model_cls.__name__] = ips["fast"] / ips["plain"]
    print(f"{'model':<14}{'path':<7}{'prec':<6}{'img/s':>8}{'GFLOP/img':>11}{'GFLOP/s':>9}{'GEMM peak':>11}"
          f"{'of peak':>9}{'data':>7}")
    for r in rows:
        print(f"{r['model']:<14}{r['path']:<7}{r['precision']:<6}{r['images_per_s']:>8.1f}{r['gflop_per_image']:>11.3f}"
              f"{r['gflops_achieved']:>9.1f}{r['gemm_peak_gflops']:>11.1f}{r['fraction_of_peak']:>9.1%}"
              f"{r['data_share']:>7.1%}")
    for name, s in speedup.items():
        print(f"{name}: fast path is {s:.2f}x the plain path")
    configs = [tuple(int(v) for v in c.split("x")) for c in args.scaling]
    scaling = measure_scaling(kp_dir, configs, max(4, args.steps // 2), args.batch_size, fast_precision)
    for r in scaling:
        print(f"jobs {r['jobs']} x threads {r['threads']}: {r['images_per_s']:.1f} img/s in total, wall {r['wall_s']:.1f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"config": {"steps": args.steps, "batch_size": args.batch_size,
                                     "machine": machine_info("cpu", fast_precision)},
                          "rows": rows, "speedup": speedup, "scaling": scaling})
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
