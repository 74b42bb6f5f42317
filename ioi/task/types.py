"""Tensor shapes of the project, as jaxtyping aliases used in the methods' signatures.

The axis names are shared: a function taking ``HeadZ`` and returning ``PerPrompt`` promises that
the ``batch`` of both is the same. The tests run the methods under jaxtyping's import hook with
beartype (``--jaxtyping-packages`` in pyproject.toml), so a wrong shape fails there; outside the
tests the annotations cost nothing.

Axes: batch (prompts), pos (token positions), vocab, d_model, head, d_head, layer, variant (patched
runs stacked in one pass), and ``*rows`` for any leading axes (e.g. variants before the batch).
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

Tokens = Int[Tensor, "batch pos"]
"""Token ids of a batch of prompts."""
Logits = Float[Tensor, "batch pos vocab"]
EndLogits = Float[Tensor, "batch vocab"]
"""Logits at each prompt's END."""
PerPrompt = Float[Tensor, " batch"]
"""One value per prompt (e.g. its logit difference)."""
PerPromptRows = Float[Tensor, "*rows batch"]
"""One value per prompt under any leading axes (e.g. variants)."""
Positions = Int[Tensor, " batch"]
"""One token index per prompt (e.g. END)."""
PosMask = Bool[Tensor, "batch pos"]
"""Which (prompt, position) entries a patch or an ablation touches."""

Resid = Float[Tensor, "*rows batch pos d_model"]
"""A residual-stream (or MLP-output) activation over whole prompts."""
EndResid = Float[Tensor, "*rows batch d_model"]
"""A residual-stream vector at each prompt's END."""
ResidStack = Float[Tensor, "layer_plus_one batch pos d_model"]
"""The residual stream before each block, then the final residual (Activations.resid_pre)."""
MlpStack = Float[Tensor, "layer batch pos d_model"]

HeadZ = Float[Tensor, "batch pos head d_head"]
"""One layer's head outputs (hook_z)."""
ZStack = Float[Tensor, "layer batch pos head d_head"]
"""Every layer's head outputs, stacked."""
Pattern = Float[Tensor, "batch head query key"]
"""One layer's attention probabilities (hook_pattern)."""

Unembed = Float[Tensor, "d_model vocab"]
"""W_U."""
UnembedBias = Float[Tensor, " vocab"]
"""b_U."""
Direction = Float[Tensor, "batch d_model"]
"""W_U[:, IO] − W_U[:, S] per prompt: the residual direction the logit difference reads."""
HeadIn = Float[Tensor, "layer head d_model d_head"]
"""Per-head input weights (W_Q, W_K, W_V)."""
HeadOut = Float[Tensor, "layer head d_head d_model"]
"""Per-head output weights (W_O)."""
HeadGrid = Float[Tensor, "layer head"]
"""One value per head, indexed [layer, head]; heads not computed are NaN."""
PerVariant = Float[Tensor, "variant batch"]
"""Per-prompt values of each patched run."""
PerHead = Float[Tensor, " n_heads"]
"""One value per head of a list of heads (e.g. each sender's effect)."""
SenderDelta = Float[Tensor, "sender n_rows d_model"]
"""Per sender head, a change of the residual stream at the positions a [batch, pos] mask selects."""
NameResid = Float[Tensor, "names d_model"]
"""A residual vector per name token (copy scores)."""
NameTokens = Int[Tensor, " names"]
PromptHeads = Float[Tensor, "batch layer head"]
PromptLayers = Float[Tensor, "batch layer"]
EdgeValues = Float[Tensor, " edge"]
"""One value per edge of a model's graph (ioi.methods.edges.EdgeGraph.edges order)."""
EdgeMask = Bool[Tensor, "variant edge"]
"""Per variant, which edges are patched (True) or kept (False)."""
EdgePrompts = Float[Tensor, "edge batch"]
"""Per edge, one value per prompt."""
