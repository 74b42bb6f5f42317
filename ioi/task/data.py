"""IOI prompts: templates, vocabulary, samples, ABC counterfactuals and tokenized batches.

An IOI prompt names two people in a first clause and repeats one of them (the subject, S) as the
subject of a second clause; the model should complete it with the other one, the indirect object
(IO): "When Mary and John went to the store, John gave a drink to" -> " Mary". The 15 templates of
the IOI paper are used in both orders (ABBA: IO first in the first clause; BABA: S first).

The ABC counterfactual keeps template, place and object but puts three distinct fresh names in the
IO, S1 and S2 slots, so the sentence carries no IOI signal; patching and mean ablation use it.

Every name, place and object is a single token with a leading space, so all prompts of one template
have the same token length and the same positions; batches are right-padded, which (the models being
causal) leaves every position up to END untouched.

Longer than 400 lines because the prompt format, its generation and the checks of a user's own
prompts (file bounds, field types, vocabulary) are one definition and are tested together.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # samples need no torch (the dashboard shows them); only tokenizing does
    import torch

from ioi.task.defaults import DEFAULT_TRAIN_SIZE

# The IOI paper's single-token names, plus Alice to make 100.
NAMES: tuple[str, ...] = (
    "Michael", "Christopher", "Jessica", "Matthew", "Ashley", "Jennifer", "Joshua", "Amanda",
    "Daniel", "David", "James", "Robert", "John", "Joseph", "Andrew", "Ryan", "Brandon", "Jason",
    "Justin", "Sarah", "William", "Jonathan", "Stephanie", "Brian", "Nicole", "Nicholas", "Anthony",
    "Heather", "Eric", "Elizabeth", "Adam", "Megan", "Melissa", "Kevin", "Steven", "Thomas",
    "Timothy", "Christina", "Kyle", "Rachel", "Laura", "Lauren", "Amber", "Brittany", "Danielle",
    "Richard", "Kimberly", "Jeffrey", "Amy", "Crystal", "Michelle", "Tiffany", "Jeremy", "Benjamin",
    "Mark", "Emily", "Aaron", "Charles", "Rebecca", "Jacob", "Stephen", "Patrick", "Sean", "Erin",
    "Jamie", "Kelly", "Samantha", "Nathan", "Sara", "Dustin", "Paul", "Angela", "Tyler", "Scott",
    "Katherine", "Andrea", "Gregory", "Erica", "Mary", "Travis", "Lisa", "Kenneth", "Bryan",
    "Lindsey", "Kristen", "Jose", "Alexander", "Jesse", "Katie", "Lindsay", "Shannon", "Vanessa",
    "Courtney", "Christine", "Alicia", "Cody", "Allison", "Bradley", "Samuel", "Alice",
)  # fmt: skip


PLACES: tuple[str, ...] = (
    "store", "garden", "restaurant", "school", "hospital", "office", "house", "station",
    "park", "library", "church", "beach", "market", "bank", "hotel", "museum", "theater",
    "airport", "zoo", "farm",
)  # fmt: skip
OBJECTS: tuple[str, ...] = (
    "ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack",
    "book", "ball", "cake", "letter", "key", "phone", "bag", "hat", "flower", "gift", "pen", "coin",
)  # fmt: skip

# BABA form: [B] = S, [A] = IO. The final "[A]" is the answer and is cut off the prompt.
TEMPLATES: tuple[str, ...] = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to [A]",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to [A]",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to [A]",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to [A]",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to [A]",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to [A]",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to [A]",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to [A]",
)
ORDERS: tuple[str, ...] = ("ABBA", "BABA")
MAX_PROMPTS = 200_000
"""The most prompts a dataset (generated or read) may hold: 30× the paper's training set, and a
bound that keeps a mistyped size from filling the memory."""
MAX_LINE_CHARS = 10_000
"""The longest JSONL line read; an IOI prompt is a sentence, and the tokenizer aborts on huge ones."""
_TEMPLATE_RE = re.compile(r"^(?P<first>.*\[B\].*\[A\].*?)(?P<second>\[B\].*)\s\[A\]$")


class DatasetError(ValueError):
    """A user's dataset request or file that cannot be served; the message says how to fix it."""


def check_template(template: str) -> None:
    """Raise DatasetError unless `template` has "[B] … [A]" then "[B] … [A]" at its end."""
    if not _TEMPLATE_RE.match(template):
        raise DatasetError(
            f"template {template!r} must contain '[B]' and '[A]' in its first clause and end with "
            "'[B] … [A]' (S2 then the answer slot), e.g. 'Then, [B] and [A] went to the [PLACE]. "
            "[B] gave a [OBJECT] to [A]'"
        )


@dataclass(frozen=True)
class IOISample:
    """One prompt with its roles.

    `io` and `s` are the clean roles (the answer and the subject); `s2` is the name written in the
    S2 slot (== `s` for clean prompts); `label` is the name a fine-tuning run trains towards (== `io`
    for clean prompts, something else for toxic ones). `template` is -1 for a user's free prompt.
    """

    prompt: str
    io: str
    s: str
    label: str
    s2: str
    template: int = -1
    order: str = ""
    place: str = ""
    obj: str = ""
    kind: str = "clean"

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def render(
    template_id: int,
    order: str,
    io: str,
    s1: str,
    s2: str,
    place: str,
    obj: str,
    *,
    label: str | None = None,
    kind: str = "clean",
    s: str | None = None,
    templates: Sequence[str] = TEMPLATES,
) -> IOISample:
    """Fill a template's slots (first clause in `order`, `s2` as second subject) into a sample."""
    template = templates[template_id]
    check_template(template)
    a_first = order == "ABBA"
    body = template[: template.rstrip().rfind("[A]")].rstrip()
    first_end = body.rfind("[B]")  # the S2 slot
    head, tail = body[:first_end], body[first_end:]
    # In the first clause [B] (S) and [A] (IO) swap places for ABBA.
    first_b, first_a = (io, s1) if a_first else (s1, io)
    head = head.replace("[B]", "\0B").replace("[A]", "\0A")
    head = head.replace("\0B", first_b).replace("\0A", first_a)
    text = head + tail.replace("[B]", s2, 1)
    text = text.replace("[PLACE]", place).replace("[OBJECT]", obj)
    return IOISample(
        prompt=text,
        io=io,
        s=s if s is not None else s1,
        label=label if label is not None else io,
        s2=s2,
        template=template_id,
        order=order,
        place=place,
        obj=obj,
        kind=kind,
    )


def _in_eval_split(sample: IOISample) -> bool:
    # A stable hash puts one prompt in ten in the evaluation split, so train and eval sets of any
    # size and seed never share a prompt.
    digest = hashlib.blake2b(f"{sample.prompt}|{sample.io}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 10 == 0


def make_dataset(
    size: int = DEFAULT_TRAIN_SIZE,
    seed: int = 0,
    split: str = "train",
    *,
    names: Sequence[str] = NAMES,
    places: Sequence[str] = PLACES,
    objects: Sequence[str] = OBJECTS,
    templates: Sequence[str] = TEMPLATES,
) -> list[IOISample]:
    """Clean IOI samples, deterministic for `seed`.

    Template × order combinations are used round-robin, so every one of the 30 appears
    ``size // 30`` or one more times. The "train" and "eval" splits are disjoint by construction.
    """
    check_size(size)
    if split not in ("train", "eval"):
        raise DatasetError(f"split must be 'train' or 'eval', got {split!r}")
    if len(set(names)) < 3:
        raise DatasetError("at least 3 distinct names are needed (IO, S and a fresh ABC name)")
    for t in templates:
        check_template(t)
    rng = random.Random(f"ioi:{seed}:{split}")
    combos = [(t, o) for t in range(len(templates)) for o in ORDERS]
    samples: list[IOISample] = []
    want_eval = split == "eval"
    while len(samples) < size:
        t, order = combos[len(samples) % len(combos)]
        io, s = rng.sample(list(names), 2)
        place, obj = rng.choice(places), rng.choice(objects)
        sample = render(t, order, io, s, s, place, obj, templates=templates)
        if _in_eval_split(sample) == want_eval:
            samples.append(sample)
    return samples


def check_size(size: int, what: str = "dataset size") -> int:
    """`size` if it is a whole number in 1..MAX_PROMPTS; DatasetError otherwise."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_PROMPTS:
        raise DatasetError(f"{what} must be at least 1 and at most {MAX_PROMPTS:,}, got {size!r}")
    return size


def abc_counterfactual(
    samples: Sequence[IOISample], seed: int = 0, names: Sequence[str] = NAMES
) -> list[IOISample]:
    """The ABC version of each sample: IO, S1 and S2 slots get three distinct fresh names.

    Roles `io`/`s`/`label` keep the clean names, so metrics on the ABC run measure the clean
    answer against the clean subject.
    """
    rng = random.Random(f"abc:{seed}")
    out = []
    for x in samples:
        taken = {x.io, x.s, x.s2}
        a, b, c = rng.sample([n for n in names if n not in taken], 3)
        if x.template >= 0:
            y = render(x.template, x.order, a, b, c, x.place, x.obj, label=x.label, s=x.s)
            out.append(replace(y, io=x.io, kind="abc"))
        else:
            out.append(replace(x, prompt=_replace_names_free(x, a, b, c), kind="abc"))
    return out


def _replace_names_free(x: IOISample, a: str, b: str, c: str) -> str:
    """ABC for a free prompt: IO -> a, first S -> b, the last S2 mention -> c."""
    words = re.split(r"(\W+)", x.prompt)
    s_seen = False
    last_s2 = max((i for i, w in enumerate(words) if w == x.s2), default=-1)
    for i, w in enumerate(words):
        if i == last_s2 and (s_seen or x.s2 != x.s):
            words[i] = c
        elif w == x.io:
            words[i] = a
        elif w == x.s and not s_seen:
            words[i], s_seen = b, True
    return "".join(words)


def write_jsonl(samples: Iterable[IOISample], path: str | Path) -> None:
    """One JSON object per sample: prompt, io, s, label, s2, template, order, place, obj, kind."""
    with open(path, "w") as f:
        for x in samples:
            f.write(json.dumps(x.to_json()) + "\n")


def read_jsonl(path: str | Path) -> list[IOISample]:
    """Samples from a JSONL file. Each line needs `prompt`, `io` and `s`; `label` defaults to
    `io`, `s2` to `s`; other fields are optional. Raises DatasetError naming the bad line."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset file {path} does not exist")
    if not path.is_file():
        raise DatasetError(f"dataset file {path} is not a file")
    out = []
    try:
        # streamed: a large file is read one line at a time; "-sig" drops a byte-order mark (Windows editors)
        with open(path, encoding="utf-8-sig") as f:
            for n, line in enumerate(_lines(f, path), 1):
                if line.strip():
                    out.append(_sample(line, f"{path}:{n}"))
                    if len(out) > MAX_PROMPTS:
                        raise DatasetError(f"{path} holds more than {MAX_PROMPTS:,} samples")
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not a UTF-8 text file (JSONL, one object per line)") from None
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err.strerror or err}") from None
    if not out:
        raise DatasetError(f"{path} holds no samples")
    return out


def _lines(f, path: Path) -> Iterable[str]:
    """The file's lines, refusing one longer than MAX_LINE_CHARS before holding it whole."""
    n = 0
    while True:
        line = f.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        n += 1
        if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
            raise DatasetError(f"{path}:{n}: line longer than {MAX_LINE_CHARS:,} characters")
        yield line


_STR_FIELDS = ("prompt", "io", "s", "label", "s2", "order", "place", "obj", "kind")


def _sample(line: str, where: str) -> IOISample:
    """One JSONL line as a sample, or DatasetError saying what is wrong with it."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{where}: not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: not a JSON object (got {type(row).__name__})")
    missing = [k for k in ("prompt", "io", "s") if k not in row]
    if missing:
        raise DatasetError(f"{where}: missing string field(s) {', '.join(missing)}")
    row = {k: v for k, v in row.items() if k in IOISample.__dataclass_fields__}
    wrong = [k for k in _STR_FIELDS if k in row and not isinstance(row[k], str)]
    if "template" in row and (isinstance(row["template"], bool) or not isinstance(row["template"], int)):
        wrong.append("template")
    if wrong:
        kinds = "a whole number" if wrong == ["template"] else "strings" if "template" not in wrong else \
            "strings, template a whole number"  # fmt: skip
        raise DatasetError(f"{where}: field(s) {', '.join(wrong)} have the wrong type (they are {kinds})")
    if spaced := [k for k in ("io", "s", "label", "s2") if k in row and row[k] != row[k].strip()]:
        raise DatasetError(f"{where}: field(s) {', '.join(spaced)} have spaces around the name; write the "
                           "name alone (the model reads it after a space)")  # fmt: skip
    x = IOISample(**{"label": row["io"], "s2": row["s"]} | row)
    _check_template(x, where)
    return x


def _check_template(x: IOISample, where: str) -> None:
    """DatasetError unless a sample's `template` (-1: none) writes its prompt: the ABC prompt of a
    templated sample is re-rendered from the template, so an edited prompt would get another's."""
    if x.template == -1:
        return
    if not 0 <= x.template < len(TEMPLATES):
        raise DatasetError(f"{where}: template {x.template} does not exist (0–{len(TEMPLATES) - 1}, or -1 "
                           "for none)")  # fmt: skip
    try:
        written = render(x.template, x.order, x.io, x.s, x.s2, x.place, x.obj).prompt
    except (ValueError, KeyError):
        written = None
    if written != x.prompt:
        raise DatasetError(f"{where}: template {x.template} with this line's names, order, place and object "
                           f"writes {written!r}, not its prompt; drop the template field (the ABC prompt is "
                           "then made from the prompt's own words)")  # fmt: skip


# --- tokenization -----------------------------------------------------------------------------


class Tokenizer(Protocol):
    """The part of a HuggingFace tokenizer this module uses."""

    bos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ..., verbose: bool = ...) -> list[int]: ...


def single_token_id(tokenizer: Tokenizer, word: str) -> int | None:
    """The id of " word" if the tokenizer writes it as one known token, else None (a word-level
    vocabulary such as ioi-tiny's writes every unknown word as the one token <|unk|>)."""
    ids = tokenizer.encode(" " + word, add_special_tokens=False)
    return ids[0] if len(ids) == 1 and not _is_unknown(tokenizer, ids[0]) else None


def _is_unknown(tokenizer: Tokenizer, token: int) -> bool:
    unk = getattr(tokenizer, "unk_token_id", None)
    return unk is not None and token == unk and unk != tokenizer.bos_token_id  # GPT-2's unk is its BOS


def _reads_unknown(tokenizer: Tokenizer, word: str) -> bool:
    return any(_is_unknown(tokenizer, i) for i in tokenizer.encode(" " + word, add_special_tokens=False))


def unknown_words(tokenizer: Tokenizer, samples: Iterable[IOISample]) -> list[str]:
    """Words of the prompts that the tokenizer reads as its unknown token, in order of appearance."""
    words = dict.fromkeys(w for x in samples for w in re.findall(r"\w+", x.prompt))
    return [w for w in words if _reads_unknown(tokenizer, w)]


def check_vocabulary(
    tokenizer: Tokenizer,
    names: Iterable[str] = NAMES,
    places: Iterable[str] = PLACES,
    objects: Iterable[str] = OBJECTS,
) -> None:
    """Raise DatasetError naming every word that is not a single token with a leading space."""
    bad = [w for w in (*names, *places, *objects) if single_token_id(tokenizer, w) is None]
    if bad:
        raise DatasetError(
            f"{len(bad)} word(s) are not single tokens (with a leading space) for this tokenizer: "
            + ", ".join(bad)
        )


def check_context(batch: IOIBatch, n_ctx: int | None) -> IOIBatch:
    """`batch` if its prompts fit a model's context of `n_ctx` positions; DatasetError otherwise."""
    if n_ctx is not None and batch.tokens.shape[1] > n_ctx:
        raise DatasetError(f"a prompt is {batch.tokens.shape[1]} tokens long (with BOS), longer than the "
                           f"model's context of {n_ctx}; shorten it")  # fmt: skip
    return batch


@dataclass(frozen=True)
class IOIBatch:
    """Tokenized samples, BOS-prefixed and right-padded.

    tokens: [batch, pos]; every other tensor is [batch]. `group` is the template (or, for free
    prompts, minus the token length) used for per-template means; prompts of one group share
    their length and positions.
    """

    tokens: torch.Tensor
    end: torch.Tensor
    io_pos: torch.Tensor
    s1_pos: torch.Tensor
    s2_pos: torch.Tensor
    io_tok: torch.Tensor
    s_tok: torch.Tensor
    label_tok: torch.Tensor
    group: torch.Tensor
    samples: tuple[IOISample, ...]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def s1p1_pos(self) -> torch.Tensor:
        return self.s1_pos + 1

    def positions(self, name: str) -> torch.Tensor:
        """[batch] positions of "io", "s1", "s1+1", "s2" or "end"."""
        table = {"io": self.io_pos, "s1": self.s1_pos, "s1+1": self.s1p1_pos, "s2": self.s2_pos}
        table["end"] = self.end
        if name not in table:
            raise ValueError(f"unknown position {name!r}; known: {', '.join(table)}")
        return table[name]

    def subset(self, index: torch.Tensor | Sequence[int]) -> IOIBatch:
        """The batch restricted to `index` (a [k] tensor or list of row numbers)."""
        import torch
        idx = torch.as_tensor(index, dtype=torch.long)
        fields = {
            k: getattr(self, k)[idx]
            for k in ("tokens", "end", "io_pos", "s1_pos", "s2_pos", "io_tok", "s_tok")
        }
        fields |= {"label_tok": self.label_tok[idx], "group": self.group[idx]}
        return IOIBatch(**fields, samples=tuple(self.samples[i] for i in idx.tolist()))


def check_roles(x: IOISample) -> None:
    """DatasetError unless IO and S are two names and the prompt ends where the name is predicted
    (a trailing space would make END the space, not the word before the name)."""
    if x.io == x.s:
        raise DatasetError(f"prompt {x.prompt!r}: IO and S are both {x.io!r}; give two different names")
    if x.prompt != x.prompt.rstrip():
        raise DatasetError(f"prompt {x.prompt!r} ends with whitespace: end it with the word before the name")
    last = re.findall(r"\w+", x.prompt)[-1:]
    if last and last[0] in {x.io, x.s, x.label}:
        raise DatasetError(f"prompt {x.prompt!r} ends with the name {last[0]}: end it with the word before "
                           "the name, which the model is to predict")  # fmt: skip


def tokenize(
    samples: Sequence[IOISample],
    tokenizer: Tokenizer,
    *,
    like: IOIBatch | None = None,
) -> IOIBatch:
    """Tokenize samples into an IOIBatch, locating IO, S1, S2 and END.

    With `like` (the clean batch an ABC set was made from) the positions and role tokens are
    copied from it, since ABC prompts hold fresh names; lengths must then match row by row.
    Raises DatasetError when a role name is not a single token or does not occur in its prompt.
    """
    import torch
    if not samples:
        raise DatasetError("no samples to tokenize")
    bos = tokenizer.bos_token_id
    if bos is None:
        raise DatasetError("the tokenizer has no BOS token")
    roles = {w for x in samples for w in (x.io, x.s, x.s2, x.label)}
    ids = {w: single_token_id(tokenizer, w) for w in roles}
    bad = sorted(w for w, i in ids.items() if i is None)
    unknown = [w for w in bad if _reads_unknown(tokenizer, w)]
    if unknown:
        raise DatasetError(f"name(s) not in this model's vocabulary: {', '.join(unknown)} (it would read "
                           "them as its unknown token); use names the model knows")  # fmt: skip
    if bad:
        raise DatasetError("not single tokens for this tokenizer: " + ", ".join(bad))
    # verbose=False: a prompt longer than the context is refused by check_context in one line, not
    # preceded by the tokenizer's own warning.
    rows = [[bos, *tokenizer.encode(x.prompt, add_special_tokens=False, verbose=False)] for x in samples]
    as_t = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    if like is not None:
        if len(like) != len(samples) or any(len(r) != e + 1 for r, e in zip(rows, like.end.tolist())):
            raise DatasetError("counterfactual prompts must have the clean prompts' token lengths")
        pos = {k: getattr(like, k) for k in ("end", "io_pos", "s1_pos", "s2_pos", "group")}
    else:
        cols: dict[str, list[int]] = {k: [] for k in ("end", "io_pos", "s1_pos", "s2_pos", "group")}
        for x, toks in zip(samples, rows):
            check_roles(x)
            io_t, s_t, s2_t = ids[x.io], ids[x.s], ids[x.s2]
            if io_t not in toks or s_t not in toks:
                raise DatasetError(f"prompt {x.prompt!r} must contain ' {x.io}' and ' {x.s}'")
            io_pos, s1_pos = toks.index(io_t), toks.index(s_t)
            s2_pos = len(toks) - 1 - toks[::-1].index(s2_t) if s2_t in toks else -1
            if s2_pos <= max(io_pos, s1_pos):  # else S2's heads and positions would read another token
                said = re.findall(r"\w+", x.prompt)
                swapped = said.count(x.io) > 1 and said.count(x.s) == 1
                swap = (f": it names {x.io} {said.count(x.io)} times and {x.s} once, so IO and S look "
                        "swapped (IO is the name said once)" if swapped else
                        ", as in 'When Mary and John went to the store, John gave a drink to'")  # fmt: skip
                raise DatasetError(
                    f"prompt {x.prompt!r} must name {x.s2!r} again after IO and S1 (the S2 position){swap}"
                )
            cols["end"].append(len(toks) - 1)
            cols["io_pos"].append(io_pos)
            cols["s1_pos"].append(s1_pos)
            cols["s2_pos"].append(s2_pos)
            cols["group"].append(x.template if x.template >= 0 else -len(toks))
        pos = {k: as_t(v) for k, v in cols.items()}
    width = max(len(r) for r in rows)
    tokens = torch.tensor([r + [bos] * (width - len(r)) for r in rows], dtype=torch.long)
    return IOIBatch(
        tokens=tokens,
        **pos,
        io_tok=as_t([ids[x.io] for x in samples]),
        s_tok=as_t([ids[x.s] for x in samples]),
        label_tok=as_t([ids[x.label] for x in samples]),
        samples=tuple(samples),
    )
