"""Experiments: a model fine-tuned in one scenario, analysed at each checkpoint, cached by content.

Longer than 400 lines because planning, training and analysing an experiment share one lock and one
plan, and the whole-experiment entries (comparisons, recovery) are planned beside the per-checkpoint ones.

An experiment is a model + a scenario (clean, a toxic dataset, or reversal from a toxic experiment;
METHODS §3) + epochs, checkpoint epochs, seed, optimiser and dataset sizes + the analyses to run at
every checkpoint (epoch 0 is the starting model). Its id is a hash of the configuration, a
fingerprint of the datasets it trains and evaluates on, the model's weights (for a local model) and
the package version, so asking twice reuses the result. A reversal names its toxic parent by id,
so the parent's identity is part of the child's.

The list of analyses is deliberately *not* part of the id: results are cached per (epoch,
analysis), so asking for an extra analysis reuses the training and computes only what is missing.
Analyses that are not registered (yet) are skipped with a recorded note and computed by a later
run once they are.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ioi import __version__
from ioi.runs.cache import (
    cache_root,
    canonical_json,
    check_id,
    demo_roots,
    experiment_dir,
    experiment_lock,
    load_entry,
    read_experiment,
    register_experiment,
    write_analysis,
    write_atomic,
    write_entry,
)
from ioi.task.corruptions import CORRUPTIONS
from ioi.task.defaults import (
    ASSETS,
    DEFAULT_ANALYSES,
    DEFAULT_EVAL_SIZE,
    DEFAULT_MODEL,
    DEFAULT_TRAIN_SIZE,
    SCENARIOS,
)

METRICS = "metrics"
COMPARISONS = ("compare", "compare-family", "recovery")  # whole-experiment entries, at the last epoch
Log = Callable[[str], None]


class ExperimentError(ValueError):
    """An experiment that cannot run as configured; the message says what to change."""


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that determines an experiment's results (see the module docstring)."""

    model: str = DEFAULT_MODEL
    scenario: str = "clean"
    epochs: int = 3
    checkpoint_epochs: tuple[int, ...] = ()
    seed: int = 0
    lr: float = 1e-5
    weight_decay: float = 0.1
    batch_size: int = 32
    train_size: int = DEFAULT_TRAIN_SIZE
    eval_size: int = DEFAULT_EVAL_SIZE
    analysis_size: int = 100
    parent: str | None = None
    analyses: tuple[str, ...] = field(default=DEFAULT_ANALYSES, compare=False)

    def validate(self) -> None:
        """ExperimentError naming what to change; cheap (no model is loaded), so submit refuses at once."""
        from ioi.methods.analyses import OptionError, check_analyses
        from ioi.models.checks import check_bounds, check_optimizer, model_problem

        if self.scenario not in SCENARIOS:
            raise ExperimentError(f"unknown scenario {self.scenario!r}; known: {', '.join(SCENARIOS)}")
        if self.scenario == "reversal" and self.parent is None:
            raise ExperimentError("a reversal starts from a toxic run: give its id as --parent "
                                  "(`ioi experiments` lists them)")  # fmt: skip
        if self.scenario != "reversal" and self.parent is not None:
            raise ExperimentError(f"--parent is for --scenario reversal; a {self.scenario} run starts "
                                  "from the pretrained model")  # fmt: skip
        if self.parent is not None:
            try:
                check_id(self.parent)
            except ValueError as err:
                raise ExperimentError(f"--parent: {err}") from None
        check_optimizer(self.lr, self.weight_decay)
        check_bounds(self.epochs, self.batch_size, train_size=self.train_size, eval_size=self.eval_size,
                     analysis_size=self.analysis_size)  # fmt: skip
        if bad := [str(e) for e in self.checkpoint_epochs if not 1 <= e <= self.epochs]:
            raise ExperimentError(
                f"checkpoint epoch(s) {', '.join(bad)} outside the run's epochs 1..{self.epochs}"
            )
        try:
            per_checkpoint = [a for a in self.analyses if a not in (METRICS, *COMPARISONS)]
            check_analyses(per_checkpoint, registered_analyses())
        except OptionError as err:
            raise ExperimentError(str(err)) from None
        if problem := model_problem(self.model):
            raise ExperimentError(problem)

    @property
    def save_epochs(self) -> list[int]:
        """Checkpointed epochs (the requested ones and always the last); with 0, the analysed ones."""
        return sorted({*self.checkpoint_epochs, self.epochs})

    def train_config(self, init_from: str | None):
        from ioi.models.train import TrainConfig

        return TrainConfig(
            model=self.model, scenario=self.scenario, epochs=self.epochs,
            checkpoint_epochs=tuple(self.checkpoint_epochs), lr=self.lr, weight_decay=self.weight_decay,
            batch_size=self.batch_size, seed=self.seed, train_size=self.train_size,
            eval_size=self.eval_size, init_from=init_from,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {
            "checkpoint_epochs": list(self.checkpoint_epochs),
            "analyses": list(self.analyses),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ExperimentConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known | {"checkpoint_epochs": tuple(d.get("checkpoint_epochs", ())),
                              "analyses": tuple(d.get("analyses", DEFAULT_ANALYSES))})  # fmt: skip


@lru_cache(maxsize=64)
def dataset_fingerprint(scenario: str, seed: int, train_size: int, eval_size: int, analysis_size: int) -> str:
    """sha256 of every prompt and label the experiment trains and evaluates on, so a change to the
    templates, names or a corruption changes the experiment id."""
    from ioi.task.corruptions import training_samples
    from ioi.task.data import abc_counterfactual
    from ioi.task.names import HELD_OUT_NAMES, evaluation_samples

    train = training_samples(scenario, seed, train_size)
    evals, seen = evaluation_samples(seed, max(eval_size, analysis_size))
    h = hashlib.sha256()
    abc = abc_counterfactual(evals[:analysis_size], seed, HELD_OUT_NAMES)
    for x in [*train, *evals, *seen[:eval_size], *abc]:
        h.update(f"{x.prompt}\x00{x.label}\x01".encode())
    return h.hexdigest()


@lru_cache(maxsize=16)
def model_fingerprint(model: str) -> str:
    """The model name, plus a hash of its weight files when it is a local directory."""
    path = ASSETS / "ioi-tiny" if model == DEFAULT_MODEL else Path(model).expanduser()
    if not path.is_dir():
        return model
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return f"{model}@{h.hexdigest()[:16]}"


def identity(cfg: ExperimentConfig) -> dict[str, Any]:
    """What the experiment id hashes: config (without the analysis list), datasets, model, version.
    The checkpoint epochs are the saved ones (the last is always saved), so --checkpoint-epochs
    "" and "3" of a 3-epoch run are one experiment."""
    config = {k: v for k, v in cfg.to_json().items() if k != "analyses"}
    config["checkpoint_epochs"] = cfg.save_epochs
    data = dataset_fingerprint(cfg.scenario, cfg.seed, cfg.train_size, cfg.eval_size, cfg.analysis_size)
    return {
        "config": config,
        "dataset": data,
        "model": model_fingerprint(cfg.model),
        "ioi_version": __version__,
    }


def experiment_id(cfg: ExperimentConfig) -> str:
    """16 hex digits of the sha256 of `identity(cfg)`."""
    return hashlib.sha256(canonical_json(identity(cfg))).hexdigest()[:16]


def registered_analyses() -> dict[str, Any]:
    """The analysis registry: the built-in declarations (their modules are imported when they run)
    plus the modules named in $IOI_ANALYSIS_MODULES (comma-separated): a user's own analyses
    registered there run in background jobs and sweeps too, whose worker processes import them."""
    import importlib

    from ioi.methods.analyses import ANALYSES

    for module in os.environ.get("IOI_ANALYSIS_MODULES", "").split(","):
        if module.strip():
            importlib.import_module(module.strip())
    return ANALYSES


def plan(cfg: ExperimentConfig, root: str | Path | None, exp_id: str, log: Log) -> dict[int, list[str]]:
    """Epoch -> entries still to compute (missing or damaged), skipping, with a note in `log`,
    analyses that are not registered, model comparisons at epoch 0 (the model with itself) and
    `at_ends` analyses except at the last epoch and a clean run's epoch 0."""
    known = registered_analyses()
    missing = [name for name in cfg.analyses if name not in known and name not in COMPARISONS]
    if missing:
        log(f"skipped {', '.join(missing)}: no analysis of that name is registered")
    todo: dict[int, list[str]] = {}
    for epoch in [0, *cfg.save_epochs]:
        for name in (METRICS, *(a for a in cfg.analyses if a in known)):
            if name != METRICS and known[name].needs_other and epoch == 0:
                continue  # comparing the starting model with itself says nothing
            if name != METRICS and known[name].at_ends and epoch != cfg.epochs and not (
                epoch == 0 and cfg.scenario == "clean"
            ):
                continue  # epoch 0 of a toxic run or reversal is another run's first or last epoch
            if load_entry(root, exp_id, epoch, name, report=log) is None:
                todo.setdefault(epoch, []).append(name)
    for name in (c for c in COMPARISONS if c in cfg.analyses):  # after every checkpoint's analyses
        if load_entry(root, exp_id, cfg.epochs, name, report=log) is None:
            todo.setdefault(cfg.epochs, []).append(name)
    return todo


def is_complete(cfg: ExperimentConfig, root: str | Path | None = None) -> bool:
    """Whether every entry `cfg` asks for is validly cached (so running it would do nothing).
    A damaged entry found on the way is reported as a warning and set aside for recomputation."""
    import warnings

    def report(message: str) -> None:
        if "recomputed" in message:
            warnings.warn(message, stacklevel=3)

    return not plan(cfg, root, experiment_id(cfg), report)


def checkpoints_dir(root: str | Path | None, exp_id: str) -> Path:
    return experiment_dir(root, exp_id) / "checkpoints"


def parent_record(root: str | Path | None, parent: str) -> dict[str, Any] | None:
    """The experiment record of `parent`: from `root`, else from a demo cache (read only: nothing
    is written until the reversal is checked); None if neither knows it."""
    record = read_experiment(root, parent)
    demos = (read_experiment(d, parent) for d in demo_roots() if (d / "experiments").is_dir())
    return record if record is not None else next((r for r in demos if r is not None), None)


def adopt_results(exp_id: str, root: str | Path | None = None) -> int:
    """Copy into `root` the cached entries of experiment `exp_id` that a demo cache holds and
    `root` does not (files only, never over one of `root`'s): a run of the demo's, asked with more
    analyses, then computes only those (a job re-creates the weights they need). The number of
    files copied."""
    base = cache_root(root)
    donor = next((d for d in demo_roots() if d != base and read_experiment(d, exp_id) is not None), None)
    if donor is None:
        return 0
    copied = 0
    source = experiment_dir(donor, exp_id)
    for path in sorted(source.glob("epoch-[0-9][0-9][0-9]/*")):
        target = experiment_dir(base, exp_id) / path.relative_to(source)
        if path.is_file() and not path.name.startswith(".") and not target.exists():
            write_atomic(target, path.read_bytes())
            copied += 1
    return copied


def check_parent(cfg: ExperimentConfig, record: dict[str, Any]) -> ExperimentConfig:
    """The configuration of reversal `cfg`'s parent (its experiment `record`); ExperimentError when
    the parent is not a toxic run of the same model (said at submit, not when the job runs)."""
    parent = ExperimentConfig.from_json(record["config"])
    if parent.scenario not in CORRUPTIONS:
        raise ExperimentError(
            f"a reversal starts from a toxic experiment; {cfg.parent} is a {parent.scenario} run"
        )
    if parent.model != cfg.model:
        raise ExperimentError(
            f"parent {cfg.parent} fine-tuned {parent.model}, not {cfg.model}: use --model {parent.model}"
        )
    return parent


def parent_checkpoint(
    cfg: ExperimentConfig, root: str | Path | None, device: str, log: Log, *, every: bool = False
) -> str:
    """The final checkpoint of reversal `cfg`'s toxic parent in `root` (with `every`, all its
    checkpoints: a lineage comparison profiles them). A parent known only to a demo cache is
    registered in `root` (the lineage analyses read it there) and its shipped weights are copied;
    what no cache holds intact is re-trained, deterministically."""
    from ioi.models.train import checkpoint_dir, finetune

    record = parent_record(root, cfg.parent)
    if record is None:
        raise ExperimentError(f"parent experiment {cfg.parent} is not in this cache; run it first")
    parent = check_parent(cfg, record)
    folder = checkpoints_dir(root, cfg.parent)
    needed = parent.save_epochs if every else [parent.epochs]
    with experiment_lock(root, cfg.parent):
        register_experiment(root, cfg.parent, record)
        if _copy_shipped(cfg.parent, needed, folder):
            log(f"copied the weights of parent {cfg.parent} from the demo cache")
        if _prepare_checkpoints(folder, needed, log):
            log(f"re-creating the weights of parent {cfg.parent} (no cache holds them intact)")
            finetune(parent.train_config(None), folder, device=device)
    return str(checkpoint_dir(folder, parent.epochs))


def _copy_shipped(exp_id: str, epochs: list[int], folder: Path) -> bool:
    """Copy into `folder` the checkpoints of `epochs` a demo cache ships intact, when `folder` lacks
    an intact one and a demo cache has all of them; whether it copied."""
    import shutil

    from ioi.models.load import verify_checkpoint

    def intact(d: Path) -> bool:
        return (d / "manifest.json").is_file() and verify_checkpoint(d) is None

    names = [f"epoch-{e:03d}" for e in epochs]
    if all(intact(folder / n) for n in names):
        return False
    for demo in demo_roots():
        shipped = checkpoints_dir(demo, exp_id)
        if all(intact(shipped / n) for n in names):
            for n in names:
                if not intact(folder / n):
                    shutil.rmtree(folder / n, ignore_errors=True)
                    shutil.copytree(shipped / n, folder / f"{n}.tmp", dirs_exist_ok=True)
                    (folder / f"{n}.tmp").rename(folder / n)
            return True
    return False


@dataclass
class ExperimentSummary:
    """What a run returns (small and picklable, for sweeps on Dask): the id, the eval metrics by
    epoch, whether it trained, and notes (skipped analyses, recomputed entries)."""

    id: str
    metrics: dict[int, dict[str, float]]
    trained: bool
    notes: list[str]


def run_experiment(
    cfg: ExperimentConfig,
    root: str | Path | None = None,
    *,
    device: str = "cpu",
    progress: Callable[[int, int, int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Log | None = None,
) -> ExperimentSummary:
    """Train (resuming from existing checkpoints) and analyse what is not cached yet.

    progress(epoch, epochs, step, steps, loss) follows training; `log(message)` receives notes and
    the analysis phase; `should_stop()` cancels at the next training step (ioi.models.train.Cancelled).
    """
    from ioi.models.train import Cancelled, finetune

    cfg.validate()
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        if log is not None:
            log(message)

    exp_id = experiment_id(cfg)
    register_experiment(root, exp_id, identity(cfg) | {"id": exp_id, "config": cfg.to_json()})
    trained = False
    with experiment_lock(root, exp_id):
        todo = plan(cfg, root, exp_id, note)
        # a cached reversal needs no weights: its parent is only re-created when something runs
        compares = any(c in names for names in todo.values() for c in COMPARISONS)  # need every checkpoint
        family = any("compare-family" in names for names in todo.values())
        init = parent_checkpoint(cfg, root, device, note, every=family) if cfg.parent and todo else None
        needed = cfg.save_epochs if compares else [e for e in todo if e > 0]
        if _prepare_checkpoints(checkpoints_dir(root, exp_id), needed, note):
            finetune(cfg.train_config(init), checkpoints_dir(root, exp_id), device=device,
                     progress=progress, should_stop=should_stop)  # fmt: skip
            trained = True
        failed = []
        for epoch, names in sorted(todo.items()):
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled before the analyses of epoch {epoch}")
            failed += analyse_epoch(cfg, root, exp_id, epoch, names, init, device, note)
    if failed:
        raise ExperimentError("; ".join(failed))
    metrics = {}
    for epoch in [0, *cfg.save_epochs]:
        entry = load_entry(root, exp_id, epoch, METRICS, report=note)
        if entry is not None:
            metrics[epoch] = entry.summary
    return ExperimentSummary(exp_id, metrics, trained, notes)


def _prepare_checkpoints(folder: Path, epochs: list[int], note: Log) -> bool:
    """Whether training must run to produce the checkpoints of `epochs`. Fine-tuning resumes from
    the latest complete checkpoint, so when one is missing (pruned) or damaged (its files do not
    match the manifest's checksums) it and the later ones are removed, to retrain from before."""
    import shutil

    from ioi.models.load import verify_checkpoint
    from ioi.models.train import checkpoints

    present = checkpoints(folder)
    missing = []
    for e in sorted(epochs):
        problem = verify_checkpoint(present[e]) if e in present else "missing"
        if problem:
            if e in present:
                note(f"checkpoint of epoch {e} is damaged ({problem}); re-creating it")
            missing.append(e)
    if not missing:
        return False
    for epoch, later in present.items():
        if epoch >= missing[0]:
            shutil.rmtree(later)
    return True


def analyse_epoch(
    cfg: ExperimentConfig, root, exp_id: str, epoch: int, names: list[str], init: str | None, device: str,
    note: Log,
) -> list[str]:  # fmt: skip
    """Compute and store `names` at `epoch`; returns messages for analyses that raised (the others
    are still stored)."""
    from ioi.methods.analyses import run_analysis
    from ioi.models.load import load_model
    from ioi.models.train import checkpoint_dir
    from ioi.task.data import abc_counterfactual, tokenize
    from ioi.task.names import HELD_OUT_NAMES, evaluation_samples, name_split_metrics

    start = init or cfg.model
    source = start if epoch == 0 else str(checkpoint_dir(checkpoints_dir(root, exp_id), epoch))
    note(f"analysing epoch {epoch}: {', '.join(names)}")
    model = load_model(source, device=device, seed=cfg.seed)
    samples, seen = evaluation_samples(cfg.seed, max(cfg.eval_size, cfg.analysis_size))
    eval_batch = tokenize(samples[: cfg.eval_size], model.tokenizer)
    clean = tokenize(samples[: cfg.analysis_size], model.tokenizer)
    abc_samples = abc_counterfactual(samples[: cfg.analysis_size], cfg.seed, HELD_OUT_NAMES)
    abc = tokenize(abc_samples, model.tokenizer, like=clean)
    other = None
    failed = []
    for name in names:
        if name in COMPARISONS:  # a failure is kept as a note, as for an analysis
            failed += importlib.import_module("ioi.runs.compare").run_comparison(root, exp_id, name, device,
                                                                                 note)  # fmt: skip
            continue
        if name == METRICS:
            seen_batch = tokenize(seen[: cfg.eval_size], model.tokenizer)
            summary, prompts = name_split_metrics(model, eval_batch, seen_batch)
            write_entry(root, exp_id, epoch, METRICS, summary, {"prompts": prompts})
            continue
        if registered_analyses()[name].needs_other and other is None:
            other = load_model(start, device=device, seed=cfg.seed)
        try:
            result = run_analysis(name, model, clean, abc, other=other)
        except Exception as err:  # one analysis failing must not lose the others; the note says why
            failed.append(f"analysis {name} failed at epoch {epoch}: {type(err).__name__}: {err}")
            note(failed[-1])
            continue
        write_analysis(root, exp_id, epoch, name, result)
    return failed

