import pytest

import report
from common import UsageError, main_time

MACHINE = {"cpu": "Some CPU", "cores": 2, "device": "cpu", "precision": "bf16", "torch": "x"}


def test_committed_documents_match_committed_results():
    """report.md, report_appendix.md and README.md are exactly what report.py makes from their templates and results."""
    assert report.main(["--check"]) == 0


def test_interval_notation():
    assert report.ci({"diff": -0.614, "ci95": [-0.8, -0.41], "n": 3}) == "-0.61 [-0.80, -0.41]"
    assert report.ci({"diff": 0.07, "ci95": [-0.15, 0.29], "n": 3}) == "+0.07 [-0.15, +0.29] ns"     # includes 0
    assert report.ci({"diff": 0.0012, "ci95": [-0.003, 0.005], "n": 3}, "pck_bbox") == "+0.001 [-0.003, +0.005] ns"
    assert report.ci({"diff": 0.5, "ci95": None, "n": 1}) == "+0.50 (1 seed)"
    # a bound that is not 0 never prints as one (an interval that excludes 0 must not look as if it touched it)
    assert report.ci({"diff": 0.016, "ci95": [0.00049, 0.0315], "n": 3}, "pck05") == "+0.016 [+0.0005, +0.032]"
    assert report.mean_sd([1.0, 2.0, 3.0]) == "2.00 ± 1.00" and report.mean_sd([2.5]) == "2.50 (1 seed)"


def test_a_placeholder_without_a_value_stops_with_its_name():
    ro = {"seeds": [0, 1, 2], "readouts": {"gap_fc": {"complete": True}}}
    assert report.render("a {{v:n_seeds}} b", {"study": {"readouts": ro}}) == "a 3 b"
    ro["readouts"]["gap_fc"]["complete"] = False                              # a seed missing: no 'n seeds' claim
    with pytest.raises(UsageError, match="missing runs"):
        report.render("{{v:n_seeds}}", {"study": {"readouts": ro}})
    with pytest.raises(UsageError, match=r"report_template.md: no value for \{\{v:no_such_value\}\}"):
        report.render("x {{v:no_such_value}}", {}, "report_template.md")
    with pytest.raises(UsageError, match=r"\{\{ro:gap_fc:px\}\}"):        # the study has not been run
        report.render("{{ro:gap_fc:px}}", {"study": {}})
    empty = {"study": {"readouts": {"readouts": {"gap_fc": {"per_seed": []}}}}}
    with pytest.raises(UsageError, match="no stored runs"):                  # never 'nan' in the document
        report.render("{{ro:gap_fc:px}}", empty)
    with pytest.raises(UsageError, match="not one value"):
        report.render("{{j:study.readouts}}", empty)


def test_a_stored_difference_by_its_path():
    """{{ci:PATH:KEY}} formats the {diff, ci95, n} at PATH (dotted) under KEY; a 'pck' key gets 3 decimals."""
    r = {"study": {"precision": {"paired": {"px": {"diff": -0.614, "ci95": [-0.8, -0.41], "n": 3},
                                            "pck_bbox": {"diff": 0.0012, "ci95": [-0.003, 0.005], "n": 3}}}}}
    text = "{{ci:study.precision.paired:px}} and {{ci:study.precision.paired:pck_bbox}}"
    assert report.render(text, r) == "-0.61 [-0.80, -0.41] and +0.001 [-0.003, +0.005] ns"
    with pytest.raises(UsageError, match=r"\{\{ci:study.precision.paired:px_sym\}\}"):
        report.render("{{ci:study.precision.paired:px_sym}}", r)


def test_the_ladder_table_pairs_each_step_with_the_row_above():
    """Table 3 (study.LADDER's steps): each row's change is its stored step from the row above, and its last column
    the same change made alone to RegressionNet (report.LADDER_ALONE); known per-seed PCKs give known changes, the
    changes add up to HeatmapNet minus RegressionNet, and share() gives a step's part of it."""
    from common import paired_metrics
    from runs import ROW_METRICS
    from study import LADDER
    pck = dict(zip((n for n, _ in LADDER), (0.1, 0.3, 0.5, 0.6, 0.65, 0.65, 0.85)))
    pck.update(gap_fc_nodropout=0.15, gap_fc_nosigmoid=0.05, decoder64_gap_fc=0.2)
    rows = {n: [{"seed": s, "pck_bbox": {"0.05": p + 0.01 * s}, "pck_bbox_sym": {"0.05": p},
                 "pck_bbox_shifted": {"0.05": p / 2}} for s in range(3)]
            for n, p in pck.items()}
    metrics = {k: ROW_METRICS[k] for k in ("pck_bbox",)}
    pairs = list(zip((n for n, _ in LADDER), (n for n, _ in LADDER[1:]))) + [("gap_fc", n) for n in pck]
    steps = [{"from": a, "to": b, **paired_metrics(rows[a], rows[b], metrics)} for a, b in pairs]
    r = {"study": {"readouts": {"readouts": {n: {"complete": True, "params": 1e6, "per_seed": v}
                                             for n, v in rows.items()}, "steps": steps}}}
    table = report.table_ladder(r).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    changes = [c[3] for c in cells]
    assert changes == ["", "+0.200 [+0.200, +0.200]", "+0.200 [+0.200, +0.200]", "+0.100 [+0.100, +0.100]",
                       "+0.050 [+0.050, +0.050]", "+0.000 [+0.000, +0.000] ns", "+0.200 [+0.200, +0.200]"]
    assert [c[4] for c in cells] == ["", "+0.200 [+0.200, +0.200]", "+0.050 [+0.050, +0.050]", "-0.050 [-0.050, -0.050]",
                                     "", "", ""]
    assert sum(float(c.split()[0]) for c in changes[1:]) == pytest.approx(pck["heatmap_64"] - pck["gap_fc"])
    assert report.share(steps, "integral_64", "heatmap_64") == "27 %"  # 0.2 of 0.75
    assert table[2] == "| 0 | RegressionNet as specified | 0.110 ± 0.010 |  |  |"
    assert len(report.TABLES["ladder_layers"](r).splitlines()) == 2 + 6  # steps 0-5: up to IntegralNet


def test_the_why_table_gives_each_network_both_ways():
    """Table 2 (report.WHY_ROWS): per network, PCK@0.05 trained and scored as labelled, and trained with the
    symmetric loss and scored in either order; known per-seed values give known cells."""
    hand = {f"{m}_{loss}": [{"seed": s, "best_epoch": 4 + s, "pck_bbox": {"0.05": p + 0.01 * s},
                             "pck_bbox_sym": {"0.05": p + 0.2}} for s in range(3)]
            for m, p in (("regression", 0.1), ("integral", 0.5), ("heatmap", 0.6))
            for loss in ("strict", "symmetric")}
    lines = report.table_why({"study": {"hand_loss": {"rows": hand}}}).splitlines()
    assert [line.split(" | ")[0].lstrip("| ") for line in lines[2:]] == [report.NAMES[m] for m in report.WHY_ROWS]
    assert lines[3].endswith("| coordinates | 0.510 ± 0.010 | 0.700 ± 0.000 | 0.700 ± 0.000 |")  # IntegralNet


def test_the_failing_hands_on_the_other_hand_are_counted_in_words():
    """report.heatmap_misses_on_other_hand: 'all n' when every hand HeatmapNet misses lies on the other hand, else
    'k of n', summed over the two categories where HeatmapNet fails."""
    def r(on):
        return {"failures": {"characterisation": {
            "regression_only": {"hands": {"count": 2, "heatmap": {"on_other_hand": 2}}},
            "both_fail": {"hands": {"count": 5, "heatmap": {"on_other_hand": on}}}}}}
    assert report.heatmap_misses_on_other_hand(r(5)) == "all 7"
    assert report.heatmap_misses_on_other_hand(r(3)) == "5 of 7"


def test_the_two_steps_table_gives_each_setting_its_stored_differences():
    """Table C8 (report.TWO_STEPS): per setting the stored paired differences of the output layers and the targets in
    that setting's PCK key."""
    def d(x):
        return {"diff": x, "ci95": [x - 0.01, x + 0.01], "n": 3}
    h = {"integral_minus_regression": {k: {"pck_bbox": d(0.5), "pck_bbox_sym": d(0.8)}
                                       for k in ("strict", "strict_last", "symmetric", "symmetric_last")},
         "heatmap_minus_integral": {k: {"pck_bbox": d(0.2), "pck_bbox_sym": d(0.005)}
                                    for k in ("strict", "strict_last", "symmetric", "symmetric_last")}}
    cells = [line.split(" | ")[1:] for line in report.table_two_steps({"study": {"hand_loss": h}}).splitlines()[2:]]
    strict, sym = ["+0.500 [+0.490, +0.510]", "+0.200 [+0.190, +0.210] |"], ["+0.800 [+0.790, +0.810]",
                                                                         "+0.005 [-0.005, +0.015] ns |"]
    assert cells == [strict, sym, strict, sym]
    assert (report.split(h, "strict", "layers"), report.split(h, "strict", "targets")) == ("71 %", "29 %")  # 0.5 : 0.2


def test_the_readouts_table_lists_each_probed_network_under_each_read_out():
    """Table C8 (report.table_readouts_probed): one row per network and read-out of its maps, known per-seed values
    giving known cells."""
    def rows(p):
        return [{"seed": s, "pck_bbox": {"0.05": p}, "pck_bbox_sym": {"0.05": p + 0.1}, "px": 2.0 + s,
                 "px_head_feet": 1.0} for s in range(3)]
    ro = {"heatmap": {"argmax": rows(0.8), "quarter": rows(0.85)},
          "integral": {"mean": rows(0.75), "argmax": rows(0.6), "quarter": rows(0.65)}}
    lines = report.table_readouts_probed({"study": {"hand_loss": {"readouts_probed": ro}}}).splitlines()[2:]
    assert [line.split(" | ")[1] for line in lines] == [report.READ_OUTS[d] for d in ("argmax", "quarter",
                                                                                       "mean", "argmax",
                                                                                       "quarter")]
    assert lines[2] == ("| IntegralNet (soft-argmax) | mean position under the map | 0.750 ± 0.000 | 0.850 ± 0.000 | "
                        "3.00 ± 1.00 | 1.00 ± 0.00 |")


def test_the_last_epoch_ladder_shows_the_rerun_rows_with_their_stored_steps():
    """Table C7 (report.table_ladder_last): Table C1's rows whose networks were rerun keeping the last epoch, each with
    its stored change from the row above (study hand_loss ladder_last)."""
    from common import paired_metrics
    from runs import ROW_METRICS
    from study import LADDER, LAST_EPOCH_RERUN, READOUTS
    names = [n for n, _ in LADDER if READOUTS[n][0] in LAST_EPOCH_RERUN]
    pck = dict(zip(names, (0.1, 0.3, 0.6, 0.55, 0.7, 0.75, 0.8)))
    rows = {f"{READOUTS[n][0]}_strict_last": [{"seed": s, "pck_bbox": {"0.05": p}, "pck_bbox_sym": {"0.05": p},
                                                "pck_bbox_shifted": {"0.05": p / 2}} for s in range(3)]
            for n, p in pck.items()}
    metrics = {k: ROW_METRICS[k] for k in ("pck_bbox",)}
    steps = {b: {"from": a, **paired_metrics(rows[f"{READOUTS[a][0]}_strict_last"],
                                             rows[f"{READOUTS[b][0]}_strict_last"], metrics)}
             for a, b in zip(names, names[1:])}
    table = report.table_ladder_last({"study": {"hand_loss": {"rows": rows, "ladder_last": steps}}}).splitlines()
    assert [line.split(" | ")[0].lstrip("| ") for line in table[2:]] == [str(i) for i in range(len(names))]
    assert [line.split(" | ")[-2] for line in table[2:]] == ["", "+0.200 [+0.200, +0.200]", "+0.300 [+0.300, +0.300]",
                                                              "-0.050 [-0.050, -0.050]", "+0.150 [+0.150, +0.150]",
                                                              "+0.050 [+0.050, +0.050]", "+0.050 [+0.050, +0.050]"]


def test_main_time_is_one_number_on_one_machine_and_names_each_machine_otherwise():
    t = {k: {"seconds": s, "machine": MACHINE} for k, s in (("train.py", 480.0), ("evaluate.py", 30.0),
                                                            ("baseline.py", 30.0))}
    assert main_time(t) == "9.0 minutes (Some CPU, 2 cores, cpu; `train.py` in bf16)"
    t["evaluate.py"] = {"seconds": 30.0, "machine": {**MACHINE, "cpu": "Other CPU"}}
    assert "`evaluate.py` on Other CPU" in main_time(t)


def test_the_main_command_on_tiny_data_then_the_documents(tiny_data, tiny_shifted, tmp_path, monkeypatch):
    """train.py, evaluate.py and baseline.py (tiny data) into a folder holding the committed study results, then
    both templates render, and the tables the main command owns show its new numbers."""
    import shutil

    import baseline
    import evaluate
    import train
    from common import RESULTS_DIR
    for name in ("study_results.json", "ablation_seeds.json", "how_far_results.json", "benchmark.json",
                 "main_command.json", "best"):
        (shutil.copytree if (RESULTS_DIR / name).is_dir() else shutil.copyfile)(RESULTS_DIR / name, tmp_path / name)
    import runs
    monkeypatch.setattr(runs, "shifted_test_dir", lambda: tiny_shifted)
    common = ["--data-dir", str(tiny_data), "--out-dir", str(tmp_path)]
    train.main([*common, "--epochs", "1", "--precision", "fp32"])
    evaluate.main(common)
    baseline.main([*common, "--epochs", "1", "--precision", "fp32", "--studies", "skip"])
    results = report.load_results(tmp_path)
    docs = {template.name: report.render(template.read_text(), results, template.name) for template in report.DOCS}
    assert not any("{{" in text for text in docs.values())
    assert f"curve starts at {results['metrics']['heatmap']['exact_fraction']:.2f}" in docs["report_template.md"]
    assert "`train.py` in fp32" in main_time(results["timings"])
