"""Nothing read from outside the data, nothing silent, nothing half-written, no orphans (issue #45): one test per
case a careless or hostile user found."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import baseline
import dataset
import evaluate
import train
from common import UsageError
from conftest import child_pids, is_running

HERE = Path(__file__).resolve().parents[1]


def _copy(tiny_data, tmp_path):
    dst = tmp_path / "data" / "keypoints"
    shutil.copytree(tiny_data, dst)
    return dst


def _set_file_name(kp_dir, index, name):
    ann = kp_dir / "train_annotations.json"
    data = json.loads(ann.read_text())
    data["images"][index]["file_name"] = name
    ann.write_text(json.dumps(data))


@pytest.mark.parametrize("name,match", [("/tmp/outside.png", "leads outside"), ("../../outside.png", "leads outside"),
                                        ("fifo.png", "is not a regular file")])
def test_images_are_read_only_from_inside_their_split_folder(tiny_data, tmp_path, name, match):
    kp_dir = _copy(tiny_data, tmp_path)
    Image.new("L", (128, 128), 255).save(tmp_path / "outside.png")
    shutil.copy(tmp_path / "outside.png", "/tmp/outside.png")
    if name == "fifo.png":
        os.mkfifo(kp_dir / "train" / name)                          # reading it would hang the run
    _set_file_name(kp_dir, 2, name)
    with pytest.raises(UsageError, match=rf"train_annotations.json: images\[2\] \(id 2\): .*{match}"):
        train.main(["--data-dir", str(kp_dir), "--out-dir", str(tmp_path / "out"), "--epochs", "1"])
    assert not (tmp_path / "out").exists()                          # refused before anything was created


def test_a_changed_image_is_new_data(tiny_data, tmp_path):
    kp_dir = _copy(tiny_data, tmp_path)
    before = dataset.data_fingerprint(kp_dir)
    img = np.asarray(Image.open(kp_dir / "train" / "000003.png")).copy()
    img[0, 0] = 0                                                  # one pixel; the annotations are unchanged
    Image.fromarray(img).save(kp_dir / "train" / "000003.png")
    after = dataset.data_fingerprint(kp_dir)
    assert after["annotations_sha256"] == before["annotations_sha256"]
    assert after["pixels_sha256"] != before["pixels_sha256"]
    assert train.make_recipe("heatmap", before) != train.make_recipe("heatmap", after)   # a new run key: never reused


def test_a_sigma_that_leaves_a_target_without_signal_is_refused(tiny_data):
    with pytest.raises(UsageError, match=r"--sigma 0.01 .* peaking at 0.000 .*: use --sigma >= 0.31"):
        dataset.load_split(tiny_data, "train", "heatmap", 64, 0.01)
    assert dataset.load_split(tiny_data, "train", "heatmap", 64, 0.31).targets.amax((-2, -1)).min() >= dataset.MIN_PEAK


def test_scores_of_a_checkpoint_never_replace_those_of_other_data(tiny_data, tmp_path):
    out = tmp_path / "run"
    train.main(["--data-dir", str(tiny_data), "--out-dir", str(out), "--epochs", "1", "--precision", "fp32",
                "--methods", "regression"])
    ckpt = out / "regression_model.pth"
    evaluate.main(["--data-dir", str(tiny_data), "--checkpoint", str(ckpt)])
    scored = out / "regression_model_test_metrics.json"
    first = scored.read_bytes()
    assert json.loads(first)["data"] == {"path": str(tiny_data.resolve()), **dataset.data_fingerprint(tiny_data)}
    other = dataset.generate_dataset(tmp_path / "other", {"train": 8, "val": 8, "test": 8}, seed=5)
    with pytest.raises(UsageError, match=r"regression_model_test_metrics.json holds the scores of other data .*"
                                         r"--metrics-out"):
        evaluate.main(["--data-dir", str(other), "--checkpoint", str(ckpt)])
    assert scored.read_bytes() == first
    evaluate.main(["--data-dir", str(other), "--checkpoint", str(ckpt), "--metrics-out", str(tmp_path / "o.json")])
    assert json.loads((tmp_path / "o.json").read_text())["num_images"] == 8


def test_every_write_goes_through_the_atomic_write():
    """Only common.py opens files for writing (atomic_write_bytes; the lock file); the dataset's PNGs go into a temp
    folder renamed when complete."""
    import re
    for path in HERE.glob("*.py"):
        text = path.read_text()
        if path.name != "common.py":
            assert not re.search(r"\.write_(text|bytes)\(|open\([^)]*[\"'][wa]|savefig\(|torch\.save\(", text), path


def test_a_worker_that_dies_mid_run_stops_the_batch_instead_of_hanging():
    """A --jobs 2 worker that dies inside its task (here os._exit(3)): multiprocessing.Pool would wait forever for
    the lost task; job_results raises within seconds, naming the exit code."""
    import common
    t0 = time.time()
    with pytest.raises(RuntimeError, match=r"a worker process died \(exit code 3\)"):
        with common.job_results(os._exit, [3, 3], 2) as results:
            list(results)
    assert time.time() - t0 < 60


def test_workers_end_when_their_parent_is_killed(tmp_path):
    """SIGKILL (no handler can run) of a --jobs 2 parent: its workers and multiprocessing's resource tracker end on
    their own within seconds instead of training on as orphans."""
    if not Path("/proc").exists():
        pytest.skip("reads /proc (Linux)")
    code = (f"import sys, time; sys.path.insert(0, {str(HERE)!r}); import common\n"
            "if __name__ == '__main__':\n"
            "    with common.job_results(time.sleep, [120, 120], 2) as results:\n"
            "        list(results)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(child_pids(proc.pid)) < 3:  # 2 workers + the resource tracker
            time.sleep(0.2)
        kids = child_pids(proc.pid)
        assert len(kids) >= 2
        time.sleep(1)                                               # the workers are in their task
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(is_running(k) for k in kids):
            time.sleep(0.2)
        assert not [k for k in kids if is_running(k)]
    finally:
        for k in child_pids(proc.pid):
            os.kill(k, signal.SIGKILL)


def test_the_closing_table_shows_only_the_last_runs_scores(tmp_path, capsys):
    log = {"run_id": "new", "config": {"methods": ["heatmap"]}}
    metrics = json.loads((HERE / "results" / "metrics.json").read_text())
    (tmp_path / "training_log.json").write_text(json.dumps(log))
    (tmp_path / "metrics.json").write_text(json.dumps({**metrics, "provenance": {"run_id": "old"}}))
    baseline.print_summary(tmp_path)
    out = capsys.readouterr().out
    assert "metrics.json scored train.py run old, not the last one (new)" in out and "PCK (bbox)" not in out
    (tmp_path / "metrics.json").write_text(json.dumps({**metrics, "provenance": {"run_id": "new"}}))
    baseline.print_summary(tmp_path)
    assert "PCK (bbox)" in capsys.readouterr().out
