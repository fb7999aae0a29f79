import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Two cores in CI: keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def mock_dir(tmp_path_factory):
    """A directory holding ``obs.npz``, the quick NGC 4697-like KinMS mock observation
    (examples/ngc4697_mock_quick.toml) that the quick fit configuration reads."""
    import nuker_mge_plugin
    from nuker_mge_plugin.mock import load_mock_config, mock_from_parameters
    d = tmp_path_factory.mktemp("quick_mock")
    examples = Path(nuker_mge_plugin.__file__).parent / "examples"
    truth, distance, obs = load_mock_config(examples / "ngc4697_mock_quick.toml")
    mock_from_parameters(d / "obs.npz", truth, distance_mpc=distance, **obs)
    return d


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
