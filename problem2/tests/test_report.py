import json

import report


def test_committed_tables_match_committed_results():
    """Every table in report.md / README.md equals what report.py generates from results/*.json."""
    assert report.main(["--check"]) == 0


def test_render_replaces_only_marked_blocks():
    results = {"timings": {"train.py": 120.0, "evaluate.py": 6.0}}
    text = "intro 1.23\n<!-- table:timing -->\nstale\n<!-- /table -->\noutro\n"
    out = report.render(text, results)
    assert out.startswith("intro 1.23\n<!-- table:timing -->\n| step |") and out.endswith("<!-- /table -->\noutro\n")
    assert "| `train.py` | 2.0 |" in out and "**2.1**" in out
    assert report.render(out, results) == out


def test_md_table_shape():
    assert report.md(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert json.loads(json.dumps(report.THR)) == ["0.05", "0.1", "0.15", "0.2"]


def test_inline_values_are_regenerated():
    results = {"timings": {"train.py": 600.0, "baseline.py": 1200.0}}
    text = "the study takes <!-- v:study_minutes -->999<!-- /v --> minutes"
    assert report.render(text, results) == "the study takes <!-- v:study_minutes -->30<!-- /v --> minutes"
