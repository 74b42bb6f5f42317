"""Loading every model the product supports as a TransformerLens bridge plus its tokenizer.

Model names:
- ``ioi-tiny``: the bundled small pretrained model (``ioi/assets/ioi-tiny``), the default;
- ``ioi-small``: the bundled 4-layer model pretrained towards GPT-2's circuit (``ioi/assets/ioi-small``);
- ``random:gpt2``: GPT-2 small's architecture with seeded random weights and the real GPT-2
  tokenizer (shipped in ``ioi/assets/gpt2``), for offline tests and benchmarks of the GPT-2 path;
- ``random:tiny``: a 2-layer random GPT-2 with the same tokenizer, for fast tests;
- ``random:pythia``: a 2-layer random GPT-NeoX (Pythia's architecture: rotary embeddings, attention
  and MLP in parallel) with the same tokenizer, for testing that the methods leave GPT-2's fast
  paths on other architectures;
- ``gpt2`` or any HuggingFace causal LM name TransformerLens supports (hub, HF cache or offline);
- a directory: a local HF copy of a model or a checkpoint written by :mod:`ioi.models.train`.

Every model is an HF module first (fine-tuning trains its raw weights) and is wrapped in a
``TransformerBridge`` in compatibility mode for analysis (HookedTransformer numerics and hook names).

No code from a model directory ever runs (``trust_remote_code=False``; a config with an ``auto_map``
is refused), and a checkpoint's files are verified against the sha256 sums in its manifest before
its weights are used.
"""

from __future__ import annotations

import os

# The hub is unreachable in air-gapped labs; offline mode makes a missing model fail fast instead of
# retrying for minutes. Users with the hub can set HF_HUB_OFFLINE=0.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from ioi.models.checks import BUNDLED, did_you_mean, unknown_random
from ioi.task.defaults import ASSETS, DEFAULT_MODEL

hf_logging.disable_progress_bar()  # per-file bars drown the product's own progress output

_RANDOM_CONFIGS = {
    "random:gpt2": dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024),
    "random:tiny": dict(n_layer=2, n_head=4, n_embd=64, n_positions=64),
    "random:pythia": dict(
        num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=256,
        max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True,
        bos_token_id=50256, eos_token_id=50256,
    ),  # fmt: skip
}


class ModelUnavailableError(RuntimeError):
    """A model's weights or tokenizer cannot be had here; the message says how to get them."""


class CorruptCheckpoint(ModelUnavailableError):
    """A checkpoint whose files are missing or do not match the checksums in its manifest."""


@dataclass
class LoadedModel:
    """A model ready for analysis.

    `bridge` is the TransformerBridge (compatibility mode); `hf_model` the raw HF module it wraps,
    which fine-tuning trains; `source` says in words where the weights came from.
    """

    name: str
    bridge: torch.nn.Module
    hf_model: torch.nn.Module
    tokenizer: PreTrainedTokenizerFast
    source: str
    device: str

    @property
    def n_layers(self) -> int:
        return self.bridge.cfg.n_layers

    @property
    def n_heads(self) -> int:
        return self.bridge.cfg.n_heads


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2's byte-level BPE tokenizer, built offline from the shipped vocab and merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    folder = ASSETS / "gpt2"
    bpe = Tokenizer(models.BPE.from_file(str(folder / "encoder.json"), str(folder / "vocab.bpe")))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    eot = "<|endoftext|>"
    # name_or_path and add_bos_token stop TransformerLens from re-loading the tokenizer by name.
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=eot, eos_token=eot, unk_token=eot, pad_token=eot,
        name_or_path="gpt2-offline", add_bos_token=True,
    )  # fmt: skip
    if len(tok) != 50257:
        raise ModelUnavailableError(f"GPT-2 tokenizer files are damaged: {len(tok)} tokens, want 50257")
    return tok


def _random_model(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == "random:pythia":
        return GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=50257, **_RANDOM_CONFIGS[name]))
    return GPT2LMHeadModel(GPT2Config(vocab_size=50257, **_RANDOM_CONFIGS[name]))


def load_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved in an HF-format directory; refuses an empty one (transformers 5 builds
    an empty tokenizer silently when the files are missing)."""
    if not (directory / "tokenizer.json").exists():
        raise ModelUnavailableError(f"{directory} has no tokenizer.json")
    tok = PreTrainedTokenizerFast.from_pretrained(str(directory), add_bos_token=True, trust_remote_code=False)
    if len(tok) < 10 or tok.bos_token_id is None:
        raise ModelUnavailableError(f"the tokenizer in {directory} is empty or has no BOS token")
    return tok


def load_hf(
    name: str = DEFAULT_MODEL, *, seed: int = 0
) -> tuple[torch.nn.Module, PreTrainedTokenizerFast, str]:
    """The raw HF model, its tokenizer and a sentence saying where the weights came from."""
    if name in _RANDOM_CONFIGS:
        return _random_model(name, seed), gpt2_tokenizer(), f"random weights (seed {seed}), GPT-2 tokenizer"
    if name.startswith("random:"):
        raise ModelUnavailableError(unknown_random(name))
    path = ASSETS / name if name in BUNDLED else Path(name).expanduser()
    if path.is_dir():
        return (*_load_directory(path), f"local directory {path}")
    if name in BUNDLED:
        raise ModelUnavailableError(
            f"the bundled {name} model is missing; rebuild it with `python -m ioi {BUNDLED[name]}`"
        )
    # a path (not a hub name such as "gpt2" or "org/model"): say it is not there
    looks_local = name.startswith(("/", ".", "~")) or (str(path.parent) != "." and path.parent.is_dir())
    if path.exists() or looks_local:
        raise ModelUnavailableError(f"cannot load {name}: it does not exist or is not a directory")
    try:
        model = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=False)
        tok = PreTrainedTokenizerFast.from_pretrained(name, add_bos_token=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelUnavailableError(
            f"cannot load {name!r} ({type(err).__name__}): {did_you_mean(name)}download it once with "
            f"internet access (HF_HUB_OFFLINE=0 python -m ioi eval --model {name}) or pass --model "
            "/path/to/a/local/copy"
        ) from err
    return model, tok, f"HuggingFace model {name} (hub or local HF cache)"


def tokenizer_of(name: str) -> PreTrainedTokenizerFast:
    """The tokenizer of model `name`, without its weights: the shipped GPT-2 one for gpt2 and the
    random models, a bundled model's or a directory's own; else the hub's (load_hf's errors)."""
    if name in _RANDOM_CONFIGS or name == "gpt2":
        return gpt2_tokenizer()
    path = ASSETS / name if name in BUNDLED else Path(name).expanduser()
    if path.is_dir():
        return load_tokenizer(path)
    return load_hf(name)[1]


def _load_directory(path: Path) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """The model and tokenizer of a local directory, refusing anything that would run its code
    and verifying a checkpoint's files first."""
    try:
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise ModelUnavailableError(f"{path} is not a model directory (no config.json)") from None
    except (OSError, ValueError) as err:
        raise ModelUnavailableError(f"{path}/config.json is unreadable ({err})") from None
    if not isinstance(config, dict):
        raise ModelUnavailableError(f"{path}/config.json is not a model configuration")
    if "auto_map" in config:
        raise ModelUnavailableError(
            f"{path} asks to run its own Python code (auto_map in config.json); ioi never runs code "
            "from a model directory: use a model whose architecture transformers ships"
        )
    problem = verify_checkpoint(path)
    if problem:
        raise CorruptCheckpoint(problem)
    if not list(path.glob("*.safetensors")) and not list(path.glob("*.bin")):
        raise ModelUnavailableError(f"{path} has no weights (model.safetensors)")
    tok = load_tokenizer(path) if (path / "tokenizer.json").exists() else gpt2_tokenizer()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=False)
    except Exception as err:  # transformers and safetensors raise many kinds for a damaged file
        why = f"{type(err).__name__}: {err}"
        raise ModelUnavailableError(f"the weights in {path} cannot be loaded ({why})") from None
    return model, tok


def wrap(hf_model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, device: str) -> torch.nn.Module:
    """A TransformerBridge in compatibility mode around `hf_model`, with the hook flags analyses use.

    The bridge keeps its own processed weights, so later training of `hf_model` needs a new wrap.
    """
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    hf_model = hf_model.to(device).eval()
    arch = (getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__])[0]
    bridge = build_bridge_from_module(
        hf_model, arch, hf_config=hf_model.config, tokenizer=tokenizer, device=device
    )
    bridge.enable_compatibility_mode()
    bridge.set_use_attn_result(True)
    bridge.set_use_split_qkv_input(True)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return bridge


def load_model(name: str = DEFAULT_MODEL, *, device: str | None = None, seed: int = 0) -> LoadedModel:
    """Load `name` (see the module docstring) for analysis on `device` (default: CUDA if present)."""
    device = device or default_device()
    hf_model, tok, source = load_hf(name, seed=seed)
    return LoadedModel(
        name=name, bridge=wrap(hf_model, tok, device), hf_model=hf_model, tokenizer=tok,
        source=source, device=device,
    )  # fmt: skip


def read_manifest(directory: str | Path) -> dict | None:
    """The JSON manifest of a checkpoint directory, or None for a plain model directory;
    CorruptCheckpoint if it is unreadable."""
    path = Path(directory) / "manifest.json"
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:
        raise CorruptCheckpoint(f"{path} is unreadable ({err})") from None
    if not isinstance(manifest, dict):
        raise CorruptCheckpoint(f"{path} is not a checkpoint manifest")
    return manifest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


PRUNABLE = ("optimizer.safetensors",)
"""Checkpoint files that may be deleted after writing (only the latest checkpoint keeps them)."""


def verify_checkpoint(directory: str | Path) -> str | None:
    """None if every file a checkpoint's manifest lists is there and matches its sha256 (or the
    directory is not a checkpoint, or predates checksums); else what is wrong, in words."""
    folder = Path(directory)
    try:
        manifest = read_manifest(folder)
    except CorruptCheckpoint as err:
        return str(err)
    if manifest is None or "files" not in manifest:
        return None
    for name, digest in manifest["files"].items():
        f = folder / name
        if not f.is_file():
            if name in PRUNABLE:
                continue
            return f"{f} is missing (the checkpoint's manifest lists it)"
        if file_sha256(f) != digest:
            return f"{f} does not match its sha256 in manifest.json (damaged)"
    return None
