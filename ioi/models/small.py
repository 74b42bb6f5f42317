"""`ioi-small`: a deeper bundled model whose corpus only duplicate detection can solve.

`ioi-tiny` (3 layers) finds S by position: in every IOI sentence of its corpus the subject of the
giving clause is S, so a layer-0 head can suppress it without knowing it is repeated. This model
reuses tiny's tokenizer, sentence kinds, loss and schedule, and changes what issue #16 suggests:
more layers, optional dropout, and a corpus (:mod:`ioi.models.small_corpus`, whose `VARIANTS` are
the recipes tried) in which only duplicate detection finds S. What the shipped recipe
learnt (duplicate detection feeding S-suppressing heads, not name movers) is in its model card.

Training is deterministic for a seed on one CPU thread and resumable from checkpoints that hold
the generator and RNG states, so an interrupted run ends with the same weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel

from ioi.models import pretrain
from ioi.models.small_corpus import (
    DEFAULT_VARIANT,
    IO_ENDING_P,
    VARIANTS,
    SmallStoryGenerator,
    build_small_tokenizer,
    position_probes,
)
from ioi.models.threads import one_thread
from ioi.models.tiny import BATCH, CONTEXT, HELD_OUT_TEMPLATES, _encode_batch, evaluate_ioi, seeded_model
from ioi.task.data import make_dataset


def _save_checkpoint(path: Path, step: int, model, opt, gen: SmallStoryGenerator, extra: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for i, state in opt.state_dict()["state"].items():
        tensors |= {f"opt.{i}.{k}": v.detach().clone() for k, v in state.items()}
    tensors["torch_rng"] = torch.get_rng_state()
    save_file(tensors, str(path / "state.safetensors.tmp"))
    meta = {"step": step, "python_rng": gen.rng.getstate(), **extra}
    (path / "state.json.tmp").write_text(json.dumps(meta))
    (path / "state.safetensors.tmp").replace(path / "state.safetensors")
    (path / "state.json.tmp").replace(path / "state.json")


def _load_checkpoint(path: Path, model, opt, gen: SmallStoryGenerator) -> dict:
    tensors = load_file(str(path / "state.safetensors"))
    meta = json.loads((path / "state.json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    torch.set_rng_state(tensors["torch_rng"])
    version, internal, gauss = meta["python_rng"]
    gen.rng.setstate((version, tuple(internal), gauss))
    return meta


def pretrain_small(
    out_dir: Path,
    *,
    variant: str = DEFAULT_VARIANT,
    seed: int = 0,
    steps: int | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 500,
    progress: Callable[[int, int, float], None] | None = None,
    on_checkpoint: Callable[[int, GPT2LMHeadModel], None] | None = None,
) -> dict:
    """Train ioi-small (`VARIANTS[variant]`) from scratch on one CPU thread; write an HF directory.

    With `checkpoint_dir`, the state is saved every `checkpoint_every` steps and a run resumes from
    it with identical results. Returns the manifest also written to `out_dir/manifest.json`.
    """
    recipe = VARIANTS[variant]
    steps = steps or recipe.steps
    tokenizer = build_small_tokenizer()
    vocab = tokenizer.get_vocab()
    with one_thread():
        model = seeded_model(seed, tokenizer, recipe.sizes, recipe.dropout)
        gen = SmallStoryGenerator(seed, recipe.mix, crowd=recipe.crowd, max_others=recipe.max_others,
                                  bystander_p=recipe.bystander_p, giver_p=recipe.giver_p,
                                  visit_p=recipe.visit_p, back_p=recipe.back_p)  # fmt: skip
        opt = pretrain.make_optimizer(model, recipe.lr)
        start_step, loss_ema, seconds = 0, float("nan"), 0.0
        if checkpoint_dir is not None and (Path(checkpoint_dir) / "state.json").exists():
            meta = _load_checkpoint(Path(checkpoint_dir), model, opt, gen)
            start_step, loss_ema, seconds = meta["step"], meta["loss_ema"], meta["seconds"]
        start = time.time() - seconds

        def after_step(step: int, loss_ema: float) -> None:
            if checkpoint_dir is not None and step % checkpoint_every == 0 and step < steps:
                extra = {"loss_ema": loss_ema, "seconds": time.time() - start}
                _save_checkpoint(Path(checkpoint_dir), step, model, opt, gen, extra)
                if on_checkpoint is not None:
                    on_checkpoint(step, model)
                    model.train()

        batch = lambda: _encode_batch(gen.stories(BATCH), vocab)
        curriculum = lambda step: setattr(gen, "mix", recipe.mix_at(step))
        loss_ema = pretrain.pretrain_steps(model, opt, tokenizer, batch, lr=recipe.lr, steps=steps,
                                  start_step=start_step, loss_ema=loss_ema, progress=progress,
                                  before_step=curriculum, after_step=after_step)  # fmt: skip
        seconds = time.time() - start
        model.eval()
        metrics = evaluate_ioi(model, tokenizer, make_dataset(500, seed=0, split="eval"))
        probes = evaluate_ioi(model, tokenizer, position_probes())
    manifest = {
        "name": "ioi-small",
        "variant": variant,
        "config": {**recipe.sizes, "n_positions": CONTEXT, "vocab_size": len(vocab)},
        "dropout": recipe.dropout,
        "seed": seed,
        "steps": steps,
        "batch": [BATCH, CONTEXT],
        "optimizer": pretrain.OPTIMIZER.format(lr=recipe.lr),
        "corpus_mix": recipe.mix,
        "curriculum": (
            {"warm_steps": recipe.warm_steps, "warm_mix": recipe.warm_mix} if recipe.warm_mix else None
        ),
        "crowd": recipe.crowd,
        "max_others": recipe.max_others,
        "bystander_p": recipe.bystander_p,
        "giver_p": recipe.giver_p,
        "visit_p": recipe.visit_p,
        "back_p": recipe.back_p,
        "io_ending_p": IO_ENDING_P,
        "name_loss_weight": pretrain.NAME_LOSS_WEIGHT,
        "held_out_templates": list(HELD_OUT_TEMPLATES),
        "training_seconds": round(seconds, 1),
        "final_loss_ema": round(loss_ema, 4),
        "eval": {"dataset": "make_dataset(500, seed=0, split='eval')", **metrics},
        "position_probes": {"dataset": "position_probes(200)", **probes},
    }
    return pretrain.write_model_dir(out_dir, model, tokenizer, manifest)
