import torch

import study
from dataset import figure_centre
from runs import run_many
from train import make_recipe
import readouts
from dataset import data_fingerprint


def test_distance_from_training_range_known_values():
    kp = torch.zeros(3, 5, 2)
    kp[:, 0] = torch.tensor([[64.0, 44.0], [30.0, 44.0], [64.0, 70.0]])   # centres (64,64), (30,64), (64,90)
    assert figure_centre(kp)[1].tolist() == [30.0, 64.0]
    assert study.distance_from_training_range(kp).tolist() == [0.0, 10.0, 2.0]


def test_paired_difference_interval():
    d = readouts.paired_difference([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])        # differences 1, 2, 3
    assert d["diff"] == 2.0 and d["n"] == 3
    half = 4.303 * 1.0 / 3 ** 0.5
    assert abs(d["ci95"][0] - (2 - half)) < 1e-9 and abs(d["ci95"][1] - (2 + half)) < 1e-9
    assert readouts.paired_difference([1.0], [3.0]) == {"diff": 2.0, "ci95": None, "n": 1}


def test_reference_rows(tiny_data):
    from dataset import shifted_test_dir
    ref = readouts.reference_rows(tiny_data, shifted_test_dir(tiny_data.parent / "shifted", 16))
    mean, centre = ref["mean_pose"], ref["centre_plus_mean_offsets"]
    assert mean["spread_ratio"] == 0.0 and centre["spread_ratio"] > 0.5
    assert centre["px_head_feet"] < 0.5 * mean["px_head_feet"]    # knowing where the figure is fixes head and feet
    assert centre["px_shifted"] < 0.5 * mean["px_shifted"]


def test_readout_study_on_tiny_data(tiny_data, tmp_path):
    seconds = {"used": 0.0, "now": 0.0}
    from dataset import shifted_test_dir
    shifted = shifted_test_dir(tiny_data.parent / "shifted", 16)
    sec = readouts.study_readouts(tiny_data, tmp_path, seconds, seeds=(0,), epochs=1, log=lambda *a: None,
                                  shifted_dir=shifted)
    assert set(sec["readouts"]) == set(readouts.READOUTS)
    for name, r in sec["readouts"].items():
        (row,) = r["per_seed"]
        assert r["complete"] and row["seed"] == 0 and r["params"] > 0
        assert {"px", "px_sym", "px_head_feet", "px_hands_sym", "px_shifted", "pck_bbox", "pck_bbox_sym",
                "spread_ratio", "best_epoch", "by_val_px", "train_seconds"} <= set(row)
        assert row["px_sym"] <= row["px"] + 1e-9
    assert seconds["now"] == seconds["used"] > 0
    assert (tmp_path / "visualizations" / "study_readouts.png").exists()
    again = {"used": 0.0, "now": 0.0}
    sec2 = readouts.study_readouts(tiny_data, tmp_path, again, seeds=(0,), epochs=1, log=lambda *a: None,
                                   shifted_dir=shifted)
    assert again["now"] == 0 and sec2["readouts"] == sec["readouts"]           # every run reused


def test_jobs_give_the_same_numbers_as_a_sequential_run(tiny_data, tmp_path):
    """--jobs 2 (one thread each) equals a sequential run with one thread: the same seeds, the same numbers."""
    data = data_fingerprint(tiny_data)
    recipes = [make_recipe(m, data, seed=s, epochs=1, precision="fp32") for m in ("regression", "softargmax_8")
               for s in (0, 1)]
    torch.set_num_threads(1)
    try:
        seq = run_many(recipes, tiny_data, tmp_path / "seq", jobs=1, log=lambda *a: None)
    finally:
        torch.set_num_threads(2)
    par = run_many(recipes, tiny_data, tmp_path / "par", jobs=2, log=lambda *a: None)
    assert seq.keys() == par.keys()
    for key in seq:
        assert seq[key][1]["val_loss"] == par[key][1]["val_loss"]
        assert [e["val_loss"] for e in seq[key][0]["history"]["epochs"]] == \
            [e["val_loss"] for e in par[key][0]["history"]["epochs"]]


def test_old_study_runs_are_reused_only_for_their_recipe(tiny_data, tmp_path):
    """study.ensure_run: a seed-0 run in the seed-1 folder is retrained, and the message says why."""
    import json
    import train
    train.main(["--data-dir", str(tiny_data), "--out-dir", str(tmp_path / "seed1"), "--epochs", "1",
                "--precision", "fp32", "--methods", *study.METHODS])
    logs, seconds = [], {"used": 0.0, "now": 0.0}
    study.ensure_run(tmp_path / "seed1", ["--epochs", "1", "--precision", "fp32", "--seed", "1"], tiny_data, seconds,
                     logs.append)
    assert "differs in seed" in logs[0] and seconds["now"] > 0
    assert json.loads((tmp_path / "seed1" / "training_log.json").read_text())["heatmap"]["recipe"]["seed"] == 1
    logs = []
    study.ensure_run(tmp_path / "seed1", ["--epochs", "1", "--precision", "fp32", "--seed", "1"], tiny_data, seconds,
                     logs.append)
    assert "same recipe, reusing" in logs[0]


def test_fixed_step_epochs_and_budget_study(tiny_data, tmp_path):
    assert study.fixed_step_epochs(1000) == 30 and study.fixed_step_epochs(500) == 60
    assert study.fixed_step_epochs(125) == 240 and study.fixed_step_epochs(250) == 120   # 960 steps each
    from dataset import shifted_test_dir
    seconds = {"used": 0.0, "now": 0.0}
    res = study.study_budget(tiny_data, tmp_path, seconds, seeds=(0,), sizes=[32], long_epochs=1, epochs=1,
                             log=lambda *a: None, shifted_dir=shifted_test_dir(tiny_data.parent / "shifted", 16))
    assert res["data_steps"]["epochs"] == {32: 2, 48: 1}                                 # 2 x 1 batch = 1 x 2 batches
    assert set(res["long"]) == set(study.METHODS) and set(res["data_steps"]["rows"]["heatmap"]) == {"32", "48"}
    assert seconds["now"] == seconds["used"] > 0
