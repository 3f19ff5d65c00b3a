import pytest


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may try a download."""
    monkeypatch.setenv("ATTNREPRO_OFFLINE", "1")


@pytest.fixture
def tiny_fn():
    from train_helpers import tiny_model_fn
    return tiny_model_fn
