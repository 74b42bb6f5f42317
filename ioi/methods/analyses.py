"""The registry of analyses: each turns (model, clean batch, ABC batch) into a per-head table.

Every chart of the dashboard, every `python -m ioi analyze METHOD` and every analysis a job runs
at a checkpoint goes through `run_analysis`, so a new method registered here appears everywhere.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # the dashboard reads stored AnalysisResults without importing torch
    import torch

    from ioi.models.load import LoadedModel
    from ioi.task.data import IOIBatch


@dataclass
class AnalysisResult:
    """`heads` has one row per head with columns layer, head, value (plus method-specific ones);
    `summary` holds scalars (e.g. faithfulness); `tables` any further tidy tables."""

    method: str
    heads: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            **self.summary,
            "heads": self.heads.to_dict(orient="records"),
            **{name: t.to_dict(orient="records") for name, t in self.tables.items()},
        }


def heads_frame(value: torch.Tensor, **columns: torch.Tensor) -> pd.DataFrame:
    """The `heads` table from [layer, head] tensors: columns layer, head, value, then `columns`."""
    n_layers, n_heads = value.shape
    frame = {
        "layer": [layer for layer in range(n_layers) for _ in range(n_heads)],
        "head": [h for _ in range(n_layers) for h in range(n_heads)],
        "value": value.detach().cpu().double().flatten().tolist(),
    }
    for name, col in columns.items():
        frame[name] = col.detach().cpu().double().flatten().tolist()
    return pd.DataFrame(frame)


AnalysisFn = Callable[..., AnalysisResult]
"""fn(model, clean, abc, *, other=None, **options) -> AnalysisResult"""


@dataclass(frozen=True)
class Analysis:
    name: str
    description: str
    fn: AnalysisFn
    needs_other: bool = False


ANALYSES: dict[str, Analysis] = {}
# Modules that register analyses when imported; imported lazily to keep `import ioi` light.
BUILTIN_MODULES: tuple[str, ...] = (
    "ioi.methods.attribution",
    "ioi.methods.attention",
    "ioi.methods.patching",
    "ioi.methods.path_patching",
    "ioi.methods.ablation",
    "ioi.methods.classify",
    "ioi.methods.cmap",
)


def load_builtin_analyses() -> dict[str, Analysis]:
    """Import every built-in analysis module (those present) and return the registry."""
    for module in BUILTIN_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    return ANALYSES


def register_analysis(name: str, description: str, *, needs_other: bool = False):
    """Decorator adding `fn(model, clean, abc, *, other=None, **options)` to the registry."""

    def add(fn: AnalysisFn) -> AnalysisFn:
        ANALYSES[name] = Analysis(name, description, fn, needs_other)
        return fn

    return add


def run_analysis(
    name: str,
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    other: LoadedModel | None = None,
    **options: Any,
) -> AnalysisResult:
    """Run registered analysis `name`; ValueError listing the known ones for an unknown name."""
    load_builtin_analyses()
    if name not in ANALYSES:
        raise ValueError(f"unknown analysis {name!r}; known: {', '.join(sorted(ANALYSES))}")
    entry = ANALYSES[name]
    if entry.needs_other and other is None:
        raise ValueError(f"analysis {name!r} compares two models: give the second one (--other)")
    return entry.fn(model, clean, abc, other=other, **options)
