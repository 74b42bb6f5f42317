"""One prompt a user types: finding its two names and turning it into an IOI sample.

An IOI prompt names two people and then repeats one of them, the subject S; the other, named once,
is the indirect object IO the model should predict: "When Mary and John went to the store, John
gave a drink to" -> IO Mary, S John. :func:`find_roles` reads that off the prompt's capitalised
words (the first word of the prompt, "When", "Then", is not a name); :func:`prompt_sample` checks
the user's choice and builds the sample that :func:`ioi.task.data.tokenize` takes, which is where
names the model's vocabulary does not hold are refused, naming them.

No torch here: the dashboard checks a prompt before it loads a model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from ioi.task.data import NAMES, DatasetError, IOISample

EXAMPLE = "When Mary and John went to the store, John gave a drink to"
"""The IOI paper's example prompt (IO Mary, S John): the one the messages and the Playground show."""
MAX_PROMPT_CHARS = 1_000
"""The longest prompt accepted (characters); an IOI prompt is a sentence or two."""
_WORD = re.compile(r"[A-Za-z]+")


def capitalised_words(prompt: str) -> list[str]:
    """The prompt's capitalised words in order, without its first word (a sentence opener)."""
    words = _WORD.findall(prompt)
    return [w for w in words[1:] if w[0].isupper()]


def find_roles(prompt: str, names: Sequence[str] = NAMES) -> tuple[str, str]:
    """(IO, S) of an IOI prompt: S is the capitalised word named more than once, IO the one named
    once (one of `names` preferred). DatasetError saying what is missing when the prompt does not
    name two people that way."""
    counts = Counter(capitalised_words(prompt))
    repeated = [w for w, n in counts.items() if n > 1]
    once = [w for w, n in counts.items() if n == 1]
    if not repeated:
        raise DatasetError(
            "no name is repeated in the prompt, so there is no subject S: an IOI prompt names two "
            f'people and repeats one ("{EXAMPLE}")'
        )
    known = set(names)
    s = next((w for w in repeated if w in known), repeated[0])
    io = next((w for w in once if w in known), once[0] if once else None)
    if io is None:
        raise DatasetError(
            f"the prompt names only {s} (repeated): an IOI prompt also names the indirect "
            f"object once, e.g. '{EXAMPLE}'"
        )
    return io, s


def prompt_sample(prompt: str, io: str, s: str) -> IOISample:
    """The IOISample of a typed prompt with roles `io` and `s` (label IO; S2 the last S).

    DatasetError, saying what to change, for an empty or over-long prompt, equal roles, or a role
    the prompt does not contain as a word (IO once or more, S at least twice)."""
    text = prompt.rstrip()
    if not text.strip():
        raise DatasetError("the prompt is empty: type a sentence that ends where the name should come")
    if len(text) > MAX_PROMPT_CHARS:
        raise DatasetError(
            f"the prompt is {len(text)} characters long, more than the {MAX_PROMPT_CHARS} "
            "accepted; an IOI prompt is a sentence or two"
        )
    io, s = io.strip(), s.strip()
    if not io or not s or io == s:
        raise DatasetError(f"IO and S must be two different names (got IO {io!r}, S {s!r})")
    words = Counter(_WORD.findall(text))
    if words[io] < 1:
        raise DatasetError(f"IO {io!r} does not occur in the prompt as a word")
    if words[s] < 2:
        raise DatasetError(
            f"S {s!r} must occur at least twice in the prompt (S1 and S2); it occurs {words[s]} time(s)"
        )
    return IOISample(prompt=text, io=io, s=s, label=io, s2=s, kind="typed")
