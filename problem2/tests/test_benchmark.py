import json

import benchmark
import report


def test_timed_rows_on_tiny_data(tiny_data, tmp_path):
    """Both assignment networks timed in fp32 into the JSON, whatever precision train.py picks on this CPU."""
    out = tmp_path / "benchmark.json"
    rows = benchmark.main(["--steps", "2", "--batch-size", "16", "--data-dir", str(tiny_data), "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["rows"] == rows and data["config"]["steps"] == 2 and data["config"]["batch_size"] == 16
    assert data["config"]["machine"]["precision"] == "fp32"
    assert [r["method"] for r in rows] == ["heatmap", "regression"] and all(r["images_per_s"] > 0 for r in rows)


def test_report_derives_train_py_fp32_time():
    bench = {"config": {"machine": {"cpu": "X", "cores": 2, "device": "cpu"}},
             "rows": [{"method": "heatmap", "images_per_s": 1.0}, {"method": "regression", "images_per_s": 2.0}]}
    log = {m: {"recipe": {"epochs": 1, "num_train": 600}} for m in ("heatmap", "regression")}
    # 600 images at 1 img/s plus 600 at 2 img/s: 15 minutes
    assert report.fp32_train_estimate({"benchmark": bench, "log": log}) == (
        "about 15 minutes (derived from `benchmark.py` on X, 2 cores, cpu)")
