"""Shared fixtures: a tiny generated dataset (built once per session) and the problem2/ import path."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(2)

import dataset  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """<root>/keypoints with 48 train / 16 val / 16 test images (seed 0)."""
    root = tmp_path_factory.mktemp("data")
    return dataset.generate_dataset(root, {"train": 48, "val": 16, "test": 16}, seed=0)


@pytest.fixture(scope="session")
def tiny_shifted(tiny_data):
    """A 16-image translation test set next to tiny_data (the default one has 200 images: slow to score)."""
    return dataset.shifted_test_dir(tiny_data.parent / "shifted", 16)


def child_pids(pid):
    """pids whose parent is `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def is_running(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
