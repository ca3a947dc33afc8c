import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Busy-waiting OpenMP threads waste shared cores (a 40-frame tiny clip: 85 s active vs 4 s passive).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny-tensor tests (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    one thread is as fast, and on a shared, oversubscribed CPU two spinning OpenMP threads made
    such modules ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe():
    """A tiny random-weight XDynaPipeline (xdyna_core.testing), one per test module."""
    from xdyna_core.pipeline import XDynaPipeline
    from xdyna_core.testing import make_tiny_components

    p = XDynaPipeline(**make_tiny_components(seed=0))
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none (the same code path runs on CPU in other tests)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
