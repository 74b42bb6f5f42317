import json
from collections import Counter

import pytest

from ioi.task.corruptions import CORRUPTIONS, corrupt, register_corruption
from ioi.task.data import (
    NAMES,
    OBJECTS,
    PLACES,
    TEMPLATES,
    DatasetError,
    abc_counterfactual,
    check_template,
    check_vocabulary,
    make_dataset,
    read_jsonl,
    render,
    tokenize,
    write_jsonl,
)


@pytest.fixture(scope="module")
def full():
    return make_dataset(6360, seed=0)


def test_full_dataset_covers_every_combination(full):
    assert len(full) == 6360
    combos = Counter((x.template, x.order) for x in full)
    assert len(combos) == 30 and set(combos.values()) == {212}
    assert {x.io for x in full} | {x.s for x in full} == set(NAMES) and len(NAMES) == 100
    assert {x.place for x in full} == set(PLACES) and len(PLACES) == 20
    assert {x.obj for x in full} == set(OBJECTS) and len(OBJECTS) == 20


def test_deterministic_and_seeded():
    assert make_dataset(50, seed=3) == make_dataset(50, seed=3)
    assert make_dataset(50, seed=3) != make_dataset(50, seed=4)


def test_train_and_eval_are_disjoint(full):
    ev = make_dataset(500, seed=0, split="eval")
    assert len(ev) == 500
    assert not {x.prompt for x in full} & {x.prompt for x in ev}


def test_roles_in_both_orders():
    abba = render(0, "ABBA", "Mary", "John", "John", "store", "drink")
    baba = render(0, "BABA", "Mary", "John", "John", "store", "drink")
    assert abba.prompt == "Then, Mary and John went to the store. John gave a drink to"
    assert baba.prompt == "Then, John and Mary went to the store. John gave a drink to"
    assert abba.label == "Mary" and abba.s == abba.s2 == "John"


@pytest.mark.parametrize("tok_fixture", ["gpt2_tok", "ioi_tiny_tok"])
def test_positions_point_at_the_right_tokens(request, tok_fixture):
    tok = request.getfixturevalue(tok_fixture)
    samples = make_dataset(60, seed=1)
    batch = tokenize(samples, tok)
    for i, x in enumerate(samples):
        toks = batch.tokens[i]
        word = lambda p, toks=toks: tok.decode([int(toks[p])]).strip()  # noqa: E731
        assert word(batch.io_pos[i]) == x.io
        assert word(batch.s1_pos[i]) == x.s and word(batch.s2_pos[i]) == x.s
        assert batch.s1_pos[i] < batch.s2_pos[i] and batch.io_pos[i] < batch.s2_pos[i]
        assert tok.decode(toks[1 : batch.end[i] + 1].tolist()).strip() == x.prompt.strip()
        assert int(batch.io_tok[i]) == tok.encode(" " + x.io, add_special_tokens=False)[0]
    # one template has one length, so per-template means line up position by position
    for t in range(len(TEMPLATES)):
        assert len({int(e) for e, g in zip(batch.end, batch.group) if g == t}) <= 1


def test_abc_has_three_distinct_fresh_names(gpt2_tok):
    clean = make_dataset(90, seed=2)
    abc = abc_counterfactual(clean, seed=2)
    batch = tokenize(clean, gpt2_tok)
    abc_batch = tokenize(abc, gpt2_tok, like=batch)
    assert abc_batch.tokens.shape == batch.tokens.shape
    for i, (x, y) in enumerate(zip(clean, abc)):
        names = [gpt2_tok.decode([int(abc_batch.tokens[i, p])]).strip()
                 for p in (batch.io_pos[i], batch.s1_pos[i], batch.s2_pos[i])]  # fmt: skip
        assert len(set(names)) == 3 and not set(names) & {x.io, x.s}
        assert (y.template, y.place, y.obj, y.io, y.s) == (x.template, x.place, x.obj, x.io, x.s)


def test_toxic_labels():
    clean = make_dataset(60, seed=0)
    nm = corrupt(clean, "name_moving")
    assert all(y.label not in (x.io, x.s) and y.label not in y.prompt.split() for x, y in zip(clean, nm))
    assert all(y.label == x.s for x, y in zip(clean, corrupt(clean, "subject_duplication")))
    for x, y in zip(clean, corrupt(clean, "duplication")):
        words = y.prompt.replace(",", " ").replace(".", " ").split()
        assert y.label == x.s and y.s2 == x.io
        assert words.count(x.io) == 2 and words.count(x.s) == 1


def test_corruption_registry_is_extensible():
    @register_corruption("swap_label_for_test", "label := S")
    def swap(x, rng):
        return x

    try:
        out = corrupt(make_dataset(3), "swap_label_for_test")
        assert [x.kind for x in out] == ["swap_label_for_test"] * 3
    finally:
        CORRUPTIONS.pop("swap_label_for_test")


def test_jsonl_round_trip(tmp_path):
    samples = corrupt(make_dataset(31, seed=5), "name_moving")
    write_jsonl(samples, tmp_path / "d.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert {"prompt", "io", "s", "label", "template", "order"} <= set(rows[0])
    assert read_jsonl(tmp_path / "d.jsonl") == samples


def test_free_prompts_from_jsonl(tmp_path, gpt2_tok):
    (tmp_path / "mine.jsonl").write_text(
        json.dumps(
            {"prompt": "Yesterday Mary met John at the park, and John waved to", "io": "Mary", "s": "John"}
        )
        + "\n"
    )
    samples = read_jsonl(tmp_path / "mine.jsonl")
    batch = tokenize(samples, gpt2_tok)
    abc = tokenize(abc_counterfactual(samples), gpt2_tok, like=batch)
    assert batch.s1_pos[0] < batch.s2_pos[0] and batch.group[0] < 0
    assert "Mary" not in abc.samples[0].prompt and "John" not in abc.samples[0].prompt


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_dataset(0), "at least 1"),
        (lambda: corrupt(make_dataset(2), "nope"), "known: duplication, name_moving, subject_duplication"),
        (lambda: check_template("When [A] went to the [PLACE]"), "must contain"),
        (lambda: make_dataset(5, split="test"), "split"),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(DatasetError, match=message):
        call()


def test_multi_token_names_are_listed(gpt2_tok):
    with pytest.raises(DatasetError, match="Zyxwvut.*Qwertyuiop|Qwertyuiop.*Zyxwvut"):
        check_vocabulary(gpt2_tok, names=["Mary", "Zyxwvut", "Qwertyuiop"])


def test_bad_jsonl_names_the_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "io": "A", "s": "B"}\n{"prompt": 3}\n')
    with pytest.raises(DatasetError, match="bad.jsonl:2"):
        read_jsonl(tmp_path / "bad.jsonl")
