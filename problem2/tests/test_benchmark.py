import json
import subprocess
import sys
from pathlib import Path

import torch

import benchmark

HERE = Path(__file__).resolve().parents[1]


def test_timed_rows_on_tiny_data(tiny_data, tmp_path):
    """Both assignment networks timed in fp32 with and without reuse_freed_memory, each with its kernel share."""
    out = tmp_path / "benchmark.json"
    rows = benchmark.main(["--steps", "2", "--batch-size", "16", "--data-dir", str(tiny_data), "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["rows"] == rows and data["config"]["steps"] == 2 and data["config"]["batch_size"] == 16
    assert data["config"]["machine"]["precision"] == "fp32"
    assert [(r["method"], r["allocator"]) for r in rows] == [(m, a) for m in ("heatmap", "regression")
                                                             for a in benchmark.ALLOCATORS]
    assert all(r["images_per_s"] > 0 and 0 <= r["kernel_share"] <= 1 for r in rows)


def test_reuse_freed_memory_stops_refaulting_large_buffers():
    """A 64 MiB buffer allocated and freed 20 times: with glibc's defaults each one is a fresh mmap whose pages fault
    in again; with reuse_freed_memory most pages stay mapped (a no-op elsewhere: then nothing to check)."""
    code = ("import resource, torch, common\n"
            "applied = common.reuse_freed_memory() if sys.argv[-1] == 'reuse' else None\n"
            "for i in range(21):\n"
            "    if i == 1: f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "    torch.ones(16 << 20)\n"
            "print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")
    default, reuse = (subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r})\n{code}",
                                      mode], capture_output=True, text=True, check=True).stdout.split()
                      for mode in ("default", "reuse"))
    if reuse[0] == "True":                                    # glibc: 20 x 16,384 pages of 4 KiB re-faulted by default
        assert int(default[1]) > 20 * 10_000 and 2 * int(reuse[1]) < int(default[1])


def test_the_allocator_changes_speed_not_numbers(tiny_data, tmp_path):
    """One training (2 epochs, tiny data, 2 threads) in two fresh processes, with and without reuse_freed_memory:
    bit-identical weights."""
    code = ("import torch, common, train\n"
            "from dataset import load_split, make_loader\nfrom model import build_model\n"
            "if sys.argv[-2] == 'reuse': common.reuse_freed_memory()\n"
            "torch.set_num_threads(2); torch.manual_seed(0)\n"
            f"tr, va = (load_split({str(tiny_data)!r}, s, 'heatmap') for s in ('train', 'val'))\n"
            "model = build_model('heatmap')\n"
            "train.fit(model, make_loader(tr, 16, shuffle=True), make_loader(va, 16), {'epochs': 2},"
            " train.TrainIO(log=lambda *a: None))\n"
            "torch.save(model.state_dict(), sys.argv[-1])\n")
    for mode in ("default", "reuse"):
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r})\n{code}", mode,
                        str(tmp_path / f"{mode}.pt")], check=True)
    a, b = (torch.load(tmp_path / f"{m}.pt") for m in ("default", "reuse"))
    assert all(torch.equal(a[k], b[k]) for k in a)
