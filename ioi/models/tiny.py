"""`ioi-tiny`: a small GPT-2-architecture model, pretrained here, on which the IOI circuit shows.

GPT-2 weights cannot be downloaded in every deployment, so the product ships its own "pretrained"
model. It is a `GPT2LMHeadModel` (learned positions, pre-LayerNorm, GELU MLP, tied embeddings)
with a word-level tokenizer that follows GPT-2's leading-space convention, so `ioi.task.data` (templates,
names, `tokenize`) serves it unchanged. It is trained on a synthetic corpus of short stories in
which IOI-style sentences are one pattern among several; three of the 15 evaluation templates and
one name pair in six never occur in IOI form during pretraining, to test generalisation.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from ioi.models.pretrain import (
    NAME_LOSS_WEIGHT,
    OPTIMIZER,
    make_optimizer,
    pretrain_steps,
    write_model_dir,
)
from ioi.models.threads import one_thread
from ioi.task.data import (
    NAMES,
    OBJECTS,
    PLACES,
    TEMPLATES,
    IOISample,
    make_dataset,
    render,
    tokenize,
)

SPECIALS = ("<|bos|>", "<|eos|>", "<|unk|>", "<|pad|>")
# GPT-2-style words: an optional leading space, then a run of letters or one punctuation mark.
WORD_PATTERN = r" ?[A-Za-z]+| ?[^\sA-Za-z]"
_WORD_RE = re.compile(WORD_PATTERN)

# Eval templates never seen in IOI form while pretraining (their words still occur in filler).
HELD_OUT_TEMPLATES: tuple[int, ...] = (3, 9, 14)
# Extra IOI phrasings, BABA form like data.TEMPLATES ([B] = S, [A] = IO).
EXTRA_IOI: tuple[str, ...] = (
    "Later, [B] and [A] walked to the [PLACE]. [B] handed the [OBJECT] to [A]",
    "[B] and [A] sat in the [PLACE], and [B] passed a [OBJECT] to [A]",
    "Yesterday [B] met [A] at the [PLACE], and [B] showed the [OBJECT] to [A]",
    "In the [PLACE], [B] and [A] talked for hours. Then [B] said goodbye to [A]",
    "[B] and [A] were playing at the [PLACE]. [B] threw a [OBJECT] to [A]",
    "Once [B] and [A] arrived at the [PLACE], [B] sent a [OBJECT] to [A]",
)
IOI_PHRASINGS: tuple[str, ...] = (
    *(t for i, t in enumerate(TEMPLATES) if i not in HELD_OUT_TEMPLATES),
    *EXTRA_IOI,
)
# Sentences whose last name is a previously mentioned one for reasons other than IOI; the model
# must copy the *right* name by role or content. [X]/[Y] are distinct names, [P2]/[O2] a 2nd place/object.
RECALL: tuple[str, ...] = (
    "[X] felt tired, so [X] went home.",
    "[X] met [Y] at the [PLACE]. Who did [X] meet? [Y].",
    "[X] had a [OBJECT] and [Y] had a [O2]. The [O2] belonged to [Y].",
    "[X] was at the [PLACE] and [Y] was at the [P2]. The one at the [P2] was [Y].",
    "[X] gave a [OBJECT] to [Y], and [Y] said thanks to [X].",
    "[X] called [Y], but [Y] did not answer [X].",
    "[X] lost the [OBJECT]. Later, [Y] found it and gave it back to [X].",
)
FILLER: tuple[str, ...] = (
    "[X] went to the [PLACE].",
    "Then, [X] and [Y] went to the [PLACE].",
    "[X] was thinking about going to the [PLACE].",
    "[X] and [Y] were commuting to the [PLACE].",
    "Friends [X] and [Y] found a [OBJECT] at the [PLACE].",
    "[X] gave a [OBJECT] to [Y].",
    "The [PLACE] was big and the weather was nice.",
    "After the lunch, [X] was happy.",
    "[X] had a long argument with [Y].",
    "[X] wanted to buy a [OBJECT].",
    "[X] decided to stay at the [PLACE].",
    "It was a nice day.",
    "When [X] got a [OBJECT], [X] smiled.",
    "While [X] was working at the [PLACE], [Y] had a lot of fun.",
    "Afterwards [X] said hello to [Y].",
    "The [OBJECT] was on the table in the [PLACE].",
    "[X] decided to give the [OBJECT] away.",
    "[X] and [Y] were thinking about the [OBJECT].",
)
# Per-sentence probabilities of the four kinds of sentence.
MIX: dict[str, float] = {"ioi": 0.35, "recall": 0.20, "induction": 0.15, "filler": 0.30}
CONTEXT = 64
# Words of the random spans that induction sentences repeat.
_POOL: tuple[str, ...] = (*NAMES, *PLACES, *OBJECTS, "the", "a", "to", "and", "gave", "went", "was")
# Small MLPs (d_mlp 64) leave the direct effect to attention heads, as in GPT-2; with d_mlp 256
# the last MLP carried ~85% of it (measured).
MODEL_SIZES: dict[str, int] = {"n_layer": 3, "n_head": 8, "n_embd": 128, "n_inner": 64}
DEFAULT_STEPS = 8000
BATCH = 32
LR = 1e-3


def words(text: str) -> list[str]:
    """Split text the way the tokenizer's pre-tokenizer does."""
    return _WORD_RE.findall(text)


def _fill(text: str, fill: dict[str, str]) -> str:
    for slot, word in fill.items():
        text = text.replace(f"[{slot}]", word)
    return text


def vocabulary(extra: Sequence[str] = ()) -> list[str]:
    """All words of the corpus phrases plus `extra` phrases (with their leading space where they
    take one), specials first, sorted."""
    pieces: set[str] = set()
    fill = {"A": "Mary", "B": "John", "C": "Kate", "X": "Mary", "Y": "John", "PLACE": "park"}
    fill |= {"P2": "park", "OBJECT": "ring", "O2": "ring"}
    for phrase in (*TEMPLATES, *EXTRA_IOI, *RECALL, *FILLER, *extra):
        text = _fill(phrase, fill) + " " + fill["A"] + "."
        pieces.update(words(text) + words(" " + text))
    for w in _POOL:
        pieces.update((w, " " + w))
    return [*SPECIALS, *sorted(pieces)]


def build_tokenizer(name_or_path: str = "ioi-tiny", extra: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Word-level tokenizer (vocabulary of the corpus plus `extra` phrases): " Mary" is one id
    whether alone or inside a prompt."""
    vocab = {w: i for i, w in enumerate(vocabulary(extra))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
    tok.decoder = decoders.Fuse()  # pieces carry their own spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        unk_token="<|unk|>",
        pad_token="<|pad|>",
        name_or_path=name_or_path,
        add_bos_token=True,
        model_max_length=CONTEXT,
        clean_up_tokenization_spaces=False,
    )


def _held_out_pair(a: str, b: str) -> bool:
    # One unordered name pair in six never appears as (IO, S) of a pretraining IOI sentence.
    key = "|".join(sorted((a, b))).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "little") % 6 == 0


class StoryGenerator:
    """Seeded source of short stories (each at most `max_words` tokens, BOS not counted)."""

    name = "ioi-tiny"
    mix: dict[str, float] = MIX

    def __init__(self, seed: int, max_words: int = CONTEXT - 1) -> None:
        self.rng = random.Random(f"{self.name}:{seed}")
        self.max_words = max_words

    def _sentence(self, kind: str, cast: list[str], done: list[str]) -> str:
        r = self.rng
        place, p2 = r.sample(PLACES, 2)
        obj, o2 = r.sample(OBJECTS, 2)
        if kind == "ioi":
            io, s = r.sample(cast, 2)
            while _held_out_pair(io, s):
                io, s = r.sample(NAMES, 2)
            order = r.choice(("ABBA", "BABA"))
            t = r.randrange(len(IOI_PHRASINGS))
            x = render(t, order, io, s, s, place, obj, templates=IOI_PHRASINGS)
            return f"{x.prompt} {io}."
        if kind == "induction":
            if done and r.random() < 0.5:
                return r.choice(done)
            span = " ".join(r.choice(_POOL) for _ in range(r.randint(3, 8)))
            return f"{span}, {span}."
        x, y = r.sample(cast, 2)
        fill = {"X": x, "Y": y, "PLACE": place, "P2": p2, "OBJECT": obj, "O2": o2}
        return _fill(r.choice(RECALL if kind == "recall" else FILLER), fill)

    def story(self) -> str:
        """One story: a cast of 2-5 names, sentences drawn by `mix` until the context is full."""
        r = self.rng
        cast = r.sample(NAMES, r.randint(2, 5))
        done: list[str] = []
        n = 0
        for _ in range(20):
            kind = r.choices(list(self.mix), weights=list(self.mix.values()))[0]
            sent = self._sentence(kind, cast, done)
            k = len(words(" " + sent))
            if n + k > self.max_words:
                if done:
                    break
                continue
            done.append(sent)
            n += k
        return " ".join(done)

    def stories(self, n: int) -> list[str]:
        return [self.story() for _ in range(n)]


def corpus(seed: int, n: int) -> list[str]:
    """The first `n` pretraining stories for `seed` (deterministic)."""
    return StoryGenerator(seed).stories(n)


def _encode_batch(texts: Sequence[str], vocab: dict[str, int]) -> torch.Tensor:
    """BOS + ids, right-padded to CONTEXT; equals the tokenizer's encoding (tested)."""
    bos, pad = vocab["<|bos|>"], vocab["<|pad|>"]
    rows = [[bos, *(vocab[w] for w in words(t))][:CONTEXT] for t in texts]
    return torch.tensor([r + [pad] * (CONTEXT - len(r)) for r in rows], dtype=torch.long)


def make_model(
    vocab_size: int,
    tokenizer: PreTrainedTokenizerFast,
    sizes: dict[str, int] = MODEL_SIZES,
    dropout: float = 0.0,
) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 (seeded by the caller) with `sizes` and one dropout rate."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=CONTEXT,
        **sizes,
        activation_function="gelu_new",
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config)


@torch.no_grad()
def evaluate_ioi(
    model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, samples: Sequence[IOISample]
) -> dict[str, object]:
    """Accuracy (IO beats every other token) and mean logit(IO) - logit(S) at END, per template."""
    batch = tokenize(samples, tokenizer)
    model.eval()
    logits = model(batch.tokens).logits[torch.arange(len(batch)), batch.end]
    rows = torch.arange(len(batch))
    diff = logits[rows, batch.io_tok] - logits[rows, batch.s_tok]
    correct = (logits.argmax(-1) == batch.io_tok).float()
    per_template = {
        int(g): {
            "accuracy": round(correct[batch.group == g].mean().item(), 4),
            "logit_diff": round(diff[batch.group == g].mean().item(), 4),
            "held_out": int(g) in HELD_OUT_TEMPLATES,
        }
        for g in batch.group.unique().tolist()
    }
    return {
        "accuracy": round(correct.mean().item(), 4),
        "logit_diff": round(diff.mean().item(), 4),
        "per_template": per_template,
    }


def seeded_model(
    seed: int, tokenizer: PreTrainedTokenizerFast, sizes: dict[str, int] = MODEL_SIZES, dropout: float = 0.0
) -> GPT2LMHeadModel:
    """`make_model` for `tokenizer`'s vocabulary, initialised from torch's generator seeded with `seed`."""
    torch.manual_seed(seed)
    return make_model(len(tokenizer.get_vocab()), tokenizer, sizes, dropout)


def pretrain_tiny(
    out_dir: Path,
    *,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train ioi-tiny from scratch on CPU and write an HF-format directory to `out_dir`.

    Deterministic for `seed` (training runs on one CPU thread; the caller's thread count is
    restored). Returns the manifest also written to `out_dir/manifest.json`.
    """
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    with one_thread():
        model = seeded_model(seed, tokenizer)
        gen = StoryGenerator(seed)
        opt = make_optimizer(model, LR)
        start = time.time()
        batch = lambda: _encode_batch(gen.stories(BATCH), vocab)
        loss_ema = pretrain_steps(model, opt, tokenizer, batch, lr=LR, steps=steps, progress=progress)
        seconds = time.time() - start
        metrics = evaluate_ioi(model, tokenizer, make_dataset(500, seed=0, split="eval"))
    manifest = {
        "name": "ioi-tiny",
        "config": {**MODEL_SIZES, "n_positions": CONTEXT, "vocab_size": len(vocab)},
        "seed": seed,
        "steps": steps,
        "batch": [BATCH, CONTEXT],
        "optimizer": OPTIMIZER.format(lr=LR),
        "corpus_mix": MIX,
        "name_loss_weight": NAME_LOSS_WEIGHT,
        "held_out_templates": list(HELD_OUT_TEMPLATES),
        "training_seconds": round(seconds, 1),
        "final_loss_ema": round(loss_ema, 4),
        "eval": {"dataset": "make_dataset(500, seed=0, split='eval')", **metrics},
    }
    return write_model_dir(out_dir, model, tokenizer, manifest)
