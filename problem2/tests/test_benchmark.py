import benchmark


def test_scaling_rows(tiny_data):
    rows = benchmark.measure_scaling(tiny_data, ((1, 1), (2, 1)), steps=1, batch_size=4)
    assert [(r["jobs"], r["threads"]) for r in rows] == [(1, 1), (2, 1)]
    assert len(rows[1]["images_per_s_per_job"]) == 2
    for r in rows:
        assert r["images_per_s"] == sum(r["images_per_s_per_job"]) > 0 and r["wall_s"] > 0
