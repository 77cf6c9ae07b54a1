import os
from pathlib import Path

import pytest

# Keep every test offline and single-threaded-friendly on the 2-core CI machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA (gpu marker)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared/data not found at {SHARED}; real benchmark files unavailable")
    return SHARED


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from nebula_utils.inference.models import resolve_model_path

    return resolve_model_path("tiny-random")
