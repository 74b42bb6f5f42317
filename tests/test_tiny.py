"""ioi-tiny: tokenizer, corpus determinism, a short pretraining run, and the shipped model's IOI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from ioi.models import tiny
from ioi.models.load import ASSETS
from ioi.models.tiny import HELD_OUT_TEMPLATES
from ioi.task.data import (
    NAMES,
    OBJECTS,
    PLACES,
    TEMPLATES,
    check_vocabulary,
    make_dataset,
    tokenize,
)

ASSET = ASSETS / "ioi-tiny"


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return tiny.build_tokenizer()


def test_names_places_objects_are_single_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    check_vocabulary(tokenizer)
    for word in (*NAMES, *PLACES, *OBJECTS):
        ids = tokenizer.encode(" " + word, add_special_tokens=False)
        assert len(ids) == 1
        assert tokenizer.decode(ids) == " " + word
        # The same id inside a sentence.
        assert ids[0] in tokenizer.encode(f"Then, {word} went home.", add_special_tokens=False)


def test_templates_in_vocabulary(tokenizer: PreTrainedTokenizerFast) -> None:
    assert tokenizer.bos_token_id is not None
    for sample in make_dataset(60, seed=0, split="eval"):
        ids = tokenizer.encode(sample.prompt, add_special_tokens=False)
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == sample.prompt
    assert len(TEMPLATES) == 15


def test_corpus_deterministic_and_in_vocabulary(tokenizer: PreTrainedTokenizerFast) -> None:
    a, b = tiny.corpus(seed=3, n=50), tiny.corpus(seed=3, n=50)
    assert a == b
    assert a != tiny.corpus(seed=4, n=50)
    vocab = tokenizer.get_vocab()
    encoded = tiny._encode_batch(a, vocab)
    for text, row in zip(a, encoded.tolist()):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.unk_token_id not in ids
        assert len(ids) < tiny.CONTEXT
        assert row[1 : 1 + len(ids)] == ids


def test_short_pretrain_writes_loadable_dir_deterministically(tmp_path: Path) -> None:
    calls: list[tuple[int, int, float]] = []
    manifest = tiny.pretrain_tiny(tmp_path / "a", seed=1, steps=2, progress=lambda *a: calls.append(a))
    tiny.pretrain_tiny(tmp_path / "b", seed=1, steps=2)
    assert [c[:2] for c in calls] == [(1, 2), (2, 2)]
    for name in ("config.json", "model.safetensors", "manifest.json", "tokenizer.json"):
        assert (tmp_path / "a" / name).exists()
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["steps"] == manifest["steps"] == 2
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    tok = PreTrainedTokenizerFast.from_pretrained(tmp_path / "a")
    assert len(tok) == model.config.vocab_size and tok.bos_token_id == model.config.bos_token_id
    check_vocabulary(tok)
    other = AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(v, other[k]) for k, v in model.state_dict().items())


def test_shipped_model_does_ioi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AutoModelForCausalLM.from_pretrained(ASSET).eval()
    tok = PreTrainedTokenizerFast.from_pretrained(ASSET)
    check_vocabulary(tok)
    batch = tokenize(make_dataset(200, seed=0, split="eval"), tok)
    rows = torch.arange(len(batch))
    with torch.no_grad():
        logits = model(batch.tokens).logits[rows, batch.end]
    diff = logits[rows, batch.io_tok] - logits[rows, batch.s_tok]
    accuracy = (logits.argmax(-1) == batch.io_tok).float().mean().item()
    assert accuracy >= 0.8 and (diff > 0).float().mean().item() >= 0.8
    assert diff.mean().item() >= 2.0
    # imperfect like GPT-2 small: some template the corpus held out scores below every seen one
    per_template = {int(g): diff[batch.group == g].mean().item() for g in batch.group.unique()}
    seen = [v for t, v in per_template.items() if t not in HELD_OUT_TEMPLATES]
    assert min(per_template[t] for t in HELD_OUT_TEMPLATES) < min(seen)
