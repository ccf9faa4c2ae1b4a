"""How far each method goes: the likelihood losses, the cosine schedule, and the study on tiny data."""
import math

import pytest
import torch

import how_far
from codec import NUM_KEYPOINTS, keypoint_loss, swap_hands
from common import read_json
from dataset import data_fingerprint
from model import RealNVP
from runs import Store
from train import make_recipe, train_recipe


def test_likelihood_losses_known_values():
    target = torch.rand(3, 2 * NUM_KEYPOINTS)
    at_target = torch.cat([target, torch.zeros_like(target)], 1)            # sigma = sigmoid(0) = 0.5
    assert float(keypoint_loss(at_target, target, loss="laplace")) == pytest.approx(0.0, abs=1e-6)  # log(2 sigma)
    off = torch.cat([target + 0.1, torch.zeros_like(target)], 1)
    assert float(keypoint_loss(off, target, loss="laplace")) == pytest.approx(0.1 / 0.5, rel=1e-4)  # |err| / sigma
    assert float(keypoint_loss(target + 0.1, target, loss="l1")) == pytest.approx(0.1, rel=1e-4)
    flow = RealNVP().requires_grad_(False)
    for param in flow.parameters():  # zero couplings: the identity map, G = the standard normal
        torch.nn.init.zeros_(param)
    rle = keypoint_loss(at_target, target, loss="rle", flow=flow)
    assert rle.item() == pytest.approx(math.log(0.5) + math.log(2 * math.pi), rel=1e-5)  # log sigma - log N(0)
    shifted = torch.cat([target + 0.1, torch.zeros_like(target)], 1)   # e = 0.2 per coordinate
    expected = 0.2 + math.log(0.5) + math.log(2 * math.pi) + 0.5 * (0.2 ** 2 + 0.2 ** 2)
    assert keypoint_loss(shifted, target, loss="rle", flow=flow).item() == pytest.approx(expected, rel=1e-4)


def test_symmetric_hand_loss_forgives_swapped_hands_for_every_loss():
    target = torch.rand(4, 2 * NUM_KEYPOINTS)
    swapped = swap_hands(target.view(4, NUM_KEYPOINTS, 2)).reshape(4, -1)
    flow = RealNVP().requires_grad_(False)
    for loss, out in (("mse", target + 0.01), ("l1", target + 0.01),
                      ("laplace", torch.cat([target + 0.01, torch.zeros_like(target)], 1)),
                      ("rle", torch.cat([target + 0.01, torch.zeros_like(target)], 1))):
        sym = keypoint_loss(out, swapped, "symmetric", loss, flow)
        assert float(sym) == pytest.approx(float(keypoint_loss(out, target, "strict", loss, flow)), rel=1e-4, abs=1e-6)
        assert keypoint_loss(out, swapped, "strict", loss, flow) > sym + 1e-3


def test_recipe_keys_of_the_spec_recipe_are_unchanged_and_losses_fit_their_method(tiny_data):
    data = data_fingerprint(tiny_data)
    spec = make_recipe("regression", data)
    assert "loss" not in spec and "schedule" not in spec                          # stored runs keep their keys
    assert make_recipe("heatmap", data, schedule="cosine")["schedule"] == "cosine"
    assert make_recipe("gap_fc_nll", data, loss="rle")["model"]["flow"] is True
    assert make_recipe("gap_fc_nll", data, loss="laplace")["model"]["flow"] is False
    for method, loss in (("regression", "rle"), ("gap_fc_nll", "mse"), ("softargmax_8", "rle"), ("gap_fc_nll", "l1")):
        with pytest.raises(ValueError, match="do not fit"):
            make_recipe(method, data, loss=loss)


def test_how_far_on_tiny_data(tiny_data, tiny_shifted, tmp_path, monkeypatch):
    monkeypatch.setattr(how_far, "SCHEDULES", {"30 constant": (1, "constant"), "100 constant": (2, "constant"),
                                               "100 cosine": (2, "cosine"), "300 constant": (3, "constant"),
                                               "300 cosine": (3, "cosine")})
    figs, real = {}, how_far.save_figure
    monkeypatch.setattr(how_far, "save_figure", lambda fig, path: (figs.__setitem__(path.name, fig), real(fig, path)))
    res = how_far.how_far(Store(tmp_path, tiny_data, train_recipe, tiny_shifted, log=lambda *a: None), seeds=(0,),
                          precision="fp32")
    assert res["best_schedule"] in how_far.SCHEDULES and res["decoder"] in ("argmax", "quarter")
    assert [k for k in res["rows"] if k.startswith("schedule")] == [f"schedule: {n}" for n in how_far.SCHEDULES]
    assert [r["seed"] for r in res["rows"]["ladder: RLE"]] == [0]
    rle = read_json(tmp_path / "runs" / res["rows"]["ladder: RLE"][0]["run"] / "run.json")["recipe"]
    assert (rle["method"], rle["loss"], rle["hand_loss"], rle["epochs"]) == ("gap_fc_nll", "rle", "symmetric", 1)
    spatial = read_json(tmp_path / "runs" / res["rows"]["spatial: soft-argmax 8x8, MSE"][0]["run"] / "run.json")["recipe"]
    assert (spatial["method"], spatial.get("loss", "mse"), spatial["hand_loss"]) == ("softargmax_8", "mse", "symmetric")
    assert ("ladder: symmetric hand loss", "spatial: soft-argmax 8x8, MSE") in {(s["from"], s["to"]) for s in res["steps"]}
    cos = read_json(tmp_path / "runs" / res["rows"]["schedule: 100 cosine"][0]["run"] / "run.json")["recipe"]
    assert cos["schedule"] == "cosine" and cos["hand_loss"] == "symmetric"
    step = next(s for s in res["steps"] if s["from"] == "ladder: spec head")
    a, b = (res["rows"][k] for k in ("ladder: spec head", "ladder: no dropout/sigmoid"))
    assert step["to"] == "ladder: no dropout/sigmoid" and step["seeds"] == [0]
    assert step["px"]["diff"] == pytest.approx(b[0]["px"] - a[0]["px"])
    for sched in ("300 constant", "300 cosine"):
        long = read_json(tmp_path / "runs" / res["rows"][f"long: {res['best_loss']} @ {sched}"][0]["run"] / "run.json")
        assert long["recipe"]["epochs"] == 3 and long["recipe"].get("schedule", "constant") == sched.split()[1]
    best = read_json(tmp_path / "runs" / res["rows"][f"schedule: {res['best_schedule']}"][0]["run"] / "eval.json")
    assert list(res["val_px_sym"][res["best_schedule"]]) == [pytest.approx(sum(
        read_json(tmp_path / "runs" / r["run"] / "eval.json")["val"][res["decoder"]]["px_sym"]
        for r in res["rows"][f"schedule: {res['best_schedule']}"])), res["decoder"]]
    assert best["val"].keys() == {"argmax", "quarter"}   # the decoder is chosen on val
    assert (tmp_path / "visualizations" / "how_far.png").exists()
    budget, ladder = figs["how_far.png"].axes                          # what a reader of the figure sees
    assert budget.get_title() == "Error against training budget" and budget.get_xlabel().startswith("training epochs")
    labels = [t.get_text() for t in budget.get_legend().get_texts()]
    assert labels[:2] == ["HeatmapNet, constant lr", "HeatmapNet, cosine lr"]
    assert [t.get_text() for t in ladder.get_xticklabels()] == [
        how_far.TICK_LABELS.get(k, k.split(": ")[1]) for k in [f"ladder: {n}" for n in how_far.LADDER]
        + [f"spatial: {n}" for n in how_far.SPATIAL]]
    assert [t.get_text() for t in ladder.get_legend().get_texts()] == ["all keypoints", "hands"]


def test_a_run_without_val_numbers_is_named(tiny_data):
    """A run whose eval.json (reshaped from the older layout) has no val numbers cannot take part in a choice on val:
    one error naming it and what to do, not a bare ValueError."""
    from common import UsageError
    recipe = make_recipe("heatmap", data_fingerprint(tiny_data), seed=0, epochs=1)
    runs = [({"recipe": recipe}, {"val": None})]
    with pytest.raises(UsageError, match=r"heatmap-[0-9a-f]{12} \(evaluated by an older layout\).*delete those"):
        how_far.best_decoder(runs)
