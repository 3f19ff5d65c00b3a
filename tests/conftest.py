import os
import tempfile

import pytest
import torch

# Tests are CPU-sized: keep torch on the cores CI has, and make matplotlib headless.
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))
# The counting cache (attnrepro.analysis.counting.cache_dir) of the tests lives in a folder of their own, never in
# the user's cache; kernels started by the tests inherit it.
_CACHE = tempfile.TemporaryDirectory(prefix="attnrepro-test-cache-")
os.environ["ATTNREPRO_CACHE"] = _CACHE.name


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: counting or building big models with OpenMP spinning on a shared 2-core
    machine is many times slower. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _registry_restored(monkeypatch):
    """Every test leaves the attention registry (and $ATTNREPRO_PLUGINS) as it found them: a test that registers a
    kind or loads a plugin cannot change what the next test sees."""
    from attnrepro import registry

    kinds, loaded, seen = dict(registry._KINDS), dict(registry._LOADED), list(registry._ENV_SEEN)
    monkeypatch.setenv(registry.PLUGINS_ENV, os.environ.get(registry.PLUGINS_ENV, ""))
    yield
    registry._KINDS.clear()
    registry._KINDS.update(kinds)
    registry._LOADED.clear()
    registry._LOADED.update(loaded)
    registry._ENV_SEEN[:] = seen
