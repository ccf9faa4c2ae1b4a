import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import common
import train
from codec import decode
from common import UsageError, autocast, pick_precision, prepare_input
from dataset import load_split, make_loader
from model import HeatmapNet, RegressionNet


def test_one_batch_overfit_heatmap(tiny_data):
    """Targets, loss and decoding agree: the spec HeatmapNet fits 2 images to about 1 px (image space).
    Measured here (fp32, AVX2 CPU): 1.2 px after 150 steps, 1.0 px after 200-250."""
    torch.manual_seed(0)
    ds = load_split(tiny_data, "train", "heatmap")
    images, targets, kp = prepare_input(ds.images[:2], "cpu"), ds.targets[:2], ds.keypoints[:2]
    precision = pick_precision("auto", "cpu")
    model = HeatmapNet().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(300):
        with autocast("cpu", precision):
            out = model(images)
        loss = F.mse_loss(out.float(), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 24:
            err = (decode("heatmap", out.detach().float()) - kp).norm(dim=-1).mean()
            if err < 1.0:
                break
    assert err < 1.25, f"pixel error {err:.2f} after {step + 1} steps"


LOG_EPOCH_KEYS = {"epoch", "train_loss", "val_loss", "val_px_error", "seconds"}
RECIPE_KEYS = {"method", "model", "target", "epochs", "lr", "batch_size", "seed", "hand_loss", "canonical_hands",
               "num_train", "precision", "data"}


def _run(tiny_data, out_dir, *extra):
    return train.main(["--data-dir", str(tiny_data), "--out-dir", str(out_dir), "--epochs", "2",
                       "--precision", "fp32", *extra])


def test_main_end_to_end_writes_checkpoints_and_log(tiny_data, tmp_path):
    _run(tiny_data, tmp_path)
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert set(log) == {"run_id", "config", "heatmap", "regression", "total_seconds"}  # the assignment's two
    assert str(tmp_path) not in json.dumps(log) and str(tiny_data) not in json.dumps(log)  # no absolute paths
    for method in ("heatmap", "regression"):
        h = log[method]
        assert len(h["epochs"]) == 2 and set(h["epochs"][0]) == LOG_EPOCH_KEYS
        assert {"best_epoch", "best_val_loss", "best_val_px_error", "train_seconds", "images_per_second"} <= set(h)
        assert h["best_epoch"] == min(h["epochs"], key=lambda e: e["val_loss"])["epoch"]
        ckpt = torch.load(tmp_path / f"{method}_model.pth", weights_only=True)
        assert ckpt["config"]["method"] == method and ckpt["epoch"] == h["best_epoch"]
        assert ckpt["val_loss"] == pytest.approx(h["best_val_loss"])
        prov = ckpt["provenance"]
        assert prov["run_id"] == h["run"].split("-")[-1]                                       # its store run
        assert set(prov["recipe"]) == RECIPE_KEYS and prov["recipe"] == h["recipe"]
        assert prov["recipe"]["data"]["split_sizes"] == {"train": 48, "val": 16, "test": 16}
        assert str(tmp_path) not in json.dumps(prov)
    snaps = torch.load(tmp_path / "heatmap_snapshots.pt", weights_only=True)
    assert snaps["epochs"] == [1, 2] and snaps["heatmaps"].shape == (2, 4, 5, 64, 64)
    assert not list(tmp_path.glob(".*tmp*"))


def test_same_seed_same_log_in_any_order_and_with_jobs(tiny_data, tmp_path):
    """--jobs 2 (one thread per worker) gives a sequential one-thread run's numbers, whatever the method order."""
    threads = torch.get_num_threads()
    try:
        a = _run(tiny_data, tmp_path / "a", "--methods", "integral", "heatmap", "--epochs", "1", "--threads", "1")
        torch.set_num_threads(2)  # --threads 1 above set this process's count; --jobs 2 splits 2 into 1 + 1
        b = _run(tiny_data, tmp_path / "b", "--methods", "heatmap", "integral", "--epochs", "1", "--jobs", "2")
    finally:
        torch.set_num_threads(threads)
    assert b["config"]["jobs"] == 2 and json.loads((tmp_path / "b" / "timings.json").read_text())[
        "train.py"]["machine"]["jobs"] == 2
    assert a["heatmap"]["machine"]["threads"] == b["heatmap"]["machine"]["threads"] == 1
    assert (tmp_path / "b" / "heatmap_snapshots.pt").exists()       # written by a worker process
    for method in ("integral", "heatmap"):
        assert (tmp_path / "b" / f"{method}_model.pth").exists()
        for ea, eb in zip(a[method]["epochs"], b[method]["epochs"], strict=True):
            for key in ("train_loss", "val_loss", "val_px_error"):
                assert ea[key] == pytest.approx(eb[key], rel=1e-5, abs=1e-7)


def test_non_finite_loss_stops_with_message_and_keeps_checkpoint(tiny_data, tmp_path):
    ds = load_split(tiny_data, "train", "regression")
    loader = make_loader(ds, 16)
    io = train.TrainIO(tmp_path, log=lambda *a: None)
    train.train_regression_model(RegressionNet(), loader, loader, 1, io=io)
    good = (tmp_path / "regression_model.pth").read_bytes()
    ds.targets[3] = float("nan")
    with pytest.raises(UsageError, match=r"became non-finite at epoch 1 \(lr 0.001, fp32\): try a lower --lr") as e:
        train.train_regression_model(RegressionNet(), loader, loader, 1, io=io)
    assert "best checkpoint" not in str(e.value)                   # none was written by this training: none named
    assert (tmp_path / "regression_model.pth").read_bytes() == good


def test_unwritable_out_dir_fails_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot write results"):
        train.main(["--out-dir", str(blocker / "sub")])


@pytest.mark.parametrize("flags,message", [
    (["--epochs", "0"], "--epochs: must be >= 1"), (["--sigma", "0"], "--sigma: must be > 0"),
    (["--num-train", "-40"], "--num-train: must be >= 1"), (["--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--lr", "-1"], "--lr: must be > 0"), (["--lr", "nan"], "--lr: must be > 0"), (["--threads", "-1"], "--threads"),
    (["--num-train", "8", "--batch-size", "32"], "smaller than one batch"), (["--seed", "-1"], "--seed: must be >= 0"),
    (["--device", "gpu0"], "'gpu0' is not auto, cpu, cuda or cuda:N"), (["--device", "cuda:7"], "CUDA GPU(s) here")])
def test_bad_numbers_are_usage_errors_before_anything_is_created(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    with pytest.raises(UsageError) as e:
        train.main(["--out-dir", str(out), *flags])
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()


def test_a_second_run_into_the_same_folder_is_refused_and_a_killed_runs_lock_is_free(tiny_data, tmp_path):
    with common.results_lock(tmp_path, "train.py"):                                   # a live owner
        with pytest.raises(UsageError, match=r"is in use by train.py \(pid"):
            _run(tiny_data, tmp_path, "--methods", "regression")
    assert not (tmp_path / "regression_model.pth").exists()
    code = (f"import sys, os; sys.path.insert(0, {str(common.HERE)!r}); import common\n"
            f"with common.results_lock({str(tmp_path)!r}, 'train.py'): os.kill(os.getpid(), 9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9              # killed while holding it
    _run(tiny_data, tmp_path, "--methods", "regression", "--epochs", "1")
    assert (tmp_path / "regression_model.pth").exists()


def test_symmetric_hand_loss_is_recorded_and_changes_training(tiny_data, tmp_path):
    a = _run(tiny_data, tmp_path / "a", "--methods", "regression", "--epochs", "1")
    b = _run(tiny_data, tmp_path / "b", "--methods", "regression", "--epochs", "1", "--hand-loss", "symmetric")
    assert b["regression"]["recipe"]["hand_loss"] == "symmetric" and a["regression"]["recipe"]["hand_loss"] == "strict"
    assert b["regression"]["epochs"][0]["train_loss"] < a["regression"]["epochs"][0]["train_loss"]


@pytest.mark.parametrize("method", ["regression", "heatmap"])  # regression: dropout draws from the torch RNG
def test_an_interrupted_run_resumes_to_the_same_weights(tiny_data, tmp_path, method):
    """fit with resume_path, killed after epoch 2 of 3, then asked again: weights, Adam state and history equal
    an uninterrupted run's (shuffling and dropout RNG restored), and the resume file is gone at the end."""
    output_type = "heatmap" if method == "heatmap" else "regression"
    train_ds, val_ds = load_split(tiny_data, "train", output_type), load_split(tiny_data, "val", output_type)

    def run(out_dir, stop_after=None):
        torch.manual_seed(0)
        model = HeatmapNet() if method == "heatmap" else RegressionNet()
        train_loader, val_loader = make_loader(train_ds, 16, shuffle=True, seed=3), make_loader(val_ds, 16)

        def stop(epoch, _):
            if epoch == stop_after:
                raise KeyboardInterrupt
        if stop_after is None and out_dir.name == "b":
            torch.manual_seed(123)  # the resumed call must take the RNG state from the file, not from here
        io = train.TrainIO(out_dir, "m.pth", log=logs.append, resume_path=out_dir / "resume.pth")
        h = train.fit(model, train_loader, val_loader, {"epochs": 3}, io, on_epoch_end=stop)
        return model, h

    logs = []
    full_model, full_h = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", stop_after=2)
    assert (tmp_path / "b" / "resume.pth").exists()
    model, h = run(tmp_path / "b")
    assert any("resuming after epoch 1" in s for s in logs) and h["resumed_after_epochs"] == [1]  # killed in epoch 2
    assert not (tmp_path / "b" / "resume.pth").exists()
    for k, v in full_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    strip = lambda hist: [{k: v for k, v in e.items() if k != "seconds"} for e in hist["epochs"]]
    assert strip(h) == strip(full_h) and h["best_epoch"] == full_h["best_epoch"]
    best_a, best_b = (torch.load(tmp_path / d / "m.pth")["state_dict"] for d in "ab")
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)  # the best-by-val-loss checkpoint too


def _kill_in_epoch(monkeypatch, epoch):
    """train.fit raises KeyboardInterrupt in training epoch `epoch` of this process (counted over every fit call)."""
    calls, real = [], train.train_epoch

    def train_epoch(*a, **k):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(train, "train_epoch", train_epoch)


def test_heatmap_snapshots_survive_a_resume(tiny_data, tmp_path, monkeypatch):
    loaders = [make_loader(load_split(tiny_data, split, "heatmap"), 16, shuffle=split == "train") for split in ("train", "val")]
    _kill_in_epoch(monkeypatch, 3)
    monkeypatch.setattr(train, "SNAPSHOT_EPOCHS", (1, 2, 3))
    kw = dict(io=train.TrainIO(tmp_path, resume_path=tmp_path / "r.pth", log=lambda *a: None))
    with pytest.raises(KeyboardInterrupt):
        train.train_heatmap_model(HeatmapNet(), *loaders, 3, **kw)
    assert torch.load(tmp_path / "heatmap_snapshots.pt")["epochs"] == [1, 2]
    h = train.train_heatmap_model(HeatmapNet(), *loaders, 3, **kw)
    snaps = torch.load(tmp_path / "heatmap_snapshots.pt")
    assert h["resumed_after_epochs"] == [2] and snaps["epochs"] == [1, 2, 3] and len(snaps["heatmaps"]) == 3


def test_a_resume_file_is_ignored_for_another_recipe_or_when_its_checkpoints_are_gone(tiny_data, tmp_path):
    ds = load_split(tiny_data, "train", "regression")
    val = load_split(tiny_data, "val", "regression")

    def run(seed, epochs, stop=None):
        def on_epoch_end(epoch, _):
            if epoch == stop:
                raise KeyboardInterrupt
        io = train.TrainIO(tmp_path, "m.pth", log=logs.append, provenance={"recipe": {"seed": seed}},
                           resume_path=tmp_path / "resume.pth")
        return train.fit(RegressionNet(), make_loader(ds, 16, shuffle=True), make_loader(val, 16), {"epochs": epochs},
                         io, on_epoch_end)
    logs = []
    with pytest.raises(KeyboardInterrupt):
        run(0, 3, stop=2)
    h = run(1, 1)                                      # another recipe: starts over
    assert len(h["epochs"]) == 1 and "resumed_after_epochs" not in h
    assert any("another recipe or model" in s for s in logs)
    with pytest.raises(KeyboardInterrupt):
        run(0, 3, stop=2)
    (tmp_path / "m.pth").unlink()                      # the best checkpoint written before it is gone: starts over
    h = run(0, 2)
    assert "resumed_after_epochs" not in h and (tmp_path / "m.pth").exists()
    assert any("best checkpoint written before it is gone" in s for s in logs)


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_an_interrupted_run_never_replaces_the_last_complete_one(tiny_data, tmp_path, monkeypatch):
    _run(tiny_data, tmp_path, "--epochs", "1")
    deliverable = lambda: {k: v for k, v in _files(tmp_path).items() if not k.startswith("runs/")}  # noqa: E731
    before = deliverable()
    real = train.train_recipe

    def killed_after_heatmap(recipe, *a, **kw):
        history = real(recipe, *a, **kw)   # the heatmap run is trained and stored
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "train_recipe", killed_after_heatmap)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_data, tmp_path, "--epochs", "2", "--seed", "1")
    assert deliverable() == before
    monkeypatch.setattr(train, "train_recipe", real)
    stored = {p: p.read_bytes() for p in tmp_path.glob("runs/*/run.json")}
    _run(tiny_data, tmp_path, "--epochs", "2", "--seed", "1")                # the heatmap run is reused, not retrained
    assert all(p.read_bytes() == b for p, b in stored.items()) and len(list(tmp_path.glob("runs/*/run.json"))) == 4
    assert deliverable() != before


def test_a_second_run_of_the_same_recipe_reuses_the_stored_run_and_force_retrains(tiny_data, tmp_path, monkeypatch):
    calls, real_fit = [], train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    run = lambda *extra: _run(tiny_data, tmp_path, "--methods", "regression", "--epochs", "1", *extra)  # noqa: E731
    first = run()
    ckpt = (tmp_path / "regression_model.pth").read_bytes()
    second = run()                                                                      # reused
    assert len(calls) == 1 and second["regression"]["epochs"] == first["regression"]["epochs"]
    assert (tmp_path / "regression_model.pth").read_bytes() == ckpt
    (tmp_path / "runs" / first["regression"]["run"] / "model.pth").unlink()            # its checkpoint gone: retrained
    run()
    third = run("--force")
    assert len(calls) == 3 and third["regression"]["epochs"][0]["train_loss"] == first["regression"]["epochs"][0]["train_loss"]


def test_a_stored_run_retrained_and_killed_is_resumed_not_reused(tiny_data, tmp_path, monkeypatch):
    """A clone has a stored run's run.json but not its checkpoints: train.py retrains it; killed, the half-trained
    checkpoints are never taken for the stored run, and the next train.py continues to the same numbers."""
    first = _run(tiny_data, tmp_path, "--methods", "regression")
    rdir = tmp_path / "runs" / first["regression"]["run"]
    for ckpt in rdir.glob("*.pth"):
        ckpt.unlink()
    _kill_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_data, tmp_path, "--methods", "regression")
    assert not (rdir / "run.json").exists() and (rdir / "resume.pth").exists()
    monkeypatch.undo()
    again = _run(tiny_data, tmp_path, "--methods", "regression")
    assert again["regression"]["resumed_after_epochs"] == [1]
    assert [e["val_loss"] for e in again["regression"]["epochs"]] == [e["val_loss"] for e in first["regression"]["epochs"]]


def test_the_committed_results_are_replaced_only_by_their_own_recipe(tiny_data, tmp_path, monkeypatch):
    import common
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    _run(tiny_data, tmp_path, "--epochs", "1", "--precision", "fp32")                      # the "committed" run
    before = _files(tmp_path)
    with pytest.raises(UsageError, match="differs from them in epochs: pass --out-dir .* or --replace-results"):
        _run(tiny_data, tmp_path, "--epochs", "2")
    assert _files(tmp_path) == before
    _run(tiny_data, tmp_path, "--epochs", "1", "--precision", "bf16", "--methods", "regression")  # precision: allowed
    _run(tiny_data, tmp_path, "--epochs", "2", "--methods", "regression", "--replace-results")
    assert json.loads((tmp_path / "training_log.json").read_text())["regression"]["recipe"]["epochs"] == 2


def test_an_out_dir_that_is_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        train.main(["--out-dir", str(blocker), "--epochs", "1"])


def test_cosine_schedule_sets_each_epochs_rate(tiny_data, monkeypatch):
    import math
    opts, seen = [], []
    real_adam = torch.optim.Adam
    monkeypatch.setattr(torch.optim, "Adam", lambda *a, **k: opts.append(real_adam(*a, **k)) or opts[-1])
    ds = load_split(tiny_data, "val", "regression")
    train.fit(RegressionNet(), make_loader(ds, 16, shuffle=True), make_loader(ds, 16),
              {"epochs": 4, "lr": 1e-3, "schedule": "cosine"}, train.TrainIO(log=lambda *a: None),
              on_epoch_end=lambda e, out: seen.append(opts[0].param_groups[0]["lr"]))
    assert seen == pytest.approx([1e-3 * (1 + math.cos(math.pi * (e - 1) / 4)) / 2 for e in range(1, 5)])
    assert seen[0] == 1e-3 and seen[-1] < 2e-4                          # from the full rate towards 0


def test_keep_last_saves_the_final_epoch_and_enters_the_recipe_only_when_set(tiny_data, tmp_path):
    """--keep last: the checkpoint is the last epoch's whatever the val loss did; the spec's 'best' leaves every
    stored recipe (and so its run key) as it was."""
    log = _run(tiny_data, tmp_path, "--methods", "regression", "--epochs", "3", "--keep", "last")
    assert log["regression"]["recipe"]["keep"] == "last" and log["regression"]["saved_epoch"] == 3
    assert torch.load(tmp_path / "regression_model.pth", weights_only=False)["epoch"] == 3
    data = log["config"]["data"]
    assert "keep" not in train.make_recipe("regression", data)
    assert train.make_recipe("regression", data, keep="last")["keep"] == "last"
