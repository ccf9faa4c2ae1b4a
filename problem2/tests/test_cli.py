"""The project as a library and at the shell: library code raises UsageError (an ordinary exception, catchable);
every script turns it, and an interruption, into one line on stderr and exit status 1 (common.run_cli)."""
import ast
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import common
import dataset
import evaluate
import report
import train
from common import UsageError
from model import HeatmapNet, save_checkpoint

HERE = Path(__file__).resolve().parents[1]
SCRIPTS = ("train", "evaluate", "baseline", "study", "how_far", "benchmark", "dataset", "report")


def _script(name, *args, **kw):
    """Start problem2/<name>.py as a user would."""
    return subprocess.Popen([sys.executable, str(HERE / f"{name}.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=HERE, **kw)


def _one_line_exit_1(proc, match):
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and err.count("\n") == 1 and match in err, err


def test_library_errors_are_ordinary_exceptions_naming_the_file(tiny_data, tmp_path):
    try:
        dataset.KeypointDataset(tiny_data / "train", tmp_path / "missing.json")
    except Exception as e:  # noqa: BLE001  what a notebook or a test writes
        assert isinstance(e, (UsageError, ValueError)) and "missing.json not found" in str(e)
    bad = json.loads((tiny_data / "train_annotations.json").read_text())
    bad["images"][1]["keypoints"] = bad["images"][1]["keypoints"][:4]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"bad.json: images\[1\] \(id 1\): 'keypoints' must be 5 numeric"):
        dataset.KeypointDataset(tiny_data / "train", tmp_path / "bad.json")


def test_one_exit_and_short_signatures():
    """No class derives from SystemExit/BaseException, run_cli is the one place that exits, no function takes more
    than 7 parameters, and the seed's signatures are as the assignment writes them."""
    exits, long = [], []
    for path in HERE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                assert not {getattr(b, "id", None) for b in node.bases} & {"SystemExit", "BaseException"}, node.name
            if isinstance(node, ast.Raise) and "SystemExit" in ast.unparse(node) or (
                    isinstance(node, ast.Call) and ast.unparse(node.func) == "sys.exit"):
                exits.append(f"{path.name}:{node.lineno}")
            if isinstance(node, (ast.FunctionDef, ast.Lambda)):
                a = node.args
                if len(a.posonlyargs + a.args + a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg) > 7:
                    long.append(f"{path.name}:{getattr(node, 'name', 'lambda')}")
    assert len(exits) == 1 and exits[0].startswith("common.py") and not long, (exits, long)
    import inspect
    for fn in (train.train_heatmap_model, train.train_regression_model):
        assert list(inspect.signature(fn).parameters)[:4] == ["model", "train_loader", "val_loader", "num_epochs"]


def test_every_script_stops_in_one_line_on_a_missing_data_dir(tmp_path):
    procs = {s: _script(s, "--data-dir", str(tmp_path / "none")) for s in SCRIPTS if s not in ("dataset", "report")}
    for proc in procs.values():
        _one_line_exit_1(proc, "no train_annotations.json in")


@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train.main(["--data-dir", str(tiny_data), "--out-dir", str(out), "--epochs", "1", "--precision", "fp32",
                "--methods", "heatmap"])
    return out


@pytest.mark.parametrize("config,match", [({"dropout": 0.5}, "unexpected keyword"), ({"hm_size": 33}, "hm_size")])
def test_a_checkpoint_whose_config_does_not_build_a_model(tiny_data, tmp_path, config, match):
    model = HeatmapNet()
    model.method = "heatmap"
    model.kwargs = {**model.kwargs, **config}
    save_checkpoint(tmp_path / "x.pth", model)
    with pytest.raises(UsageError, match=rf"x.pth: its config .* does not build a 'heatmap' model .*{match}"):
        evaluate.main(["--data-dir", str(tiny_data), "--checkpoint", str(tmp_path / "x.pth")])


def test_a_symlink_loop_as_out_dir(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(UsageError, match="cannot be resolved|cannot write results"):
        train.main(["--out-dir", str(tmp_path / "a"), "--epochs", "1"])


def test_a_refused_write_is_one_line_and_leaves_no_temp_file(tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(UsageError, match="cannot write .*blocker/x.json"):
        common.write_json(tmp_path / "blocker" / "x.json", {})
    doc = tmp_path / "report.md"
    doc.write_text("the last complete report\n")
    code = (f"import resource, sys; sys.path.insert(0, {str(HERE)!r}); import common\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))\n"
            f"common.run_cli(lambda: common.write_text({str(doc)!r}, 'x' * 20000))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "File too large" in proc.stderr
    assert doc.read_text() == "the last complete report\n" and [p.name for p in tmp_path.iterdir()] == ["blocker",
                                                                                                      "report.md"]


def test_scores_that_cannot_be_written_are_refused_before_scoring(run_dir, tiny_data, tmp_path, monkeypatch):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    monkeypatch.setattr(evaluate, "load_checkpoint", lambda *a, **k: pytest.fail("scored before the write check"))
    with pytest.raises(UsageError, match="cannot write .*blocker/m.json: its folder is not writable"):
        evaluate.main(["--data-dir", str(tiny_data), "--checkpoint", str(run_dir / "heatmap_model.pth"),
                       "--metrics-out", str(tmp_path / "blocker" / "m.json")])


def test_results_json_of_the_wrong_shape_names_its_file(run_dir, tiny_data, tmp_path):
    results = report.load_results(common.RESULTS_DIR)
    results["study"]["readouts"]["readouts"]["gap_fc"]["per_seed"][0]["px"] = "13.5"
    with pytest.raises(UsageError, match=r"\{\{ro:gap_fc:px\}\} .* in results/study_results.json"):
        report.render("{{ro:gap_fc:px}}", results)
    (tmp_path / "metrics.json").write_text("[]")
    with pytest.raises(UsageError, match="metrics.json holds a JSON list, not an object"):
        report.load_results(tmp_path)
    with pytest.raises(UsageError, match="timings.json: the entry of train.py lacks its seconds"):
        common.main_time({"train.py": {"seconds": None, "machine": {}}})
    log = json.loads((run_dir / "training_log.json").read_text())
    (run_dir / "training_log.json").write_text(json.dumps({**log, "config": []}))
    try:
        with pytest.raises(UsageError, match="training_log.json: 'config' is not an object"):
            evaluate.main(["--data-dir", str(tiny_data), "--out-dir", str(run_dir)])
    finally:
        (run_dir / "training_log.json").write_text(json.dumps(log))


def test_sigterm_of_a_jobs_2_study_is_one_line(tiny_data, tmp_path):
    proc = _script("study", "--data-dir", str(tiny_data), "--out-dir", str(tmp_path), "--jobs", "2", "--studies",
                   "hand_loss", "--seeds", "0")
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("runs/*/resume.pth")):  # workers are training
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _one_line_exit_1(proc, "interrupted (SIGTERM)")
    assert not list(tmp_path.rglob(".*.tmp*"))
