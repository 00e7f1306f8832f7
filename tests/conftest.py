import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_model():
    from tiny_models import tiny_dual_encoder

    return tiny_dual_encoder()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and a busy machine cannot slow them down as much."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
