from dataclasses import replace

import numpy as np
import pytest
import torch

import study
import train
from runs import Store, run_many
from train import make_recipe
import common
from codec import DECODERS
from dataset import data_fingerprint
from evaluate import summarize
from common import recipe_key
from conftest import child_pids, is_running


def test_paired_difference_interval():
    d = common.paired_difference([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])        # differences 1, 2, 3
    assert d["diff"] == 2.0 and d["n"] == 3
    half = 4.303 * 1.0 / 3 ** 0.5
    assert abs(d["ci95"][0] - (2 - half)) < 1e-9 and abs(d["ci95"][1] - (2 + half)) < 1e-9
    assert common.paired_difference([1.0], [3.0]) == {"diff": 2.0, "ci95": None, "n": 1}


def test_reference_rows(tiny_data, tiny_shifted):
    ref = study.reference_rows(tiny_data, tiny_shifted)
    mean, centre = ref["mean_pose"], ref["centre_plus_mean_offsets"]
    assert mean["spread_ratio"] == 0.0 and centre["spread_ratio"] > 0.5
    assert centre["px_head_feet"] < 0.5 * mean["px_head_feet"]    # knowing where the figure is fixes head and feet
    assert centre["px_shifted"] < 0.5 * mean["px_shifted"]


def test_readout_study_on_tiny_data(tiny_data, tiny_shifted, tmp_path, monkeypatch):
    shifted = tiny_shifted
    figs, real = {}, study.save_figure
    monkeypatch.setattr(study, "save_figure", lambda fig, path: (figs.__setitem__(path.name, fig), real(fig, path)))
    store = Store(tmp_path, tiny_data, train.train_recipe, shifted, log=lambda *a: None)
    sec = study.study_readouts(store, seeds=(0,), epochs=1)
    assert set(sec["readouts"]) == set(study.READOUTS)
    for name, r in sec["readouts"].items():
        (row,) = r["per_seed"]
        assert r["complete"] and row["seed"] == 0 and r["params"] > 0
        assert {"px", "px_sym", "px_head_feet", "px_hands_sym", "px_shifted", "pck_bbox", "pck_torso_sym",
                "spread_ratio", "best_epoch", "train_seconds"} <= set(row)
        assert row["px_sym"] <= row["px"] + 1e-9
        assert sec["shift"][name]["diff"] == row["px_shifted"] - row["px"]    # shifted minus in-range test px
    step = next(s for s in sec["steps"] if (s["from"], s["to"]) == ("gap_fc", "heatmap_64"))
    rows = {r: sec["readouts"][r]["per_seed"][0] for r in ("gap_fc", "heatmap_64")}
    assert step["seeds"] == [0] and step["pck_bbox"]["n"] == 1
    assert step["pck_bbox"]["diff"] == rows["heatmap_64"]["pck_bbox"]["0.05"] - rows["gap_fc"]["pck_bbox"]["0.05"]
    assert (tmp_path / "visualizations" / "study_readouts.png").exists()
    fig = figs["study_readouts.png"]                                   # what a reader of the figure sees
    assert [ax.get_title() for ax in fig.axes] == ["PCK@0.05, hands as labelled (higher is better)",
                                                   "mean error, hands as labelled (px, log scale; lower is better)"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(study.READOUT_LABELS.values())
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "mean pose (no training)", "true centre + mean offsets (no training)"]
    assert fig.axes[0].get_ylabel() == "PCK@0.05 (test)" and fig.axes[1].get_ylabel().startswith("mean error (px")
    assert "up to 1" in fig._suptitle.get_text()
    ladder = figs["study_ladder.png"].axes[0]                           # Table C1 as a figure
    assert ladder.get_title().startswith("From RegressionNet (step 0) to HeatmapNet (step 6)")
    assert [t.get_text() for t in ladder.get_xticklabels()] == [f"{i}: {study.LADDER_TICKS[n]}"
                                                               for i, (n, _) in enumerate(study.LADDER)]
    assert [t.get_text() for t in ladder.get_legend().get_texts()] == ["test split", "shifted figures"]
    assert len(ladder.patches) == 2 * len(study.LADDER)                # a test and a shifted bar per step
    means = [float(np.mean([x["pck_bbox"]["0.05"] for x in sec["readouts"][n]["per_seed"]])) for n, _ in study.LADDER]
    assert [p.get_height() for p in ladder.patches[:len(study.LADDER)]] == pytest.approx(means)  # test-split bars
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("a stored run was retrained"))
    sec2 = study.study_readouts(store, seeds=(0,), epochs=1)
    assert sec2["readouts"] == sec["readouts"]                                 # every run reused


def test_jobs_give_the_same_numbers_as_a_sequential_run(tiny_data, tmp_path):
    """--jobs 2 (one thread each) equals a sequential run with one thread: the same seeds, the same numbers."""
    data = data_fingerprint(tiny_data)
    recipes = [make_recipe(m, data, seed=s, epochs=1, precision="fp32") for m in ("regression", "softargmax_8")
               for s in (0, 1)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seq = run_many(recipes, Store(tmp_path / "seq", tiny_data, train.train_recipe, jobs=1, log=lambda *a: None))
    finally:
        torch.set_num_threads(threads)
    par = run_many(recipes, Store(tmp_path / "par", tiny_data, train.train_recipe, jobs=2, log=lambda *a: None))
    assert seq.keys() == par.keys()
    for info, ev in seq.values():                                       # eval.json: one checkpoint, one record shape
        assert ev["eval_key"]["version"] == 2 and ev["epoch"] == info["history"]["best_epoch"]
        assert ev["decoder"] == "direct" and set(ev["val"]) == set(ev["test"]) == {"direct"}
        assert ev["test"]["direct"].keys() == ev["val"]["direct"].keys() == summarize(*[torch.zeros(1, 5, 2)] * 2).keys()
        assert "shifted" not in ev                                     # no shifted test set was given
    for key in seq:
        assert seq[key][1]["test"] == par[key][1]["test"]
        assert [e["val_loss"] for e in seq[key][0]["history"]["epochs"]] == \
            [e["val_loss"] for e in par[key][0]["history"]["epochs"]]


def test_store_studies_share_runs_and_need_no_checkpoints(tiny_data, tiny_shifted, tmp_path, monkeypatch):
    """hand_loss trains through the run store and shares its runs (same recipe); --partial trains nothing. Numbers
    come from the committed eval.json: gone checkpoints retrain nothing."""
    from runs import run_dir_of
    store = Store(tmp_path, tiny_data, train.train_recipe, tiny_shifted, log=lambda *a: None)
    empty = study.study_hand_loss(replace(store, partial=True), (0, 1), epochs=1)
    assert empty["rows"] == {} and empty["paired"]["heatmap"]["px"]["diff"] is None
    assert not (tmp_path / "runs").exists()
    data = data_fingerprint(tiny_data)
    stored = run_many([make_recipe(m, data, seed=s, epochs=1, precision="fp32") for m in study.METHODS
                       for s in (0, 1)], store)
    runs_root = tmp_path / "runs"
    hl = study.study_hand_loss(store, (0, 1), epochs=1)
    assert hl["rows"]["regression_strict"][1]["run"] == run_dir_of(runs_root, make_recipe(      # the stored run
        "regression", data, seed=1, epochs=1, precision="fp32")).name
    assert {len(v) for v in hl["rows"].values()} == {2}
    assert set(hl["rows"]) == {f"{m}_{loss}" for m in study.METHODS for loss in ("strict", "symmetric")} | {
        f"{m}_{rule}" for m in study.LAST_EPOCH_RERUN for rule in ("strict", "strict_last")} | {
        f"{m}_symmetric_last" for m in study.METHODS}
    last = hl["rows"]["integral_strict_last"]                        # IntegralNet as labelled, its last epoch kept
    assert [x["best_epoch"] for x in last] == [1, 1] and last[0]["run"] != hl["rows"]["integral_strict"][0]["run"]
    step6 = hl["ladder_last"]["heatmap_64"]                          # the targets at the last epoch
    assert step6["from"] == "integral_64" and step6["pck_bbox"]["n"] == 2
    for rule in study.LAST_RULES:                                    # Section 4 at the last epoch, both losses
        assert hl["integral_minus_regression"][rule]["pck_bbox"]["n"] == 2
        assert hl["heatmap_minus_integral"][rule]["pck_bbox_sym"]["n"] == 2
    assert hl["heatmap_minus_integral"]["strict_last"] == {k: v for k, v in hl["ladder_last"]["heatmap_64"].items()
                                                           if k != "from"}   # the targets at the last epoch, both ways
    assert hl["last_minus_best"]["softargmax_8"]["px"]["n"] == 2
    for m in study.PROBED:                               # where the hands land, at both epoch rules
        for key in ("placement", "placement_last"):
            assert [p["seed"] for p in hl[key][m]] == [0, 1] and all(
                p["images"] > 0 and sum(p[k] for k in ("on_a_hand", "near_midpoint", "elsewhere")) == pytest.approx(1)
                for p in hl[key][m])
    pair, rows = hl["paired"]["integral"], hl["rows"]
    by_hand = sum(rows["integral_symmetric"][s]["px_hands_sym"] - rows["integral_strict"][s]["px_hands_sym"]
                  for s in (0, 1)) / 2                                           # symmetric minus strict, per seed
    assert pair["seeds"] == [0, 1] and abs(pair["px_hands_sym"]["diff"] - by_hand) < 1e-12
    assert pair["pck_bbox_sym"]["n"] == 2 and pair["pck_bbox_sym"]["ci95"] is not None
    for ckpt in runs_root.glob("*/*.pth"):  # a fresh clone: eval.json only
        ckpt.unlink()
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("a stored run was retrained"))
    assert all(set(hl["readouts_probed"][m]) == {"mean", *DECODERS} for m in study.PROBED)  # each map read both ways
    assert hl["peak_minus_mean"]["quarter"]["pck_bbox"]["n"] == 2 and hl["targets_at_peak"]["argmax"]["px"]["n"] == 2
    assert hl["targets_at_mean"]["pck_bbox"]["n"] == 2
    again = study.study_hand_loss(store, (0, 1), epochs=1)                      # partial=False
    assert again["rows"] == hl["rows"] and again["placement"] == hl["placement"]  # read from probe.json
    assert again["readouts_probed"] == hl["readouts_probed"]
    probed = run_dir_of(runs_root, make_recipe("integral", data, seed=0, epochs=1, precision="fp32"))
    (probed / "probe.json").unlink()                          # neither probe nor checkpoint: retrained, probed again
    monkeypatch.undo()
    study.study_hand_loss(store, (0, 1), epochs=1)
    assert (probed / "probe.json").exists() and (probed / "model.pth").exists()
    ev = stored[recipe_key(make_recipe("regression", data, seed=0, epochs=1, precision="fp32"))][1]
    assert ev["shifted"].keys() == ev["test"]["direct"].keys()            # the default decoder on the shifted set
    assert hl["rows"]["regression_strict"][0]["px_shifted"] == ev["shifted"]["px"]


def test_main_partial_trains_nothing(tiny_data, tmp_path):
    """study.py --partial on an empty store trains nothing and writes every section from what is stored (nothing)."""
    import json
    study.main(["--data-dir", str(tiny_data), "--out-dir", str(tmp_path), "--partial"])
    res = json.loads((tmp_path / "study_results.json").read_text())
    assert set(res) == set(study.STUDIES) and not list(tmp_path.glob("runs/*/run.json"))
    assert not any(r["complete"] or r["per_seed"] for r in res["readouts"]["readouts"].values())


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
            "from dataset import data_fingerprint\nfrom train import make_recipe, train_recipe\n"
            "from runs import Store, run_many\n"
            "if __name__ == '__main__':\n"
            f"    kp = {str(tiny_data)!r}\n"
            "    rs = [make_recipe('heatmap', data_fingerprint(kp), seed=s, epochs=50, precision='fp32')\n"
            "          for s in (0, 1)]\n"
            f"    run_many(rs, Store({str(tmp_path)!r}, kp, train_recipe, jobs=2, log=lambda *a: None))\n")
    script = tmp_path / "driver.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(tmp_path.glob("runs/*/.lock")):  # workers started training
            time.sleep(0.5)
        workers += child_pids(proc.pid)
        assert len(workers) >= 2, "the driver did not start its workers"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        deadline = time.time() + 30
        while time.time() < deadline and any(is_running(w) for w in workers):
            time.sleep(0.5)
        alive = [w for w in workers if is_running(w)]
        assert not alive, f"workers still running after the driver was killed: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers + child_pids(proc.pid):  # never leave a training process behind, pass or fail
            try:
                os.kill(w, signal.SIGKILL)
            except OSError:
                pass


def test_the_report_tables_rows_are_stored_steps():
    """Table C1 (LADDER) goes from RegressionNet to HeatmapNet, each row one STEP from the row above; Table C6
    (POSITION_ROWS) pairs each row with RegressionNet: every difference they print is one the study stores."""
    steps = {(a, b) for a, b, _ in study.STEPS}
    names = [n for n, _ in study.LADDER]
    assert names[0] == "gap_fc" and names[-1] == "heatmap_64" and set(names) <= set(study.READOUTS)
    assert all((a, b) in steps for a, b in zip(names, names[1:]))
    assert all(("gap_fc", n) in steps for n, _ in study.POSITION_ROWS if n != "gap_fc")
    assert ("gap_fc_wide", "flatten_fc") in steps   # the parameter-matched comparison Section 4 quotes
