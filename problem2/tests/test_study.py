import pytest
import torch

import study
import train
from runs import run_many
from train import make_recipe
import common
import readouts
from dataset import data_fingerprint
from common import read_json, recipe_key


def test_paired_difference_interval():
    d = common.paired_difference([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])        # differences 1, 2, 3
    assert d["diff"] == 2.0 and d["n"] == 3
    half = 4.303 * 1.0 / 3 ** 0.5
    assert abs(d["ci95"][0] - (2 - half)) < 1e-9 and abs(d["ci95"][1] - (2 + half)) < 1e-9
    assert common.paired_difference([1.0], [3.0]) == {"diff": 2.0, "ci95": None, "n": 1}


def test_reference_rows(tiny_data, tiny_shifted):
    ref = readouts.reference_rows(tiny_data, tiny_shifted)
    mean, centre = ref["mean_pose"], ref["centre_plus_mean_offsets"]
    assert mean["spread_ratio"] == 0.0 and centre["spread_ratio"] > 0.5
    assert centre["px_head_feet"] < 0.5 * mean["px_head_feet"]    # knowing where the figure is fixes head and feet
    assert centre["px_shifted"] < 0.5 * mean["px_shifted"]


def test_readout_study_on_tiny_data(tiny_data, tiny_shifted, tmp_path, monkeypatch):
    shifted = tiny_shifted
    sec = readouts.study_readouts(tiny_data, tmp_path, seeds=(0,), epochs=1, log=lambda *a: None,
                                  shifted_dir=shifted)
    assert set(sec["readouts"]) == set(readouts.READOUTS)
    for name, r in sec["readouts"].items():
        (row,) = r["per_seed"]
        assert r["complete"] and row["seed"] == 0 and r["params"] > 0
        assert {"px", "px_sym", "px_head_feet", "px_hands_sym", "px_shifted", "pck_bbox", "pck_bbox_sym",
                "spread_ratio", "best_epoch", "by_val_px", "train_seconds"} <= set(row)
        assert row["px_sym"] <= row["px"] + 1e-9
        sel = sec["selection"][name]                            # val-px rule minus val-loss rule, one seed
        assert sel["n"] == 1 and sel["diff"] == row["by_val_px"]["px"] - row["px"]
        assert sec["shift"][name]["diff"] == row["px_shifted"] - row["px"]    # shifted minus in-range test px
    assert all(s["px_valpx"]["n"] == 1 for s in sec["steps"])
    assert (tmp_path / "visualizations" / "study_readouts.png").exists()
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("a stored run was retrained"))
    sec2 = readouts.study_readouts(tiny_data, tmp_path, seeds=(0,), epochs=1, log=lambda *a: None,
                                   shifted_dir=shifted)
    assert sec2["readouts"] == sec["readouts"]                                 # every run reused


def test_jobs_give_the_same_numbers_as_a_sequential_run(tiny_data, tmp_path):
    """--jobs 2 (one thread each) equals a sequential run with one thread: the same seeds, the same numbers."""
    data = data_fingerprint(tiny_data)
    recipes = [make_recipe(m, data, seed=s, epochs=1, precision="fp32") for m in ("regression", "softargmax_8")
               for s in (0, 1)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seq = run_many(recipes, tiny_data, tmp_path / "seq", train.train_recipe, jobs=1, log=lambda *a: None)
    finally:
        torch.set_num_threads(threads)
    par = run_many(recipes, tiny_data, tmp_path / "par", train.train_recipe, jobs=2, log=lambda *a: None)
    assert seq.keys() == par.keys()
    for key in seq:
        assert seq[key][1]["val_loss"] == par[key][1]["val_loss"]
        assert [e["val_loss"] for e in seq[key][0]["history"]["epochs"]] == \
            [e["val_loss"] for e in par[key][0]["history"]["epochs"]]


def test_store_studies_share_runs_and_need_no_checkpoints(tiny_data, tiny_shifted, tmp_path, monkeypatch):
    """hand_loss and seeds train through the run store; the seeds study reuses the readout study's runs (same
    recipe), --partial trains nothing and leaves a section out. Numbers come from the committed eval.json: gone
    checkpoints retrain nothing."""
    from runs import run_dir_of
    shifted = tiny_shifted
    real_spec_recipe = study.spec_recipe
    monkeypatch.setattr(study, "shifted_test_dir", lambda: shifted)
    monkeypatch.setattr(study, "spec_recipe", lambda m, kp, seed=0, **kw: train.make_recipe(
        m, data_fingerprint(kp), seed, 1, precision="fp32", **kw))
    quiet = dict(log=lambda *a: None)
    assert study.study_seeds(tiny_data, tmp_path, seeds=(0, 1), partial=True, **quiet) is None
    assert not (tmp_path / "runs").exists()
    data = data_fingerprint(tiny_data)
    readout_of = {m: r for r, (m, _) in readouts.READOUTS.items()}
    for m in study.METHODS:  # the real recipes: the seeds study's runs are the readout study's
        assert real_spec_recipe(m, tiny_data, 1) == readouts.readout_recipe(readout_of[m], data, 1)
    stored = run_many([make_recipe(m, data, s, 1, precision="fp32") for m in study.METHODS for s in (0, 1)],
                      tiny_data, tmp_path / "runs", train.train_recipe, shifted, log=lambda *a: None)
    runs_root = tmp_path / "runs"
    hl = study.study_hand_loss(tiny_data, tmp_path, (0, 1), epochs=1, **quiet)
    assert hl["rows"]["regression_strict"][1]["run"] == run_dir_of(runs_root, make_recipe(      # the stored run
        "regression", data, 1, 1, precision="fp32")).name
    assert {len(v) for v in hl["rows"].values()} == {2} and len(hl["rows"]) == 2 * len(study.METHODS)
    pair, rows = hl["paired"]["integral"], hl["rows"]
    by_hand = sum(rows["integral_symmetric"][s]["px_hands_sym"] - rows["integral_strict"][s]["px_hands_sym"]
                  for s in (0, 1)) / 2                                           # symmetric minus strict, per seed
    assert pair["seeds"] == [0, 1] and abs(pair["px_hands_sym"]["diff"] - by_hand) < 1e-12
    assert pair["pck_bbox_sym"]["n"] == 2 and pair["pck_bbox_sym"]["ci95"] is not None
    from model import HeatmapNet, load_checkpoint
    assert isinstance(load_checkpoint(tmp_path / "heatmap_symmetric_model.pth", method="heatmap")[0], HeatmapNet)
    for ckpt in runs_root.glob("*/*.pth"):  # a fresh clone: eval.json only
        ckpt.unlink()
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("a stored run was retrained"))
    res = study.study_seeds(tiny_data, tmp_path, seeds=(0, 1), **quiet)               # stored by run_many above
    ev = {m: stored[recipe_key(make_recipe(m, data, 1, 1, precision="fp32"))][1] for m in study.METHODS}
    assert abs(res["per_seed"]["heatmap"][1]["mean_px_error"] - ev["heatmap"]["val_loss"]["brief"]["px"]) < 1e-9
    pair = res["paired_over_seeds"]["heatmap-regression"]["mean_px_error"]
    per = res["per_seed"]
    assert pair["n"] == 2 and abs(pair["diff"] - sum(per["heatmap"][s]["mean_px_error"] -
                                                     per["regression"][s]["mean_px_error"] for s in (0, 1)) / 2) < 1e-12


def test_fixed_step_epochs_and_data_study(tiny_data, tiny_shifted, tmp_path):
    assert study.fixed_step_epochs(1000) == 30 and study.fixed_step_epochs(500) == 60
    assert study.fixed_step_epochs(125) == 240 and study.fixed_step_epochs(250) == 120   # 960 steps each
    res = study.study_data(tiny_data, tmp_path, seeds=(0,), sizes=[32], epochs=1, log=lambda *a: None,
                           shifted_dir=tiny_shifted)
    assert res["epochs"] == {"32": 2, "48": 1}                                          # 2 x 1 batch = 1 x 2 batches
    assert set(res["rows"]) == set(study.METHODS) and set(res["rows"]["heatmap"]) == {"32", "48"}
    small, full = (res["rows"]["heatmap"][n][0] for n in ("32", "48"))
    to_full = res["paired_to_full"]["heatmap"]
    assert list(to_full) == ["32"] and to_full["32"]["seeds"] == [0]                    # smaller set minus full set
    assert to_full["32"]["px"]["diff"] == pytest.approx(small["px"] - full["px"])
    # the 32-image run validates at the same optimisation steps as the full set: every 2nd of its 2 epochs
    run = read_json(tmp_path / "runs" / small["run"] / "run.json")
    assert run["recipe"]["val_every"] == 2 and run["recipe"]["num_train"] == 32
    assert res["precision"] == run["recipe"]["precision"] == study.DATA_PRECISION == "bf16"  # every run of it
    assert {read_json(p)["recipe"]["precision"] for p in tmp_path.glob("runs/*/run.json")} == {"bf16"}
    assert [e["val_loss"] is None for e in run["history"]["epochs"]] == [True, False]
    assert run["history"]["best_epoch"] == 2
    assert "val_every" not in make_recipe("heatmap", data_fingerprint(tiny_data))          # stored keys unchanged
    assert (tmp_path / "visualizations" / "study_data_steps.png").stat().st_size > 10_000


def test_main_partial_keeps_sections_whose_runs_are_missing(tiny_data, tmp_path, capsys):
    """study.py --partial on an empty store trains nothing and leaves the previous sections untouched."""
    import json
    (tmp_path / "study_results.json").write_text(json.dumps({"seeds": {"kept": True}}))
    study.main(["--data-dir", str(tiny_data), "--out-dir", str(tmp_path), "--studies", "seeds", "--partial"])
    assert "seeds: not all of its runs are stored yet" in capsys.readouterr().out
    assert json.loads((tmp_path / "study_results.json").read_text())["seeds"] == {"kept": True}
    assert not list((tmp_path).glob("runs/*/run.json"))


def _children(pid):
    """pids whose parent is `pid` (Linux /proc)."""
    from pathlib import Path
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _running(pid):
    """True while `pid` exists and is not a zombie."""
    from pathlib import Path
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killing_run_many_stops_its_workers(tiny_data, tmp_path):
    """SIGTERM to a `--jobs 2` driver terminates its worker processes too (they used to train on as orphans)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path
    if not Path("/proc").exists():
        pytest.skip("the check reads /proc (Linux); the behaviour itself is platform-independent")
    here = Path(__file__).resolve().parents[1]
    code = (f"import sys; sys.path.insert(0, {str(here)!r})\n"
            "from dataset import data_fingerprint\nfrom train import make_recipe, train_recipe\nfrom runs import run_many\n"
            "if __name__ == '__main__':\n"
            f"    kp = {str(tiny_data)!r}\n"
            "    rs = [make_recipe('heatmap', data_fingerprint(kp), s, 50, precision='fp32') for s in (0, 1)]\n"
            f"    run_many(rs, kp, {str(tmp_path / 'runs')!r}, train_recipe, jobs=2, log=lambda *a: None)\n")
    script = tmp_path / "driver.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(tmp_path.glob("runs/*/.lock")):  # workers started training
            time.sleep(0.5)
        workers += _children(proc.pid)
        assert len(workers) >= 2, "the driver did not start its workers"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        deadline = time.time() + 30
        while time.time() < deadline and any(_running(w) for w in workers):
            time.sleep(0.5)
        alive = [w for w in workers if _running(w)]
        assert not alive, f"workers still running after the driver was killed: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers + _children(proc.pid):  # never leave a training process behind, pass or fail
            try:
                os.kill(w, signal.SIGKILL)
            except OSError:
                pass


def test_precision_pairs_stored_runs_that_differ_only_in_precision(tiny_data, tiny_shifted, tmp_path, monkeypatch):
    """study_precision trains nothing and pairs exactly the stored runs whose recipes differ only in precision."""

    data = data_fingerprint(tiny_data)
    quiet = lambda *a: None  # noqa: E731
    recipes = [make_recipe("regression", data, seed=0, epochs=1, precision=p) for p in ("fp32", "bf16")]
    recipes.append(make_recipe("regression", data, seed=1, epochs=1, precision="fp32"))    # no bf16 partner
    recipes.append(make_recipe("regression", data, seed=1, epochs=2, precision="bf16"))    # differs in epochs too
    done = run_many(recipes, tiny_data, tmp_path / "runs", train.train_recipe, tiny_shifted, log=quiet)
    stored = {p: p.read_bytes() for p in (tmp_path / "runs").glob("*/*")}
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("study_precision trained a run"))
    sec = study.study_precision(tiny_data, tmp_path, log=quiet, shifted_dir=tiny_shifted)
    assert {p: p.read_bytes() for p in (tmp_path / "runs").glob("*/*")} == stored           # nothing written
    (pair,) = sec["pairs"]
    assert pair["label"] == "regression epochs=1, seed 0"
    fp32, bf16 = (done[recipe_key(r)][1]["val_loss"]["brief"]["px"] for r in recipes[:2])
    assert (pair["fp32"]["px"], pair["bf16"]["px"]) == (fp32, bf16)
    assert (pair["fp32"]["machine"]["precision"], pair["bf16"]["machine"]["precision"]) == ("fp32", "bf16")
    assert sec["paired"]["n"] == 1 and sec["paired"]["px"] == {"diff": bf16 - fp32, "ci95": None, "n": 1}
    empty = study.study_precision(tiny_data, tmp_path / "none", log=quiet, shifted_dir=tiny_shifted)
    assert empty["pairs"] == [] and empty["paired"]["px"]["diff"] is None


def test_recipe_label_names_what_differs_from_the_spec_recipe(tiny_data):
    data = data_fingerprint(tiny_data)
    assert study.recipe_label(make_recipe("heatmap", data, 2, precision="bf16")) == "heatmap, seed 2"
    hm32 = make_recipe("heatmap", data, 0, heatmap_size=32, sigma=1.0, model_kwargs={"skip": False})
    assert study.recipe_label(hm32) == "heatmap skip=False hm_size=32 sigma=1.0, seed 0"
    assert study.recipe_label(make_recipe("integral", data, 0, heatmap_size=32, hand_loss="symmetric")) == \
        "integral hm_size=32 hand_loss=symmetric, seed 0"
