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
