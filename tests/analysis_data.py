"""IOI batches for the analysis tests (clean prompts and their ABC counterfactuals)."""

from __future__ import annotations

from ioi.models.load import LoadedModel
from ioi.task.data import IOIBatch, abc_counterfactual, make_dataset, tokenize


def ioi_batches(model: LoadedModel, size: int, seed: int = 0) -> tuple[IOIBatch, IOIBatch]:
    """`size` evaluation prompts and their ABC versions, tokenized for `model`."""
    clean = tokenize(make_dataset(size, seed, "eval"), model.tokenizer)
    abc = tokenize(abc_counterfactual(clean.samples, seed), model.tokenizer, like=clean)
    return clean, abc
