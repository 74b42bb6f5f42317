"""ioi-small: its corpus (duplicates decide the answer), resumable deterministic pretraining."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ioi.models import small, small_corpus, tiny
from ioi.task.data import NAMES, make_dataset, tokenize


def _count(text: str, name: str) -> int:
    return len(re.findall(rf"\b{name}\b", text))


def test_tiny_vocabulary_is_unchanged_by_small_phrases() -> None:
    base = tiny.vocabulary()
    extended = tiny.vocabulary(small_corpus.PHRASES)
    assert set(base) < set(extended)
    assert tiny.build_tokenizer().get_vocab() == {w: i for i, w in enumerate(base)}


def test_duplicate_sentences_mention_the_answer_once() -> None:
    gen = small_corpus.SmallStoryGenerator(0)
    for k in range(300):
        io, s, third = gen.rng.sample(NAMES, 3)
        text = gen.dup_sentence(io, s, [third] if k % 2 else [])
        assert _count(text, io) == 1
        assert _count(text, s) >= 1 and text.endswith(" to")
        if k % 2:
            assert _count(text, third) >= 2
    for k in range(100):  # the large crowds of `max_others` > 2: up to four repeated distractors
        io, s, *others = gen.rng.sample(NAMES, 2 + k % 5)
        text = gen.dup_sentence(io, s, others)
        assert _count(text, io) == 1 and all(_count(text, n) >= 2 for n in others)
    for prompt, io, s in small_corpus.three_name_probes(50):
        assert _count(prompt, io) == 1 and _count(prompt, s) >= 1
        others = {n for n in NAMES if _count(prompt, n) and n != io}
        assert len(others) == 2 and all(_count(prompt, n) >= 2 for n in others - {s})


def _crowd_stories_with(**option: float) -> tuple[list[str], list[str]]:
    """100 `6l-crowd` stories without and with one generator option; checks first that the
    option at 0 draws nothing (every earlier recipe's corpus unchanged)."""
    crowd = small_corpus.VARIANTS["6l-crowd"]
    stories = lambda **o: small_corpus.SmallStoryGenerator(5, crowd.mix, crowd=True, **o).stories(100)  # noqa: E731
    plain = stories()
    assert plain == stories(**dict.fromkeys(option, 0.0))
    return plain, stories(**option)


def test_giver_sentences_ask_for_the_repeated_name() -> None:
    """`giver_p`'s sentences end where the answer is S, the name mentioned twice; off, no draw."""
    gen = small_corpus.SmallStoryGenerator(0)
    tok = small_corpus.build_small_tokenizer()
    for _ in range(100):
        io, s = gen.rng.sample(NAMES, 2)
        text = gen.giver_sentence(io, s)
        assert _count(text, io) == 1 and _count(text, s) == 2 and text.endswith(" was from")
        assert tok.unk_token_id not in tok.encode(f"{text} {s}.", add_special_tokens=False)
    _, asking = _crowd_stories_with(giver_p=0.5)
    assert any(" was from " in t and ", who gave it to" not in t for t in asking)


def test_visit_sentences_end_with_the_other_persons_place() -> None:
    """`visit_p`'s sentences: IO and S each at a different place, then S going to IO's; off, no draw."""
    gen = small_corpus.SmallStoryGenerator(0)
    tok = small_corpus.build_small_tokenizer()
    for _ in range(100):
        io, s = gen.rng.sample(NAMES, 2)
        text = gen.visit_sentence(io, s)
        head, answer = text.removesuffix(".").rsplit(f"{s} went to the ", 1)
        assert f"{io} was at the {answer}" in head and f"{s} was at the {answer}" not in head
        assert _count(text, io) == 1 and _count(text, s) == 2
        assert tok.unk_token_id not in tok.encode(text, add_special_tokens=False)
    plain, visiting = _crowd_stories_with(visit_p=0.4)
    assert sum(" was at the " in t for t in visiting) > sum(" was at the " in t for t in plain)

    back = small_corpus.SmallStoryGenerator(0, back_p=1.0)
    head, answer = back.visit_sentence("Mary", "John").removesuffix(".").rsplit(" John went back to the ", 1)
    assert f"John was at the {answer}" in head  # S's own place


def test_bind_sentences_ask_for_either_person():
    gen = small_corpus.SmallStoryGenerator(0)
    asked = []
    for _ in range(60):
        where, question = gen.bind_sentence("Mary", "John").split(". The one at the ")
        place, person = question.removesuffix(".").split(" was ")
        assert f"{person} was at the {place}" in where
        asked.append(person)
    assert {"Mary", "John"} == set(asked)  # not always the second, which position would answer


def test_corpus_deterministic_and_in_vocabulary() -> None:
    tok = small_corpus.build_small_tokenizer()
    a = small_corpus.SmallStoryGenerator(3).stories(200)
    assert a == small_corpus.SmallStoryGenerator(3).stories(200)
    assert a != small_corpus.SmallStoryGenerator(4).stories(200)
    assert any("given to" in t for t in a) and any(", who gave it to" in t for t in a)
    encoded = tiny._encode_batch(a, tok.get_vocab())
    assert not (encoded == tok.unk_token_id).any()
    for text in a[:20]:
        assert len(tok.encode(text, add_special_tokens=False)) < tiny.CONTEXT
    probes = tokenize(small_corpus.position_probes(40), tok)
    assert not (probes.tokens == tok.unk_token_id).any()


def test_pretraining_is_deterministic_and_resumes_identically(tmp_path: Path) -> None:
    small.pretrain_small(tmp_path / "full", seed=1, steps=4)
    ck = tmp_path / "ck"
    small.pretrain_small(tmp_path / "first", seed=1, steps=4, checkpoint_dir=ck, checkpoint_every=2)
    # Drop the run after its step-2 checkpoint: resuming from it must end where the full run did.
    small.pretrain_small(tmp_path / "resumed", seed=1, steps=4, checkpoint_dir=ck, checkpoint_every=2)
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    for other in ("first", "resumed"):
        weights = load_file(str(tmp_path / other / "model.safetensors"))
        assert all(torch.equal(v, weights[k]) for k, v in full.items())


def test_cli_pretrain_small(tmp_path: Path, capsys) -> None:
    from ioi.cli import main

    assert main(["pretrain-small", "--variant", "nope", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: unknown variant 'nope'")
    assert main(["pretrain-small", "--steps", "2", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model.safetensors").exists()


# --- the shipped weights (measured on them; the model card reports the same numbers) -------------


@pytest.fixture(scope="module")
def shipped():
    from ioi.models.load import load_model

    return load_model("ioi-small", device="cpu")


def test_shipped_model_does_ioi_also_where_position_does_not_give_s_away(shipped) -> None:
    m = tiny.evaluate_ioi(shipped.hf_model, shipped.tokenizer, make_dataset(500, seed=0, split="eval"))
    assert m["accuracy"] >= 0.8 and 2.0 <= m["logit_diff"] <= 6.0
    per = m["per_template"]
    seen = [v["logit_diff"] for v in per.values() if not v["held_out"]]
    held = [v["logit_diff"] for v in per.values() if v["held_out"]]
    assert min(held) < min(seen) and sum(held) / len(held) < sum(seen) / len(seen)
    probes = tiny.evaluate_ioi(shipped.hf_model, shipped.tokenizer, small_corpus.position_probes(200))
    assert probes["accuracy"] >= 0.85
    tok = shipped.tokenizer
    right = 0
    with torch.no_grad():
        for prompt, io, _ in small_corpus.three_name_probes(100):
            ids = torch.tensor([[tok.bos_token_id, *tok.encode(prompt, add_special_tokens=False)]])
            best = shipped.hf_model(ids).logits[0, -1].argmax().item()
            right += int(best == tok.convert_tokens_to_ids(" " + io))
    assert right >= 95  # a second repeated name beside S: only duplicate detection finds IO


def test_shipped_classes_are_the_ones_the_card_reports(shipped) -> None:
    """What classification finds (100 eval prompts, the CLI's default), and the heads it misses."""
    from ioi.methods.classify import classify_heads
    from ioi.task.circuit import OTHER, Head
    from ioi.task.data import abc_counterfactual

    samples = make_dataset(100, 0, "eval")
    clean = tokenize(samples, shipped.tokenizer)
    abc = tokenize(abc_counterfactual(samples, 0), shipped.tokenizer, like=clean)
    circuit = classify_heads(shipped, clean, abc)
    found = {name: heads for name, heads in circuit.classes.items() if heads}
    # No IOI class: the effect is carried by two S-suppressing heads that attend S, not IO, so
    # they are neither name movers nor S-inhibition heads in the IOI paper's sense.
    assert found == {OTHER: (Head(2, 4), Head(2, 3))}
    scores = circuit.meta["scores"]
    for layer, head in ((2, 4), (2, 3)):
        assert scores["attn_end_to_s2"][layer, head] > 0.9 and scores["attn_end_to_io"][layer, head] < 0.05
        assert scores["path_logits"][layer, head] < -0.4


def test_every_variant_is_reported_in_the_model_card() -> None:
    card = (Path(small.__file__).parent.parent / "assets" / "ioi-small" / "MODEL_CARD.md").read_text()
    assert [v for v in small_corpus.VARIANTS if f"`{v}`" not in card] == []
