import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """Model tests run many tiny ops: one intra-op thread avoids OpenMP spinning on shared CPUs (10x faster)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
