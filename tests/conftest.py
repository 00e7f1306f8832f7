import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_model():
    from tiny_models import tiny_dual_encoder

    return tiny_dual_encoder()
