"""`ioi-small`'s corpus: the sentence kinds, recipes (VARIANTS) and probes of its pretraining.

`ioi-tiny` finds S by position: in every IOI sentence of its corpus the subject of the giving
clause is S. These "duplicate" sentences put the repeated name at varying positions and roles,
sometimes next to a second repeated name or with no name in the giving clause, so that the name to
give to is the one mentioned once. IOI-style sentences end with someone other than the IO one time
in five, so overconfidence costs loss. Each recipe the model card reports is one `Recipe`; a
field's default leaves the corpus of every earlier recipe unchanged (no extra random draw).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerFast

from ioi.models.tiny import (
    CONTEXT,
    IOI_PHRASINGS,
    LR,
    StoryGenerator,
    _fill,
    _held_out_pair,
    build_tokenizer,
)
from ioi.models.tiny import (
    MIX as TINY_MIX,
)
from ioi.task.data import NAMES, OBJECTS, PLACES, IOISample, make_dataset, render

# A first sentence introducing IO and S (and a third person [C] in the three-name frames), in
# either order; [X]/[Y] are IO and S shuffled.
FRAMES_TWO: tuple[str, ...] = (
    "[X] and [Y] went to the [PLACE].",
    "[X] met [Y] at the [PLACE].",
    "[X] went to the [PLACE] with [Y].",
    "At the [PLACE], [X] saw [Y].",
    "[X] called [Y] from the [PLACE].",
)
FRAMES_THREE: tuple[str, ...] = (
    "[X], [Y] and [C] went to the [PLACE].",
    "[X] met [Y] and [C] at the [PLACE].",
    "At the [PLACE], [X] saw [Y] and [C].",
)
# Four people (the "crowd" recipes): [A] is the fourth slot here, not the IO.
FRAMES_FOUR: tuple[str, ...] = (
    "[X], [Y], [C] and [A] went to the [PLACE].",
    "[X] met [Y], [C] and [A] at the [PLACE].",
)
# Five and six people (`Recipe.max_others` > 2); their words are all in the vocabulary already.
FRAMES_FIVE: tuple[str, ...] = ("[X], [Y], [C], [A] and [D] went to the [PLACE].",)
FRAMES_SIX: tuple[str, ...] = ("[X], [Y], [C], [A], [D] and [E] went to the [PLACE].",)
# Sentences that mention a repeated name ([B]) again before the giving clause.
MIDDLES: tuple[str, ...] = (
    "[B] was tired.",
    "[B] smiled.",
    "Later, [B] sat down.",
    "[B] bought a [O2].",
    "[B] wanted to go home.",
)
NEUTRAL = "It was a nice day."
# The giving clause, cut before the answer: with S ([B]) in varying places, or without any name.
FINALS: tuple[str, ...] = (
    "[B] gave a [OBJECT] to",
    "Then [B] handed the [OBJECT] to",
    "[B] smiled and gave a [OBJECT] to",
    "The [OBJECT] was from [B], who gave it to",
    "Afterwards [B] said goodbye to",
    "[B] threw the [OBJECT] to",
)
NAMELESS_FINALS: tuple[str, ...] = ("Then the [OBJECT] was given to", "In the end, the [OBJECT] went to")
# What follows "to" when it is not the IO ("[FRESH]": a name not in the sentence).
OTHER_ENDINGS: tuple[str, ...] = ("the teacher", "everyone", "the others", "[FRESH]")
IO_ENDING_P = 0.8
# Never pretrained on; S2 sits further from the clause start or is not the clause's subject.
PROBE_TEMPLATES: tuple[str, ...] = (
    "Then, [B] and [A] went to the [PLACE]. Later that day, after a long walk, [B] gave a [OBJECT] to [A]",
    "Once [B] and [A] went to the [PLACE], and after the lunch [B] gave a [OBJECT] to [A]",
    "When [B] and [A] were at the [PLACE], the [OBJECT] that [B] had was given to [A]",
    "Then, [B] and [A] went to the [PLACE]. It was a nice day, so [B] gave a [OBJECT] to [A]",
)
PHRASES: tuple[str, ...] = (
    *FRAMES_TWO, *FRAMES_THREE, *MIDDLES, NEUTRAL, *FINALS, *NAMELESS_FINALS, *OTHER_ENDINGS,
    *PROBE_TEMPLATES,
)  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """Everything a pretraining run varies; VARIANTS names each one the model card reports."""

    sizes: dict[str, int]
    dropout: float
    mix: dict[str, float]
    steps: int
    lr: float = LR
    crowd: bool = False  # duplicate sentences with up to two repeated distractors, not one
    # With more than two, the number of repeated distractors is uniform in 0..max_others: copying
    # every name and suppressing the repeated ones then leaves IO a margin shrinking with the crowd.
    max_others: int = 2
    # A curriculum: the first `warm_steps` draw sentences by `warm_mix` (ioi-tiny's kinds, where S
    # is found by position and name movers with S-inhibition emerge), then by `mix`.
    warm_steps: int = 0
    warm_mix: dict[str, float] | None = None
    # The share of crowd "dup" sentences with one or two bystanders: names mentioned once, in a
    # sentence of their own before or after the frame, never addressed. Copying every name and
    # suppressing the repeated ones then ties IO with them; only reading which name shares S's
    # sentence (attention chosen by the query at END, as name movers do) separates them.
    bystander_p: float = 0.0
    # The share of crowd "dup" sentences with S as the only repeated name that ask for S instead:
    # "[B] bought a [O2]." then "The [O2] was from" -> S. Suppressing every repeated name at END
    # then costs loss, as it would in natural text, where the repeated name is often the next one.
    giver_p: float = 0.0
    # The share of crowd "dup" sentences replaced by "visit" sentences: "[X] was at the [P1] and
    # [Y] was at the [P2]. [S] went to the" -> the other one's place. Places are mentioned once
    # each, so no key marks the answer as a repeat; only a query that knows S (moved to END from
    # S2, as S-inhibition heads do) picks the right place: pressure for the query-side route.
    visit_p: float = 0.0
    # The share of visit sentences asking for S's own place instead ("[S] went back to the"): a
    # positive match of S's identity against the places' owners, easier than the negated one.
    back_p: float = 0.0

    def mix_at(self, step: int) -> dict[str, float]:
        return self.warm_mix if self.warm_mix is not None and step < self.warm_steps else self.mix


_MIX = {"ioi": 0.25, "dup": 0.25, "recall": 0.15, "induction": 0.15, "filler": 0.20}
_CROWD_MIX = {"ioi": 0.20, "dup": 0.35, "recall": 0.15, "induction": 0.10, "filler": 0.20}
# Visit sentences as a kind of their own, a quarter of all sentences (`6l-crowd-visit` drew them
# inside the duplicate kind, 14% of all, and never learnt them in 8,000 steps).
_VISIT_MIX = {"ioi": 0.15, "dup": 0.30, "visit": 0.25, "recall": 0.10, "induction": 0.05, "filler": 0.15}
# Binding a place to its owner, which no visit recipe learnt: "bind" sentences ask who was at
# either place, so position does not answer them.
_BIND_MIX = {"ioi": 0.15, "dup": 0.25, "visit": 0.20, "bind": 0.15, "recall": 0.05, "induction": 0.05,
             "filler": 0.15}  # fmt: skip
# Binding alone first (half of all sentences), then _BIND_MIX: teach the binding before it is needed.
_WARM_BIND = {"bind": 0.5, "induction": 0.2, "filler": 0.3}
_FOUR = {"n_layer": 4, "n_head": 8, "n_embd": 128, "n_inner": 64}
_SIX = _FOUR | {"n_layer": 6}
VARIANTS: dict[str, Recipe] = {
    "4l": Recipe(_FOUR, 0.1, _MIX, 3000),
    "6l": Recipe(_SIX, 0.1, _MIX, 2500),
    "4l-nodrop": Recipe(_FOUR, 0.0, _MIX, 3000),
    "4l-crowd": Recipe(_FOUR, 0.0, _CROWD_MIX, 1500, crowd=True),
    "4l-crowd-long": Recipe(_FOUR, 0.0, _CROWD_MIX, 6000, crowd=True),
    "6l-crowd": Recipe(_SIX, 0.0, _CROWD_MIX, 3000, crowd=True),
    "6l-crowd-drop": Recipe(_SIX, 0.1, _CROWD_MIX, 4000, crowd=True),
    "6l-crowd6": Recipe(_SIX, 0.0, _CROWD_MIX, 3000, crowd=True, max_others=4),
    "6l-crowd-long": Recipe(_SIX, 0.0, _CROWD_MIX, 8000, crowd=True),
    "6l-crowd-bystander": Recipe(_SIX, 0.0, _CROWD_MIX, 3000, crowd=True, bystander_p=0.5),
    "6l-crowd-giver": Recipe(_SIX, 0.0, _CROWD_MIX, 3000, crowd=True, giver_p=0.5),
    "6l-crowd-visit": Recipe(_SIX, 0.0, _CROWD_MIX, 3000, crowd=True, visit_p=0.4),
    "6l-crowd-visit-long": Recipe(_SIX, 0.0, _CROWD_MIX, 8000, crowd=True, visit_p=0.4),
    "6l-visit-kind": Recipe(_SIX, 0.0, _VISIT_MIX, 3000, crowd=True),
    "6l-visit-back": Recipe(_SIX, 0.0, _VISIT_MIX, 3000, crowd=True, back_p=0.5),
    "6l-visit-bind": Recipe(_SIX, 0.0, _BIND_MIX, 3000, crowd=True, back_p=0.5),
    "6l-bind-warm": Recipe(_SIX | {"n_inner": 512}, 0.0, _BIND_MIX, 4500, crowd=True, back_p=0.5,
                           warm_steps=1500, warm_mix=_WARM_BIND),  # GPT-2's MLP ratio (4 × d_model)
    "4l-curriculum": Recipe(_FOUR, 0.0, _CROWD_MIX, 4000, crowd=True, warm_steps=1500, warm_mix=TINY_MIX),
}
DEFAULT_VARIANT = "4l-nodrop"


class SmallStoryGenerator(StoryGenerator):
    """tiny's stories with `mix` of its kinds plus "dup" sentences; IOI endings vary."""

    name = "ioi-small"

    def __init__(
        self, seed: int, mix: dict[str, float] = _MIX, max_words: int = CONTEXT - 1, crowd: bool = False,
        max_others: int = 2, bystander_p: float = 0.0, giver_p: float = 0.0, visit_p: float = 0.0,
        back_p: float = 0.0,
    ) -> None:
        super().__init__(seed, max_words)
        self.mix = mix
        self.crowd = crowd
        self.max_others = max_others
        self.bystander_p = bystander_p
        self.giver_p = giver_p
        self.visit_p = visit_p
        self.back_p = back_p

    def _ending(self, io: str, taken: set[str]) -> str:
        r = self.rng
        if r.random() < IO_ENDING_P:
            return io
        other = r.choice(OTHER_ENDINGS)
        return r.choice([n for n in NAMES if n not in taken]) if other == "[FRESH]" else other

    def _pair(self, cast: list[str]) -> tuple[str, str]:
        io, s = self.rng.sample(cast, 2)
        while _held_out_pair(io, s):
            io, s = self.rng.sample(NAMES, 2)
        return io, s

    def dup_sentence(
        self, io: str, s: str, others: Sequence[str] = (), bystanders: Sequence[str] = ()
    ) -> str:
        """IO mentioned once; S and the `others` (0-4 names) at least twice; each of `bystanders`
        once, in a sentence of its own before or after the frame; cut before the answer."""
        r = self.rng
        place, obj, o2 = r.choice(PLACES), r.choice(OBJECTS), r.choice(OBJECTS)
        people = [io, s, *others]
        r.shuffle(people)
        frame = r.choice((FRAMES_TWO, FRAMES_THREE, FRAMES_FOUR, FRAMES_FIVE, FRAMES_SIX)[len(others)])
        parts = [_fill(frame, dict(zip("XYCADE"[: len(people)], people, strict=True)) | {"PLACE": place})]
        for name in bystanders:
            aside = _fill(r.choice(MIDDLES), {"B": name, "O2": o2})
            parts = [aside, *parts] if r.random() < 0.5 else [*parts, aside]
        repeats = [*others] + ([s] if r.random() < 0.4 else [])
        middles = [_fill(r.choice(MIDDLES), {"B": n, "O2": o2}) for n in repeats]
        if r.random() < 0.2:
            middles.append(NEUTRAL)
        r.shuffle(middles)
        s_repeated = s in repeats
        final = r.choice(NAMELESS_FINALS if s_repeated and r.random() < 0.4 else FINALS)
        parts += [*middles, _fill(final, {"B": s, "OBJECT": obj})]
        return " ".join(parts)

    def giver_sentence(self, io: str, s: str) -> str:
        """IO and S in a frame, S buying something, then "The [O2] was from", cut before S: the
        answer is the repeated name."""
        r = self.rng
        place, o2 = r.choice(PLACES), r.choice(OBJECTS)
        people = [io, s]
        r.shuffle(people)
        frame = _fill(r.choice(FRAMES_TWO), {"X": people[0], "Y": people[1], "PLACE": place})
        return f"{frame} {_fill('[B] bought a [O2].', {'B': s, 'O2': o2})} The {o2} was from"

    def visit_sentence(self, io: str, s: str) -> str:
        """IO and S each at a place, then S going to IO's: "[X] was at the [P1] and [Y] was at
        the [P2]. [S] went to the" -> IO's place, with the answer (with `back_p`, sometimes "[S]
        went back to the" -> S's own place)."""
        r = self.rng
        people = [io, s]
        r.shuffle(people)
        places = dict(zip(people, r.sample(PLACES, 2), strict=True))
        joint = " and " if r.random() < 0.5 else ". "
        first, second = (f"{n} was at the {places[n]}" for n in people)
        if self.back_p and r.random() < self.back_p:  # no draw when 0
            return f"{first}{joint}{second}. {s} went back to the {places[s]}."
        return f"{first}{joint}{second}. {s} went to the {places[io]}."

    def bind_sentence(self, a: str, b: str) -> str:
        """Two people at two places, then who was at one of them, either one: "[A] was at the [P1]
        and [B] was at the [P2]. The one at the [P1] was [A]." (tiny's recall sentence of this
        shape always asks for the second, which position alone answers)."""
        r = self.rng
        places = dict(zip((a, b), r.sample(PLACES, 2), strict=True))
        asked = r.choice((a, b))
        where = f"{a} was at the {places[a]} and {b} was at the {places[b]}."
        return f"{where} The one at the {places[asked]} was {asked}."

    def _sentence(self, kind: str, cast: list[str], done: list[str]) -> str:
        r = self.rng
        if kind == "ioi":
            io, s = self._pair(cast)
            t = r.randrange(len(IOI_PHRASINGS))
            order = r.choice(("ABBA", "BABA"))
            x = render(t, order, io, s, s, r.choice(PLACES), r.choice(OBJECTS), templates=IOI_PHRASINGS)
            return f"{x.prompt} {self._ending(io, {io, s})}."
        if kind == "visit":
            return self.visit_sentence(*self._pair(cast))
        if kind == "bind":
            return self.bind_sentence(*self._pair(cast))
        if kind == "dup":
            io, s = self._pair(cast)
            rest = [n for n in cast if n not in (io, s)] or [n for n in NAMES if n not in (io, s)]
            if self.crowd:
                pool = [n for n in NAMES if n not in (io, s)]
                k = (r.choices((0, 1, 2), weights=(0.3, 0.35, 0.35))[0] if self.max_others == 2
                     else r.randint(0, self.max_others))  # fmt: skip
                others = r.sample(pool, k)
            else:
                others = [r.choice(rest)] if r.random() < 0.4 else []
            if self.visit_p and r.random() < self.visit_p:  # no draw when 0
                return self.visit_sentence(io, s)
            if not others and self.giver_p and r.random() < self.giver_p:  # no draw when 0
                return f"{self.giver_sentence(io, s)} {s}."
            bystanders: list[str] = []
            if self.bystander_p and r.random() < self.bystander_p:  # no draw when 0: recipes unchanged
                bystanders = r.sample([n for n in pool if n not in others], r.randint(1, 2))
            text = self.dup_sentence(io, s, others, bystanders)
            return f"{text} {self._ending(io, {io, s, *others, *bystanders})}."
        return super()._sentence(kind, cast, done)


def build_small_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer("ioi-small", PHRASES)


def position_probes(n: int = 200, seed: int = 0) -> list[IOISample]:
    """IOI prompts on PROBE_TEMPLATES (never pretrained on), eval split: S2 not where tiny's
    corpus always put it."""
    return make_dataset(n, seed=seed, split="eval", templates=PROBE_TEMPLATES)


def three_name_probes(n: int = 200, seed: int = 0) -> list[tuple[str, str, str]]:
    """(prompt, io, s) with a second repeated name beside S: only duplicate detection tells IO."""
    gen = SmallStoryGenerator(10_000 + seed)
    out = []
    while len(out) < n:
        io, s, third = gen.rng.sample(NAMES, 3)
        out.append((gen.dup_sentence(io, s, [third]), io, s))
    return out
