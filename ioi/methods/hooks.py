"""Reading a model's activations, and the sites where the patching engine overwrites them.

One reader serves every method: :func:`read` runs one forward pass with optional hooks (patches)
and keeps the named activations, stopping as early as the names allow — with TransformerBridge's own
``stop_at_layer`` when every name lies in an earlier block (the same numbers as the full pass, as
the tests check), or right before the unembedding when they reach the last block, since the
bridge's ``stop_at_layer`` does not stop there. Hook names are TransformerLens's
(``blocks.L.attn.hook_z``, …).
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from ioi.models.load import LoadedModel
from ioi.task.circuit import Head
from ioi.task.data import IOIBatch
from ioi.task.types import Positions, PosMask

Hook = tuple[str, Callable]
"""(hook name, fn(activation, hook) -> replacement or None), as TransformerLens takes them."""

# site -> (hook name under blocks.{layer}., axis of the head in the hook's tensor or None for MLPs)
SITES: dict[str, tuple[str, int | None]] = {
    "z": ("attn.hook_z", 2),  # [batch, pos, head, d_head]
    "result": ("attn.hook_result", 2),  # [batch, pos, head, d_model]
    "q_input": ("hook_q_input", 2),  # [batch, pos, head, d_model]
    "k_input": ("hook_k_input", 2),
    "v_input": ("hook_v_input", 2),
    "pattern": ("attn.hook_pattern", 1),  # [batch, head, query pos, key pos]
    "mlp_out": ("hook_mlp_out", None),  # [batch, pos, d_model]
}


def hook_name(layer: int, site: str) -> str:
    """The hook name of `site` (a key of SITES) in block `layer`."""
    if site not in SITES:
        raise ValueError(f"unknown patch site {site!r}; known: {', '.join(SITES)}")
    return f"blocks.{layer}.{SITES[site][0]}"


def final_resid_name(n_layers: int) -> str:
    """The hook of the final residual stream (what enters the final LayerNorm)."""
    return f"blocks.{n_layers - 1}.hook_resid_post"


def all_heads(model: LoadedModel) -> list[Head]:
    """Every head of `model`, layer-major (a Head is also a (layer, head) tuple)."""
    return [Head(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]


@dataclass(frozen=True)
class Patch:
    """Overwrite one activation: `site` of head `head` in `layer` (head None: an MLP site).

    value: [batch, pos, ...] the replacement (e.g. [batch, pos, d_head] for a head's hook_z; for
    "pattern" [batch, query pos, key pos]), or with `where` only the selected entries
    [where.sum(), ...]. where: [batch, pos] bool (query positions for "pattern"); None patches
    every position.
    """

    layer: int
    head: int | None
    value: Tensor
    where: PosMask | None = None
    site: str = "z"


def position_mask(batch: IOIBatch, position: str | None) -> PosMask | None:
    """[batch, pos] bool, True at each prompt's `position` ("end", "io", "s1", "s1+1", "s2");
    None for None (every position)."""
    if position is None:
        return None
    where = torch.zeros(batch.tokens.shape, dtype=torch.bool)
    where[torch.arange(len(batch)), batch.positions(position)] = True
    return where


class _Stop(Exception):
    """Raised by a hook once every wanted activation is read: the rest of the pass is not needed."""


_BLOCK = re.compile(r"blocks\.(\d+)\.")
_QKV_INPUT = tuple(f"hook_{s}" for s in ("q_input", "k_input", "v_input"))
_LOCKS: weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


@contextmanager
def _fork_only_if(bridge: torch.nn.Module, needed: bool) -> Iterator[None]:
    """The pass with the bridge's per-head copies of the residual for Q/K/V (its
    `use_split_qkv_input`, on since loading) only when a name or hook needs them: building them
    costs each attention layer three LayerNorms per head. The same numbers either way (tests).
    The passes on one bridge are serialised, so one in another thread (a dashboard session's)
    never sees the flag switched under it."""
    split = bool(getattr(bridge.cfg, "use_split_qkv_input", False))
    with _LOCKS_LOCK:
        lock = _LOCKS.setdefault(bridge, threading.RLock())
    with lock:
        if needed or not split:
            yield
            return
        bridge.set_use_split_qkv_input(False)
        try:
            yield
        finally:
            bridge.set_use_split_qkv_input(True)


def read(
    bridge: torch.nn.Module,
    inputs: Tensor,
    names: Sequence[str],
    *,
    hooks: Sequence[Hook] = (),
    at: Positions | None = None,
    start_at_layer: int | None = None,
    chunk: int | None = None,
) -> dict[str, Tensor]:
    """{name: activation} of one forward pass of `bridge` on `inputs`, with `hooks` (e.g. patches).

    inputs: [rows, pos] tokens, or with `start_at_layer` the residual [rows, pos, d_model] entering
    that block. at: [rows] positions; given, only x[r, at[r]] of each activation is kept (bounds
    memory). chunk: rows per forward pass (default all). Grad mode is the caller's: under
    torch.enable_grad the activations stay in the graph.
    """
    n_layers = bridge.cfg.n_layers
    final = final_resid_name(n_layers)
    layers = [_BLOCK.match(n) for n in names]
    in_blocks = all(m is not None for m in layers)
    deepest = max((int(m.group(1)) for m in layers if m), default=0)
    # stop_at_layer=n_layers would not stop before the unembedding: the final residual stops by a hook
    stop_at_layer = deepest + 1 if in_blocks and deepest + 1 < n_layers and names else None
    stop_hook = final if in_blocks and stop_at_layer is None and names else None
    wanted = list(dict.fromkeys([*names, *([stop_hook] if stop_hook else [])]))
    parts: dict[str, list[Tensor]] = {n: [] for n in wanted}
    step = chunk or len(inputs)
    kwargs = {"stop_at_layer": stop_at_layer, "start_at_layer": start_at_layer}
    forks = any(str(n).endswith(_QKV_INPUT) for n in [*wanted, *(h[0] for h in hooks)])
    with _fork_only_if(bridge, forks):
        _passes(bridge, inputs, step, hooks, wanted, parts, at, stop_hook, kwargs)
    return {n: torch.cat(parts[n]) for n in names}


def _passes(bridge, inputs, step, hooks, wanted, parts, at, stop_hook, kwargs) -> None:
    for i in range(0, len(inputs), step):
        rows_at = None if at is None else at[i : i + step].to(bridge.W_U.device)
        # hook.name is the canonical name (METHODS §10): register under each name, read by closure
        saves = [(n, partial(_keep, name=n, parts=parts, at=rows_at, stop=n == stop_hook)) for n in wanted]
        try:
            with bridge.hooks(fwd_hooks=[*hooks, *saves]):
                bridge(inputs[i : i + step], **{k: v for k, v in kwargs.items() if v is not None})
        except _Stop:
            pass


def _keep(
    act: Tensor, hook, name: str, parts: dict[str, list[Tensor]], at: Tensor | None, stop: bool
) -> None:
    parts[name].append(act.clone() if at is None else act[torch.arange(len(at), device=at.device), at])
    if stop:
        raise _Stop


@torch.no_grad()
def read_activations(
    model: LoadedModel, batch: IOIBatch, names: Sequence[str], *, chunk: int = 128, hooks: Sequence[Hook] = ()
) -> dict[str, Tensor]:
    """:func:`read` of `names` on a batch's tokens, `chunk` prompts per forward pass, without grad."""
    return read(model.bridge, batch.tokens.to(model.device), names, hooks=hooks, chunk=chunk)
