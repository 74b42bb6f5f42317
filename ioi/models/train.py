"""Fine-tuning scenarios (METHODS §3): clean, toxic and reversal, with resumable checkpoints.

Loss is the cross-entropy of the label token at END only. Training runs on the raw HF module (the
analysis bridge keeps its own processed copy of the weights). Every source of randomness — the
epoch's shuffle and dropout — is derived from (seed, epoch, step), so a run resumed from a
checkpoint (weights + AdamW state) ends bit-identical on CPU to an uninterrupted one.

A checkpoint is written into ``epoch-NNN.tmp/`` (every file fsync'd, its sha256 in the manifest),
then renamed to ``epoch-NNN/``; a directory it replaces is first renamed to ``epoch-NNN.old.tmp``.
So a kill at any point leaves either a complete ``epoch-NNN/`` or only ``*.tmp`` leftovers, which
the next run deletes; only complete, verified ``epoch-NNN/`` directories are resumed from.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ioi import __version__
from ioi.models.checks import TrainingError, check_bounds, check_optimizer
from ioi.models.load import DEFAULT_MODEL, file_sha256, load_hf, read_manifest, verify_checkpoint
from ioi.task.corruptions import CORRUPTIONS, training_samples
from ioi.task.data import IOIBatch, make_dataset, tokenize
from ioi.task.defaults import DEFAULT_EVAL_SIZE, DEFAULT_TRAIN_SIZE
from ioi.task.metrics import evaluate
from ioi.task.names import HELD_OUT_NAMES

SCENARIOS: tuple[str, ...] = ("clean", *CORRUPTIONS, "reversal")
Progress = Callable[[int, int, int, int, float], None]
"""progress(epoch, epochs, step, steps_per_epoch, loss), called after every optimizer step."""


class Cancelled(Exception):
    """Raised inside `finetune` when `should_stop()` turns true; finished checkpoints are kept."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a fine-tuning run. `init_from` is the checkpoint a reversal (or
    any run) starts from; without it the run starts from `model`'s pretrained weights."""

    model: str = DEFAULT_MODEL
    scenario: str = "clean"
    epochs: int = 3
    checkpoint_epochs: tuple[int, ...] = ()
    lr: float = 1e-5
    weight_decay: float = 0.1
    batch_size: int = 32
    seed: int = 0
    train_size: int = DEFAULT_TRAIN_SIZE
    eval_size: int = DEFAULT_EVAL_SIZE
    init_from: str | None = None

    def validate(self) -> None:
        if self.scenario not in SCENARIOS:
            raise TrainingError(f"unknown scenario {self.scenario!r}; known: {', '.join(SCENARIOS)}")
        if self.scenario == "reversal" and not self.init_from:
            raise TrainingError("the reversal scenario needs --from DIR, a toxic checkpoint to retrain")
        if self.init_from and not Path(self.init_from).is_dir():
            raise TrainingError(f"--from {self.init_from} does not exist (give a checkpoint directory, "
                                "e.g. runs/toxic/epoch-005)")  # fmt: skip
        if self.init_from and read_manifest(self.init_from) is None:
            raise TrainingError(f"{self.init_from} is not a checkpoint written by ioi (no manifest.json)")
        if self.epochs < 1:
            raise TrainingError(f"epochs must be at least 1, got {self.epochs}")
        bad = [e for e in self.checkpoint_epochs if not 1 <= e <= self.epochs]
        if bad:
            raise TrainingError(f"checkpoint epochs {bad} are outside 1..{self.epochs}")
        check_optimizer(self.lr, self.weight_decay)
        check_bounds(self.epochs, self.batch_size, train_size=self.train_size, eval_size=self.eval_size)

    @property
    def save_epochs(self) -> list[int]:
        """Checkpointed epochs: the requested ones and always the last."""
        return sorted({*self.checkpoint_epochs, self.epochs})

    def to_json(self) -> dict:
        return asdict(self) | {"checkpoint_epochs": list(self.checkpoint_epochs)}


def label_loss(model: torch.nn.Module, batch: IOIBatch) -> torch.Tensor:
    """Mean cross-entropy of the label token at END for an HF causal LM.

    Only the END hidden states go through the unembedding, which saves a [batch, pos, vocab]
    logits tensor (most of the cost for GPT-2's 50k vocabulary).
    """
    device = next(model.parameters()).device
    hidden = model.base_model(batch.tokens.to(device)).last_hidden_state
    last = hidden[torch.arange(len(batch), device=device), batch.end.to(device)]
    logits = model.get_output_embeddings()(last)
    return torch.nn.functional.cross_entropy(logits, batch.label_tok.to(device))


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # Biases and LayerNorm gains are not decayed (the usual GPT-2 recipe).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _save_optimizer(opt: torch.optim.AdamW, path: Path) -> None:
    tensors = {
        f"{i}.{k}": v.contiguous() for i, state in opt.state_dict()["state"].items() for k, v in state.items()
    }
    save_file(tensors, str(path))


def _load_optimizer(opt: torch.optim.AdamW, path: Path) -> None:
    flat = load_file(str(path))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = value
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)


def checkpoint_dir(out_dir: Path, epoch: int) -> Path:
    return out_dir / f"epoch-{epoch:03d}"


_CHECKPOINT = re.compile(r"epoch-(\d{3,})")


def checkpoints(out_dir: Path) -> dict[int, Path]:
    """Epoch -> directory of every finished `epoch-NNN/` under `out_dir` (one with a manifest;
    unverified), ignoring `*.tmp` leftovers of a killed write."""
    found = {}
    for p in Path(out_dir).glob("epoch-*"):
        m = _CHECKPOINT.fullmatch(p.name)
        if m and (p / "manifest.json").is_file():
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def latest_checkpoint(out_dir: Path) -> tuple[int, Path] | None:
    """The highest checkpoint under `out_dir` that can be resumed from: complete, with its
    optimizer state, and every file matching its manifest's checksum. Damaged ones are skipped
    with a warning (training re-creates them)."""
    for epoch, p in reversed(checkpoints(out_dir).items()):
        if not (p / "optimizer.safetensors").is_file():
            continue
        problem = verify_checkpoint(p)
        if problem is None:
            return epoch, p
        warnings.warn(f"not resuming from {p}: {problem}", stacklevel=2)
    return None


RUN_FIELDS = ("model", "scenario", "lr", "weight_decay", "batch_size", "seed", "train_size", "eval_size")
"""What makes two runs different runs; a longer run of the same ones continues it (epochs may grow)."""


def check_same_run(out_dir: Path, cfg: TrainConfig) -> None:
    """TrainingError when `out_dir` holds a checkpoint of another run than `cfg`'s: resuming from
    it, or mixing its epochs with this run's, would give a result that is neither."""
    for path in checkpoints(out_dir).values():
        saved = (read_manifest(path) or {}).get("config") or {}
        differ = [f"{k} {saved[k]!r}, not {getattr(cfg, k)!r}" for k in RUN_FIELDS
                  if k in saved and saved[k] != getattr(cfg, k)]  # fmt: skip
        if differ:
            raise TrainingError(
                f"{out_dir} holds checkpoints of another run ({path.name} has {'; '.join(differ)}): "
                "give another --out, or that run's settings to resume it"
            )


def clean_leftovers(out_dir: Path) -> list[Path]:
    """Delete the `*.tmp` files and directories a killed checkpoint write left; returns them."""
    stale = sorted(Path(out_dir).glob("*.tmp"))
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    return stale


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_checkpoint(
    model: torch.nn.Module, tokenizer, opt, cfg: TrainConfig, epoch: int, metrics: dict, out: Path
) -> Path:
    final = checkpoint_dir(out, epoch)
    tmp = final.with_name(final.name + ".tmp")
    old = final.with_name(final.name + ".old.tmp")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        _save_optimizer(opt, tmp / "optimizer.safetensors")
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        for f in files:
            f.chmod(0o644)  # safetensors writes 0600; a cache shared between users needs 0644
        manifest = _manifest(cfg, epoch, metrics) | {"files": {f.name: file_sha256(f) for f in files}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        if final.exists():  # a directory from a killed or pruned run: set aside in one rename
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
        tmp.rename(final)  # the manifest appears atomically with the whole directory
        _fsync(out)
    except BaseException:  # a full disk or a cancel: leave no half-written directory behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)  # a kill here leaves only a *.tmp, deleted on resume
    return final


def _manifest(cfg: TrainConfig, epoch: int, metrics: dict) -> dict:
    return {
        "format": "ioi-checkpoint/1",
        "ioi_version": __version__,
        "base_model": read_manifest(cfg.init_from)["base_model"] if cfg.init_from else cfg.model,
        "scenario": cfg.scenario,
        "epoch": epoch,
        "config": cfg.to_json(),
        "dataset": {"train_size": cfg.train_size, "eval_size": cfg.eval_size, "seed": cfg.seed},
        "optimizer": {"name": "AdamW", "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                      "batch_size": cfg.batch_size},
        "metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip


def finetune(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
) -> list[Path]:
    """Run the scenario of `cfg`, writing checkpoints under `out_dir/epoch-NNN/`.

    Resumes from the latest complete checkpoint already in `out_dir` (TrainingError when its
    checkpoints are another run's: `check_same_run`). Returns every checkpoint
    directory of the run in epoch order. Raises `Cancelled` when `should_stop()` becomes true.
    on_step(step, model): called with the global step (0 before the first) and the model being
    trained, which it must leave as it is (e.g. evaluate a copy: ioi.runs.recovery).
    """
    cfg.validate()
    out = Path(out_dir)
    clean_leftovers(out)
    check_same_run(out, cfg)
    start = latest_checkpoint(out)
    source = str(start[1]) if start else (cfg.init_from or cfg.model)
    model, tokenizer, _ = load_hf(source, seed=cfg.seed)
    model.to(device)
    opt = _optimizer(model, cfg)
    first_epoch = 1
    if start:
        _load_optimizer(opt, start[1] / "optimizer.safetensors")
        first_epoch = start[0] + 1

    batch = tokenize(training_samples(cfg.scenario, cfg.seed, cfg.train_size), tokenizer)
    eval_batch = tokenize(make_dataset(cfg.eval_size, cfg.seed, "eval", names=HELD_OUT_NAMES), tokenizer)
    steps = math.ceil(len(batch) / cfg.batch_size)
    out.mkdir(parents=True, exist_ok=True)  # only now: a model or prompts that fail leave no empty folder
    if on_step is not None and first_epoch == 1:
        on_step(0, model)
    for epoch in range(first_epoch, cfg.epochs + 1):
        order = torch.randperm(
            len(batch), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        )
        model.train()
        total = 0.0
        for step in range(steps):
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled at epoch {epoch}, step {step}")
            torch.manual_seed(hash((cfg.seed, epoch, step)) & 0x7FFF_FFFF)  # dropout
            loss = label_loss(model, batch.subset(order[step * cfg.batch_size : (step + 1) * cfg.batch_size]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            if progress is not None:
                progress(epoch, cfg.epochs, step + 1, steps, loss.item())
            if on_step is not None:
                on_step((epoch - 1) * steps + step + 1, model)
                model.train()
        if epoch in cfg.save_epochs:
            model.eval()
            metrics = evaluate(model, eval_batch).to_json() | {"train_loss": total / steps}
            _write_checkpoint(model, tokenizer, opt, cfg, epoch, metrics, out)
            # Resuming needs the optimizer state of the latest checkpoint only; AdamW's moments are
            # twice the model's size (1 GB for GPT-2 small), so older copies are dropped.
            for e in cfg.save_epochs:
                if e < epoch:
                    checkpoint_dir(out, e).joinpath("optimizer.safetensors").unlink(missing_ok=True)
    return [checkpoint_dir(out, e) for e in cfg.save_epochs]


@torch.no_grad()
def train_loss(model: torch.nn.Module, batch: IOIBatch, chunk: int = 256) -> float:
    """Mean label loss of `model` over `batch`."""
    total = 0.0
    for i in range(0, len(batch), chunk):
        sub = batch.subset(range(i, min(i + chunk, len(batch))))
        total += label_loss(model, sub).item() * len(sub)
    return total / len(batch)
