import json

import pytest
import torch

import baseline
import dataset
import train
from runs import Store
from codec import encode_heatmaps, img_to_unit
from dataset import load_split, make_loader
from evaluate import pck_normalizer
from model import HeatmapNet


def _store(out, kp_dir, shifted, **kw):
    return Store(out, kp_dir, train.train_recipe, shifted, "cpu", **kw)


@pytest.fixture(scope="module")
def ablation_run(tiny_data, tiny_shifted, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    logs = []
    res = baseline.ablation_study(tiny_data, HeatmapNet, store=_store(out, tiny_data, tiny_shifted, log=logs.append),
                                  options={"epochs": 1})
    return out, res, logs


def test_every_study_writes_documented_json(ablation_run):
    out, res, logs = ablation_run
    on_disk = json.loads((out / "ablation_results.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert set(on_disk["studies"]) == {"resolution", "sigma", "skip"} and on_disk["seeds"] == [0]
    assert on_disk["studies"]["resolution"] == ["hm32_sigma2_skip", "hm64_sigma2_skip", "hm128_sigma2_skip"]
    assert len(on_disk["variants"]) == 7       # the shared 64/sigma-2/skip config is trained once
    assert sum(": training (" in line for line in logs) == 7
    for name, v in on_disk["variants"].items():
        (row,) = v["runs"]
        assert row["seed"] == 0 and (out / "runs" / row["run"] / "run.json").exists()
        assert {"best_epoch", "best_val_loss", "best_val_px_error", "train_seconds"} <= set(row)
        assert set(row["test"]) == {"argmax", "quarter"}
        for sfx in ("", "_sym"):
            entry = row["test"]["argmax"]
            assert set(entry["pck_bbox" + sfx]) == {"0.05", "0.1", "0.15", "0.2"} and entry["px" + sfx] > 0
        recipe = json.loads((out / "runs" / row["run"] / "run.json").read_text())["recipe"]
        assert recipe["model"]["hm_size"] == v["config"]["hm_size"] and recipe["target"]["sigma"] == v["config"]["sigma_hm"]
        assert recipe["model"]["skip"] == v["config"]["skip"] and recipe["seed"] == 0
    (default,) = on_disk["variants"][baseline.DEFAULT_VARIANT]["runs"]
    (row,) = on_disk["variants"]["hm32_sigma2_skip"]["runs"]
    pair = on_disk["variants"]["hm32_sigma2_skip"]["paired_to_default"]["px_argmax"]   # variant minus default, by seed
    assert pair == {"diff": row["test"]["argmax"]["px"] - default["test"]["argmax"]["px"], "ci95": None, "n": 1}
    assert "paired_to_default" not in on_disk["variants"][baseline.DEFAULT_VARIANT] and not on_disk["partial"]
    cfg = on_disk["variants"]["hm128_sigma2_skip"]["config"]
    assert cfg["sigma_hm"] == 4.0 and cfg["sigma_img"] == 4.0        # sigma fixed in image px
    assert on_disk["variants"]["hm32_sigma2_skip"]["config"]["sigma_hm"] == 1.0
    assert on_disk["variants"]["hm64_sigma2_noskip"]["config"]["skip"] is False


def test_resume_is_keyed_by_recipe_and_data(ablation_run, tiny_data, tiny_shifted, tmp_path):
    out, res, _ = ablation_run
    logs = []
    again = baseline.ablation_study(tiny_data, HeatmapNet, ("skip",), store=_store(out, tiny_data, tiny_shifted,
                                                                                   log=logs.append),
                                    options={"epochs": 1})
    assert sum("reusing (same recipe" in line for line in logs) == 2 and not any(": training (" in ln for ln in logs)
    assert again["variants"]["hm64_sigma2_noskip"] == res["variants"]["hm64_sigma2_noskip"]
    other = dataset.generate_dataset(tmp_path / "other", {"train": 40, "val": 8, "test": 8}, seed=9)
    logs = []
    moved = baseline.ablation_study(other, HeatmapNet, ("skip",), store=_store(out, other, tiny_shifted,
                                                                               log=logs.append),
                                    options={"epochs": 1})
    assert sum(": training (no stored run with this recipe)" in line for line in logs) == 2  # other data: never reused
    assert moved["variants"]["hm64_sigma2_noskip"]["runs"][0]["run"] != res["variants"]["hm64_sigma2_noskip"]["runs"][0]["run"]


def test_figures(ablation_run, tiny_data, tmp_path, monkeypatch):
    out, res, _ = ablation_run
    figs, real = {}, baseline.save_figure
    monkeypatch.setattr(baseline, "save_figure", lambda fig, path: (figs.__setitem__(path.name, fig), real(fig, path)))
    baseline.plot_ablations(res, out / "vis")
    for name in ("ablation_sigma", "ablation_resolution", "ablation_skip"):
        assert (out / "vis" / f"{name}.png").stat().st_size > 5000
    sigma = figs["ablation_sigma.png"]
    assert sigma._suptitle.get_text().startswith("Ablation: sigma") and "1 seed(s)" in sigma._suptitle.get_text()
    assert [ax.get_ylabel() for ax in sigma.axes] == ["PCK@0.05 (bbox)", "mean error (px, 128-px image)"]
    assert [t.get_text() for t in sigma.axes[1].get_xticklabels()] == ["2", "4", "6", "8"]  # image px
    assert sigma.axes[1].get_xlabel() == "σ of the Gaussian target (image px)"
    assert len(sigma.legends[0].get_texts()) == 4                                  # 2 decoders x 2 matchings


def test_failure_categories_known_masks():
    ok_h = torch.tensor([[True, True, False, False, True]])
    ok_r = torch.tensor([[True, False, True, False, True]])
    cats = baseline.failure_categories(ok_h, ok_r)
    assert cats["heatmap_only"].tolist() == [[False, True, False, False, False]]
    assert cats["regression_only"].tolist() == [[False, False, True, False, False]]
    assert cats["both_fail"].tolist() == [[False, False, False, True, False]]


class _Replay(torch.nn.Module):
    """A stand-in model that returns preset outputs batch by batch (loader is not shuffled)."""

    def __init__(self, outputs, output_type):
        super().__init__()
        self.outputs, self.output_type, self.pos = outputs, output_type, 0

    def forward(self, x):
        out = self.outputs[self.pos:self.pos + len(x)]
        self.pos += len(x)
        return out


def test_characterise_counts_where_each_method_put_the_failing_hands():
    """baseline.characterise: for the hands in the mask, how many of each method's predictions lie within the radius
    of the image's other true hand, and of the midpoint between the hands (known geometry: hands 20 px apart)."""
    gt = torch.tensor([[[50.0, 20.0], [40.0, 50.0], [60.0, 50.0], [40.0, 90.0], [60.0, 90.0]]]).repeat(3, 1, 1)
    pred_a, pred_b = gt.clone(), gt.clone()
    pred_a[0, 1] = gt[0, 2]                     # image 0: left hand put on the right hand
    pred_a[1, 2] = (gt[1, 1] + gt[1, 2]) / 2    # image 1: right hand put at the midpoint
    pred_b[0, 1] = gt[0, 1] + 30                # image 0: far from everything
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 1] = mask[1, 2] = mask[2, 0] = True  # two failing hands and a head
    res = baseline.characterise(mask, gt, {"a": pred_a, "b": pred_b}, torch.full((3,), 7.0))
    assert res["keypoints"] == 3 and res["images"] == 3
    # b: image 0's hand is far from everything, image 1's on its own hand (20 px from the other, 10 from the midpoint)
    assert res["hands"] == {"count": 2, "a": {"on_other_hand": 1, "near_midpoint": 1},
                            "b": {"on_other_hand": 0, "near_midpoint": 0}}


def test_analyze_failure_cases_on_known_predictions(tiny_data, tmp_path, monkeypatch):
    figs, real = {}, baseline.save_figure
    monkeypatch.setattr(baseline, "save_figure", lambda fig, path: (figs.__setitem__(path.name, fig), real(fig, path)))
    ds = load_split(tiny_data, "test", "regression")
    gt = ds.keypoints.clone()
    pred_h, pred_r = gt.clone(), gt.clone()
    pred_h[0, 0] += 40          # image 0 head: heatmap fails, regression fine -> regression_only
    pred_r[1, 3] += 40          # image 1 left_foot: regression fails -> heatmap_only
    pred_h[2, 4] -= 40          # image 2 right_foot: both fail
    pred_r[2, 4] += 40
    pred_r[3, [1, 2]] = gt[3, [2, 1]]   # image 3: regression swaps the hands
    hm = _Replay(encode_heatmaps(pred_h, 64, 2.0), "heatmap")
    rg = _Replay(img_to_unit(pred_r).reshape(len(gt), -1), "regression")
    res = baseline.analyze_failure_cases({"heatmap": hm, "regression": rg}, make_loader(ds, 8), tmp_path)
    assert res["counts"]["regression_only"] == 1 and res["per_keypoint"]["regression_only"]["head"] == 1
    swap_fails = 2 * int((gt[3, 1] - gt[3, 2]).norm() > 0.1 * pck_normalizer(gt[3:4], "bbox")[0])
    assert res["counts"]["heatmap_only"] == 1 + swap_fails
    assert res["per_keypoint"]["heatmap_only"]["left_foot"] == 1
    assert res["counts"]["both_fail"] == 1 and res["per_keypoint"]["both_fail"]["right_foot"] == 1
    assert res["gallery"]["regression_only"] == [{"image": 0, "keypoint": "head"}]      # one row per failing keypoint
    assert res["gallery"]["both_fail"] == [{"image": 2, "keypoint": "right_foot"}]
    assert res["fixed_by_symmetric_matching"]["heatmap"] == 0
    assert res["fixed_by_symmetric_matching"]["regression"] == swap_fails
    assert (tmp_path / "visualizations" / "failures_both_fail.png").exists()
    both = figs["failures_both_fail.png"]                                # one row of 3 panels per gallery image
    assert len(both.axes) == 3 and both._suptitle.get_text().startswith("Failure cases: both fail")
    assert [ax.get_title() for ax in both.axes] == ["heatmap: 56.6 px on right_foot", "regression: 56.6 px on right_foot",
                                                    "right_foot heatmap (test #2)"]  # 40 px in x and y
    assert json.loads((tmp_path / "failure_cases.json").read_text())["counts"] == res["counts"]


def test_jobs_2_gives_the_same_ablation_numbers_as_jobs_1(tiny_data, tiny_shifted, tmp_path):
    """baseline's --jobs 2 (one thread per worker) writes the same ablation_results numbers as a sequential run
    with one thread (each run is seeded by its recipe; only the thread count changes CPU float reductions)."""
    quiet = lambda *a: None  # noqa: E731
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seq = baseline.ablation_study(tiny_data, HeatmapNet, ("skip",), store=_store(
            tmp_path / "seq", tiny_data, tiny_shifted, log=quiet, jobs=1), options={"epochs": 1})
    finally:
        torch.set_num_threads(threads)
    par = baseline.ablation_study(tiny_data, HeatmapNet, ("skip",), store=_store(
        tmp_path / "par", tiny_data, tiny_shifted, log=quiet, jobs=2), options={"epochs": 1})
    for name, v in seq["variants"].items():
        (a,), (b,) = v["runs"], par["variants"][name]["runs"]
        assert a["test"] == b["test"] and a["best_val_loss"] == b["best_val_loss"] and a["run"] == b["run"]


def test_partial_records_the_stored_runs_and_trains_none(ablation_run, tiny_data, tiny_shifted, tmp_path, monkeypatch):
    """--partial: only the (variant, seed) runs already stored, nothing trained."""
    import shutil

    import train

    out, res, _ = ablation_run
    shutil.copytree(out / "runs", tmp_path / "runs")
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("--partial trained a run"))
    quiet = _store(tmp_path, tiny_data, tiny_shifted, log=lambda *a: None, partial=True)
    part = baseline.ablation_study(tiny_data, HeatmapNet, seeds=(0, 1), store=quiet, options={"epochs": 1})
    assert part["partial"] and part["seeds"] == [0, 1] and part["variants"].keys() == res["variants"].keys()
    assert all(v["runs"] == res["variants"][n]["runs"] for n, v in part["variants"].items())    # seed 0 only
    none = baseline.ablation_study(tiny_data, HeatmapNet, ("skip",), store=quiet, options={"epochs": 2})
    assert none["variants"] == {}


def test_the_seeded_table_and_figures_have_their_own_files(ablation_run, tiny_data, tiny_shifted):
    out, res, _ = ablation_run
    before = (out / "ablation_results.json").read_bytes()
    seeded = baseline.ablation_study(tiny_data, HeatmapNet, seeds=(0, 1), options={"epochs": 1}, store=_store(
        out, tiny_data, tiny_shifted, log=lambda *a: None, partial=True))
    assert (out / "ablation_results.json").read_bytes() == before       # the main command's table is kept
    assert json.loads((out / "ablation_seeds.json").read_text())["seeds"] == [0, 1] == seeded["seeds"]
    baseline.plot_ablations(seeded, out / "vis_seeds")
    assert {p.name for p in (out / "vis_seeds").iterdir()} == {f"ablation_{s}_seeds.png" for s in ("sigma", "resolution",
                                                                                                 "skip")}
