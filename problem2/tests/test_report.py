import json

import readouts
import report


def test_committed_tables_match_committed_results():
    """Every table in report.md / README.md equals what report.py generates from results/*.json."""
    assert report.main(["--check"]) == 0


MACHINE = {"cpu": "Some CPU", "cores": 2, "device": "cpu", "precision": "fp32", "torch": "x"}


def test_render_replaces_only_marked_blocks():
    results = {"timings": {"train.py": {"seconds": 120.0, "machine": MACHINE}, "evaluate.py": {"seconds": 6.0}}}
    text = "intro 1.23\n<!-- table:timing -->\nstale\n<!-- /table -->\noutro\n"
    out = report.render(text, results)
    assert out.startswith("intro 1.23\n<!-- table:timing -->\n| step |") and out.endswith("<!-- /table -->\noutro\n")
    assert "| `train.py` | 2.0 | Some CPU, 2 cores, cpu, fp32 |" in out
    assert "| `evaluate.py` | 0.1 | not recorded |" in out and "first command" not in out   # two machines: no total
    assert report.render(out, results) == out
    results["timings"]["evaluate.py"]["machine"] = MACHINE
    assert "first command" not in report.render(text, results)                      # baseline.py not timed yet
    results["timings"]["baseline.py"] = {"seconds": 60.0, "machine": MACHINE}
    results["timings"]["baseline.py --seeds 0 1 2"] = {"seconds": 600.0, "machine": MACHINE}    # not the first command
    out = report.render(text, results)
    assert "**3.1**" in out and "| `baseline.py --seeds 0 1 2` | 10.0 |" in out      # one machine: its total


def test_assignment_time_is_one_number_only_when_one_machine_timed_every_step():
    other = {**MACHINE, "cpu": "Other CPU"}
    t = {"train.py": {"seconds": 600.0, "machine": MACHINE}, "evaluate.py": {"seconds": 60.0, "machine": MACHINE},
         "baseline.py": {"seconds": 1200.0, "machine": MACHINE}}
    assert report.assignment_timing({"timings": t}) == "31.0 minutes on Some CPU, 2 cores, cpu, fp32"
    t["train.py"] = {"seconds": 600.0, "machine": {**MACHINE, "jobs": 2}}   # same machine, run differently
    assert report.assignment_timing({"timings": t}) == ("31.0 minutes on Some CPU, 2 cores, cpu (`train.py` fp32, "
                                                         "2 jobs; `evaluate.py` fp32; `baseline.py` fp32)")
    t["evaluate.py"]["machine"] = other
    text = report.assignment_timing({"timings": t})
    assert "`evaluate.py` 1.0 min on Other CPU" in text and "not one end-to-end time" in text and "31.0" not in text


def test_md_table_shape():
    assert report.md(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert json.loads(json.dumps(report.THR)) == ["0.05", "0.1", "0.15", "0.2"]


def test_inline_values_are_regenerated():
    results = {"benchmark": {"scaling": [{"jobs": 1, "threads": 2, "images_per_s": 20.0},
                                         {"jobs": 2, "threads": 1, "images_per_s": 30.0}]}}
    text = "two jobs give <!-- v:scaling_gain -->999<!-- /v -->x"
    assert report.render(text, results) == "two jobs give <!-- v:scaling_gain -->1.5<!-- /v -->x"


def test_ablation_table_interval_and_seed_noise_verdict():
    def run(seed, px):
        entry = {"mean_px_error": px, "pck": {"bbox": {"0.05": 0.8}}}
        return {"seed": seed, "test": {d: {"strict": entry, "symmetric": entry} for d in ("argmax", "quarter", "dark")}}
    cfg = {"hm_size": 64, "sigma_img": 4.0, "skip": True}
    results = {"ablation": {"studies": {"skip": ["hm64_sigma2_skip", "hm64_sigma2_noskip", "hm64_sigma2_same"]},
                            "variants": {"hm64_sigma2_skip": {"config": cfg, "runs": [run(0, 2.0), run(1, 2.2), run(2, 2.1)]},
                                         "hm64_sigma2_noskip": {"config": {**cfg, "skip": False},
                                                                "runs": [run(0, 3.0), run(1, 3.3), run(2, 3.1)]},
                                         "hm64_sigma2_same": {"config": cfg, "runs": [run(0, 2.5), run(1, 1.7), run(2, 2.1)]}}}}
    results["ablation"].update(seeds=[0, 1, 2], recipe={"precision": "fp32"})
    table = report.table_ablation(results)
    noskip = next(line for line in table.splitlines() if "noskip" in line).split(" | ")
    assert "3.13 ± 0.15" in noskip and noskip[-2].endswith("*")                # +1.03 px, interval excludes 0
    assert noskip[-1].startswith("+0.000 [+0.000, +0.000]")                     # equal PCK: no difference
    same = next(line for line in table.splitlines() if "_same" in line).split(" | ")
    assert same[-2].endswith("0.00 [-1.24, +1.24]")                           # within seed noise, no *
    # the prose: only the differences beyond seed noise are listed, each with its interval
    listed = report.ablation_beyond_noise(results)
    assert "hm64_sigma2_noskip px quarter +1.03 [" in listed and "_same" not in listed
    assert "of 10 comparisons" in listed                                        # 2 variants x 5 numbers, uncorrected
    assert report.VALUES["abl_runs"](results) == "3 seeds per variant (seeds 0, 1, 2; fp32)"
    one = {"ablation": {**results["ablation"], "variants": {k: {**v, "runs": v["runs"][:1]}
                                                            for k, v in results["ablation"]["variants"].items()}}}
    assert report.ablation_beyond_noise(one).startswith("none can be, with one seed")


def test_readout_findings_apply_the_seed_noise_rule():
    """Generated readout sentences: paired means, interval, verdict and share of the whole spec gap."""
    def rows(pxs):
        return [{"seed": s, "px": v, "spread_ratio": 0.9} for s, v in enumerate(pxs)]
    def step(a, b, pa, pb):
        d = readouts.paired_difference(pa, pb)
        return {"from": a, "to": b, "seeds": list(range(len(pa))), "px": d, "px_head_feet": d, "px_hands_sym": d,
                "px_shifted": d}
    gap, flat, hm = [14.0, 13.0, 15.0], [8.0, 6.0, 10.0], [2.0, 2.5, 1.5]
    r = {"study": {"readouts": {"seeds": [0, 1, 2], "references": {},
                                "readouts": {"gap_fc": {"per_seed": rows(gap)}, "flatten_fc": {"per_seed": rows(flat)},
                                             "heatmap_64": {"per_seed": rows(hm)}, "heatmap_8": {"per_seed": []}}},
                   }}
    r["study"]["readouts"]["steps"] = [step("gap_fc", "flatten_fc", gap, flat), step("gap_fc", "heatmap_64", gap, hm),
                                       step("gap_fc", "flatten_fc", gap[:1], flat[:1]),
                                       {**step("softargmax_8", "heatmap_8", [], []), "seeds": []}]
    lines = report.readout_findings(r).splitlines()
    assert "14.00 → 8.00 px" in lines[0] and "-6.00 [-8.48, -3.52] *" in lines[0]  # diffs -6, -7, -5: half-width 4.303 x 1 / sqrt 3
    assert "larger than seed noise at n=3" in lines[0] and "50% of the whole" in lines[0]  # -6 / -12
    assert "larger than seed noise" in lines[1] and "of the whole" not in lines[1]
    assert "one seed so far: not interpreted" in lines[2]
    assert "Not measured yet" in lines[3]
    assert report.readout_findings(r, only={("gap_fc", "heatmap_64")}).count("\n") == 1
    assert report.VALUES["pair_gap_fc__flatten_fc_px"](r).startswith("-6.00 [-8.48, -3.52] * px, larger than")
    wide = readouts.paired_difference([1.0, 2.0, 3.0], [2.0, 1.0, 3.1])
    assert report.verdict(wide).startswith("within seed noise at n=3")


def test_sources_say_which_sections_come_from_the_run_store():
    ab = {"recipe": {"precision": "fp32"}, "seeds": [0, 1], "variants": {"v": {"runs": [{"run": "a"}, {"run": "b"}]}}}
    study = {"seeds": {"runs": {}}, "translation": {}, "hands": {"runs": {}}, "data_efficiency": {}}
    machine = {"cpu": "CPU X", "cores": 2, "device": "cpu", "threads": 1}
    text = report.sources({"ablation": ab, "study": study, "stored_runs": {"a": machine, "b": machine}})
    assert "CPU X (2 cores, cpu, 1 thread(s) per run): 2" in text
    assert "seeds 0, 1, the run store" in text
    assert "`seeds`: the run store" in text and "`hands`: the run store" in text
    assert "`translation`: the last full bf16 run" in text and "`data_efficiency`: the last full bf16 run" in text
    assert "not in the store" in report.sources({"ablation": ab, "study": study, "stored_runs": {"a": machine}})


def test_store_training_seconds_counts_a_shared_run_once():
    row = lambda run, sec: {"run": run, "train_seconds": sec}  # noqa: E731
    study = {"readouts": {"readouts": {"gap_fc": {"per_seed": [row("a", 10.0), row("b", 20.0)]}}},
             "hand_loss": {"rows": {"regression_strict": [row("a", 10.0)], "regression_symmetric": [row("c", 5.0)]}},
             "budget": {"long": {"heatmap": {"100": [row("d", 1.0)]}}, "data_steps": {"rows": {"heatmap": {"32": [row("e", 2.0)]}}}}}
    assert report.store_training_seconds(study) == 38.0   # a + b + c + d + e, run "a" once
    assert report.store_training_seconds({}) == 0


def test_budget_tables_pair_long_with_spec_training_and_say_when_nothing_is_stored():
    assert "no stored runs yet" in report.table_budget_long({"study": {}})
    assert "no stored runs yet" in report.table_data_steps({"study": {}})
    row = lambda seed, px, pck: {"seed": seed, "px": px, "pck_bbox": {"0.05": pck}, "best_epoch": 90}  # noqa: E731
    long = {"30": [row(0, 13.0, 0.1), row(1, 14.0, 0.1)], "100": [row(0, 11.0, 0.2), row(1, 11.0, 0.3)]}
    pair = {"seeds": [0, 1], "px": readouts.paired_difference([13.0, 14.0], [11.0, 11.0]),
            "pck_bbox": readouts.paired_difference([0.1, 0.1], [0.2, 0.3])}
    steps = {"sizes": [125, 1000], "epochs": {"125": 240, "1000": 30},
             "rows": {"heatmap": {"125": [row(0, 5.0, 0.5), row(1, 7.0, 0.4)], "1000": [row(0, 2.5, 0.85)]}}}
    r = {"study": {"budget": {"epochs": [30, 100], "long": {"regression": long}, "long_paired": {"regression": pair},
                              "data_steps": steps}}}
    line = report.table_budget_long(r).splitlines()[2].split(" | ")
    assert line[1:5] == ["0 1", "13.50 ± 0.71", "11.00 ± 0.00", "-2.50 [-8.85, +3.85]"]   # diffs -2, -3
    assert report.table_budget_long(r).splitlines()[0].count("100") == 5   # px, diff, PCK, PCK diff, best epoch
    table = report.table_data_steps(r)
    assert "125 train (240 epochs)" in table and "6.00 ± 1.41 / 0.450 ± 0.071" in table and "2.50 (n=1)" in table


def test_hands_tables_add_the_symmetric_loss_rows_as_seed_means():
    side = {"strict": {"mean_px_error": 2.0, "hand_px_error": 6.0, "pck_bbox": {"0.05": 0.8}},
            "symmetric": {"mean_px_error": 1.8, "hand_px_error": 5.0, "pck_bbox": {"0.05": 0.85}}}
    row = lambda seed, hands: {"seed": seed, "px": 2.5, "px_hands": 6.5, "px_hands_sym": hands,  # noqa: E731
                               "pck_bbox": {"0.05": 0.8}, "pck_bbox_sym": {"0.05": 0.98}, "hand_gap_px": 12.0 + seed}
    r = {"study": {"hands": {"heatmap_faithful": side, "hand_gap_px": {"ground_truth": 12.1, "heatmap_faithful": 1.9},
                             "runs": {"heatmap_faithful": "heatmap-x"}},
                   "hand_loss": {"precision": "fp32", "rows": {"heatmap_symmetric": [row(0, 1.0), row(1, 1.2)],
                                                             "heatmap_strict": [row(0, 5.0)]}}}}
    lines = report.table_hands(r).splitlines()
    assert len(lines) == 4 and "runs" not in lines[2]
    assert lines[3] == "| heatmap faithful, symmetric loss (fp32, seeds 0 1) | 2.50 | 6.50 | 1.10 | 0.800 | 0.980 |"
    gap = report.table_hand_gap(r)
    assert "symmetric loss (fp32, seeds 0 1)" in gap and gap.splitlines()[2].endswith("| 12.5 |")


def test_hand_loss_interaction_is_the_change_of_the_paired_gap():
    row = lambda seed, px: {"seed": seed, "px": px}  # noqa: E731
    rows = {"integral_strict": [row(0, 3.2), row(1, 3.1), row(2, 3.3)],
            "heatmap_strict": [row(0, 2.6), row(1, 2.5), row(2, 2.6)],      # heatmap - integral: -0.6, -0.6, -0.7
            "integral_symmetric": [row(0, 2.8), row(1, 2.8), row(2, 2.9), row(3, 9.9)],
            "heatmap_symmetric": [row(0, 2.8), row(1, 2.9), row(2, 2.8)]}   # 0.0, +0.1, -0.1; seed 3 unpaired
    d = report.hand_loss_interaction({"study": {"hand_loss": {"rows": rows}}}, "integral", "heatmap", "px")
    assert d["n"] == 3 and abs(d["diff"] - (0.0 - (-1.9 / 3))) < 1e-9                 # shrinks by 0.633
    assert d["ci95"][0] < d["diff"] < d["ci95"][1]


def test_the_main_command_on_tiny_data_then_the_tables_it_owns(tiny_data, tiny_shifted, tmp_path, monkeypatch):
    """train.py, evaluate.py and baseline.py (tiny data) into a folder that holds the committed study results, then
    report.py's rendering: every table and value renders, and those the main command owns show its new numbers."""
    import shutil

    import baseline
    import evaluate
    import train
    from common import RESULTS_DIR
    for name in ("study_results.json", "ablation_seeds.json", "how_far_results.json", "benchmark.json"):
        shutil.copyfile(RESULTS_DIR / name, tmp_path / name)
    monkeypatch.setattr(baseline, "shifted_test_dir", lambda: tiny_shifted)
    common = ["--data-dir", str(tiny_data), "--out-dir", str(tmp_path)]
    train.main([*common, "--epochs", "1", "--precision", "fp32"])
    evaluate.main(common)
    baseline.main([*common, "--epochs", "1", "--precision", "fp32", "--studies", "skip"])
    results = report.load_results(tmp_path)
    for doc in report.DOCS:
        text = report.render(doc.read_text(), results)
        assert report.render(text, results) == text                     # rendered once, it is up to date
    pck = report.TABLES["pck_bbox"](results)
    assert f"{results['metrics']['heatmap']['decoders']['argmax']['strict']['pck']['bbox']['0.05']:.3f}" in pck
