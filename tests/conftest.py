"""Shared fixtures: small models are loaded once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# a job daemon a test starts (ioi.runs.daemon) exits soon after its jobs instead of idling 10 minutes
os.environ.setdefault("IOI_JOB_DAEMON_IDLE", "10")

import pytest
import torch

from ioi.models.load import ASSETS, LoadedModel, gpt2_tokenizer, load_model

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
HAS_TINY = (ASSETS / "ioi-tiny" / "config.json").exists()
needs_tiny = pytest.mark.skipif(not HAS_TINY, reason="the bundled ioi-tiny model is not built yet")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gpt2_tok():
    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def tiny_random() -> LoadedModel:
    """random:tiny — 2 layers, 4 heads, d_model 64, the GPT-2 tokenizer."""
    return load_model("random:tiny", device="cpu")


@pytest.fixture(scope="session")
def gpt2_random() -> LoadedModel:
    """random:gpt2 — GPT-2 small's shape with random weights."""
    return load_model("random:gpt2", device="cpu")


@pytest.fixture(scope="session")
def ioi_tiny() -> LoadedModel:
    if not HAS_TINY:
        pytest.skip("the bundled ioi-tiny model is not built yet")
    return load_model("ioi-tiny", device="cpu")


@pytest.fixture(scope="session")
def ioi_tiny_tok():
    if not HAS_TINY:
        pytest.skip("the bundled ioi-tiny model is not built yet")
    from ioi.models.load import load_tokenizer

    return load_tokenizer(ASSETS / "ioi-tiny")
