"""The experiment form: its defaults (`ExperimentConfig`'s; the lr per model from `ioi.task.defaults`),
the checks of what a user typed, and submitting it as a job. Imports torch (via the experiment
module); only the Experiments page and a recompute button use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app_pages._live import MODELS
from app_pages._store import Experiment, UserError


def form_defaults() -> dict[str, Any]:
    """The experiment form's starting values: `ExperimentConfig`'s own defaults."""
    from ioi.runs.experiment import ExperimentConfig

    return ExperimentConfig().to_json()


def parse_epochs(text: str, epochs: int) -> tuple[int, ...]:
    """ "1, 3, 5" -> (1, 3, 5); UserError unless every item is an integer in 1..epochs."""
    from ioi.models.checks import parse_epochs as parse

    try:
        return parse(text, epochs)
    except ValueError as err:
        raise UserError(str(err)) from None


def parse_lr(text: str) -> float:
    """A positive learning rate such as 1e-4; UserError otherwise."""
    try:
        lr = float(text)
    except ValueError:
        raise UserError(f"{text!r} is not a number; write the learning rate like 1e-4") from None
    if not 0 < lr < 1:
        raise UserError("the learning rate must be between 0 and 1 (e.g. 1e-5 for GPT-2, 1e-4 for ioi-tiny)")
    return lr


def experiment_config(form: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """The ExperimentConfig of the experiment form's values (fields of `ExperimentConfig` plus
    the typed texts ``checkpoints`` and ``lr``), or (None, {field: message}) listing every field
    the user must fix. Fields the form leaves out keep `ExperimentConfig`'s defaults."""
    from ioi.runs.experiment import ExperimentConfig, ExperimentError

    errors: dict[str, str] = {}
    fields = {k: v for k, v in form.items() if k in ExperimentConfig.__dataclass_fields__}
    model = str(form.get("model", "")).strip()
    if not model:
        errors["model"] = "choose a model or give the path of a local model directory"
    elif model not in MODELS and not Path(model).expanduser().is_dir():
        errors["model"] = f"{model!r} is neither a known model nor an existing directory"
    epochs = int(form.get("epochs", 0))
    if not 1 <= epochs <= 100:
        errors["epochs"] = "epochs must be between 1 and 100"
    try:
        fields["checkpoint_epochs"] = parse_epochs(str(form.get("checkpoints", "")), max(epochs, 1))
    except UserError as err:
        errors["checkpoints"] = str(err)
    try:
        fields["lr"] = parse_lr(str(form.get("lr", "")))
    except UserError as err:
        errors["lr"] = str(err)
    if fields.get("scenario") != "reversal":
        fields["parent"] = None
    elif not fields.get("parent"):
        errors["parent"] = "a reversal starts from a toxic experiment: run one first, then pick it here"
    if errors:
        return None, errors
    cfg = ExperimentConfig.from_json(fields | {"model": model})
    try:
        cfg.validate()
    except ExperimentError as err:
        return None, {"form": str(err)}
    return cfg, {}


def submit(cfg: Any, root: str | Path) -> str:
    """Queue `cfg` as a background job in the cache at `root`; its job id."""
    from ioi.runs.jobs import submit as submit_job

    return submit_job(cfg, root)


def resubmit(exp: Experiment, name: str) -> str:
    """Re-run `exp`'s job with analysis `name` added (cached parts are reused); the job id."""
    from ioi.runs.experiment import ExperimentConfig

    cfg = ExperimentConfig.from_json(exp.config)
    analyses = list(dict.fromkeys((*cfg.analyses, name)))
    from ioi.runs.cache import cache_root

    root = str(cache_root()) if exp.demo else exp.root  # the demo cache is read-only: recompute in yours
    return submit(ExperimentConfig.from_json(exp.config | {"analyses": analyses}), root)


def resume_problem(cfg: dict) -> str | None:
    """Why a stopped job cannot be resumed on this machine (its model is not here), or None."""
    from ioi.models.checks import model_problem

    model = str(cfg.get("model", ""))
    problem = model_problem(model)
    if problem is None:
        return None
    return "its model directory is missing" if model.startswith(("/", ".", "~")) else problem
