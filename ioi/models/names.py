"""Whether a model name can be loaded here, decided cheaply (no torch, no weights read).

Submitting a job checks its model with `model_problem` so that a typo is refused at once instead of
failing in the background worker; `ioi.models.load` is what actually loads.
"""

from __future__ import annotations

import os
from pathlib import Path

from ioi.task.defaults import ASSETS, DEFAULT_MODEL


def _hf_offline() -> bool:
    # ioi.models.load sets HF_HUB_OFFLINE=1 unless the user chose otherwise; the same default here.
    return os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False")


def model_problem(name: str) -> str | None:
    """None when `name` is loadable as far as a cheap check can tell: the bundled model, a
    ``random:*`` architecture, a directory with a config.json, or a HuggingFace name (when offline,
    only one whose config is in the local HF cache). Otherwise a sentence saying what is wrong."""
    if name.startswith("random:"):
        return None
    path = ASSETS / "ioi-tiny" if name == DEFAULT_MODEL else Path(name).expanduser()
    if path.is_dir():
        return (
            None if (path / "config.json").exists() else f"{path} is not a model directory (no config.json)"
        )
    if name == DEFAULT_MODEL:
        return "the bundled ioi-tiny model is missing; rebuild it with `ioi pretrain-tiny`"
    if path.exists():
        return f"{path} is a file, not a model directory"
    if name.startswith(("/", ".", "~")):
        return f"model directory {path} does not exist"
    if not _hf_offline():
        return None
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except HFValidationError:
        cached = None
    if isinstance(cached, str):
        return None
    return (
        f"model {name!r} is neither a directory, {DEFAULT_MODEL}, random:* nor in the local HuggingFace "
        f"cache (offline); download it once with HF_HUB_OFFLINE=0 or give a local directory"
    )
