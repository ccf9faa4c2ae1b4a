import json

import benchmark
import report
from common import pick_precision


def test_timed_rows_on_tiny_data(tiny_data, tmp_path):
    """Both models timed in fp32 (+ the auto precision when it differs), past an epoch end, into the JSON."""
    out = tmp_path / "benchmark.json"
    rows = benchmark.main(["--steps", "2", "--batch-size", "16", "--data-dir", str(tiny_data), "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["rows"] == rows and data["config"]["steps"] == 2 and data["config"]["batch_size"] == 16
    auto = pick_precision("auto", "cpu")
    assert data["config"]["machine"]["precision"] == auto
    per_model = [("fast", "fp32")] + ([(f"fast_{auto}", auto)] if auto != "fp32" else [])
    assert [(r["model"], r["path"], r["precision"]) for r in rows] == [
        (m, path, prec) for m in ("HeatmapNet", "RegressionNet") for path, prec in per_model]
    assert all(set(r) == {"model", "path", "precision", "images_per_s"} and r["images_per_s"] > 0 for r in rows)


def test_report_reads_the_fp32_row_when_train_py_runs_bf16(tiny_data, tmp_path, monkeypatch):
    """On a native-bf16 CPU each model has a bf16 row too; report.fp32_train_estimate must still use fp32."""
    monkeypatch.setattr(benchmark, "pick_precision", lambda name, device: "bf16")
    monkeypatch.setattr(benchmark, "images_per_s", lambda model, loader, precision, steps: {"fp32": 1.0, "bf16": 4.0}[
        precision])
    out = tmp_path / "benchmark.json"
    benchmark.main(["--steps", "1", "--data-dir", str(tiny_data), "--out", str(out)])
    bench = json.loads(out.read_text())
    assert {(r["path"], r["precision"]) for r in bench["rows"]} == {("fast", "fp32"), ("fast_bf16", "bf16")}
    assert bench["config"]["machine"]["precision"] == "bf16"
    log = {m: {"recipe": {"epochs": 1, "num_train": 600}} for m in ("heatmap", "regression")}
    # 600 images per model at the fp32 rate of 1 img/s: 20 minutes (bf16's 4 img/s would give 5)
    assert report.fp32_train_estimate({"benchmark": bench, "log": log}).startswith("about 20 minutes")
