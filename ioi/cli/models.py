"""Commands on one model: write a dataset, evaluate, fine-tune, rebuild the bundled models."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from ioi.cli.registry import (
    DEVICE_HELP,
    UsageError,
    add_inputs,
    check_device,
    check_size,
    command,
    command_prompts,
    learning_rate,
    logit_diff_text,
    model_name,
    use_torch_threads,
)
from ioi.task.defaults import (
    ASSETS,
    DEFAULT_EVAL_SIZE,
    DEFAULT_MODEL,
    DEFAULT_TRAIN_SIZE,
    SCENARIOS,
    TOXIC_DATASETS,
    lr_help,
)


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=DEFAULT_TRAIN_SIZE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("train", "eval"), default="train")
    p.add_argument("--corruption", help=f"write this toxic dataset: {', '.join(TOXIC_DATASETS)}")
    p.add_argument("--model", help="check that names, places and objects are single tokens for this model")
    p.add_argument("--out", type=Path, required=True, help="output JSONL file")


@command("dataset", "write an IOI dataset (clean or toxic) as JSONL", _dataset_args)
def run_dataset(args: argparse.Namespace) -> int:
    from ioi.task.corruptions import corrupt
    from ioi.task.data import make_dataset, tokenize, write_jsonl

    if args.out.is_dir():
        raise UsageError(f"--out {args.out} is a directory; give a file name for the JSONL")
    if not args.out.absolute().parent.is_dir():
        raise UsageError(f"--out {args.out}: folder {args.out.absolute().parent} does not exist")
    samples = make_dataset(args.size, args.seed, args.split)
    if args.corruption:
        samples = corrupt(samples, args.corruption, args.seed)
    if args.model:
        from ioi.models.load import tokenizer_of

        tokenize(samples, tokenizer_of(args.model))  # raises, naming any role that is not one token
    write_jsonl(samples, args.out)
    print(f"wrote {len(samples)} samples to {args.out}", file=sys.stderr)
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    add_inputs(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")


@command("eval", "logit difference, accuracy and IO probability of a model", _eval_args)
def run_eval(args: argparse.Namespace) -> int:
    from ioi.models.load import load_hf
    from ioi.task.metrics import evaluate

    args.device = check_device(args.device)
    check_size(args)
    use_torch_threads()
    hf, tok, source = load_hf(model_name(args))
    hf.to(args.device)
    _, batch = command_prompts(args, tok, getattr(hf.config, "n_positions", None))
    m = evaluate(hf.eval(), batch)
    result = m.to_json() | {"model": model_name(args), "source": source}
    if args.json:  # NaN is not JSON: an undefined standard error is null
        print(json.dumps({k: None if v != v else v for k, v in result.items()}))
        return 0
    se = "undefined from one prompt" if math.isnan(m.logit_diff_se) else f"± {m.logit_diff_se:.3f} s.e."
    print(f"{m.n} prompt{'' if m.n == 1 else 's'}, {model_name(args)} ({source})")
    print(f"  logit difference  {m.logit_diff:.3f} ({se}): logit(IO) − logit(S) at the last position, mean")
    print(f"  accuracy          {m.accuracy:.3f}: share of prompts with logit(IO) > logit(S)")
    print(f"  IO probability    {m.io_prob:.3f}: mean probability of the IO token")
    print(f"  label probability {m.label_prob:.3f}: mean probability of each prompt's label (its IO unless "
          "a dataset gives another)")  # fmt: skip
    return 0


def _finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", help=f"model to fine-tune (default {DEFAULT_MODEL}; with --from: the checkpoint's)"
    )
    p.add_argument("--scenario", choices=SCENARIOS, default="clean")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--from", dest="init_from", help="checkpoint to start from (required for reversal)")
    p.add_argument("--checkpoint-epochs", default="", help="comma-separated epochs to save, e.g. 1,3,5")
    p.add_argument("--lr", type=float, help=lr_help())
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int, default=DEFAULT_TRAIN_SIZE)
    p.add_argument("--eval-size", type=int, default=DEFAULT_EVAL_SIZE)
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--out", type=Path, required=True, help="directory for epoch-NNN checkpoints")


def _base_model(model: str | None, init_from: str | None, scenario: str) -> str:
    """The model a run fine-tunes: --from's base model (a --model naming another is refused, as it
    would only change the default lr and the record), else --model or the default. A reversal from
    a checkpoint that is not toxic is refused."""
    from ioi.models.load import read_manifest

    manifest = read_manifest(init_from) if init_from and Path(init_from).is_dir() else None
    if manifest is None or "base_model" not in manifest:
        return model or DEFAULT_MODEL  # TrainConfig.validate says what is wrong with --from
    if scenario == "reversal" and manifest.get("scenario") in ("clean", "reversal"):
        toxic = ", ".join(TOXIC_DATASETS)
        raise UsageError(f"--from {init_from} is a {manifest['scenario']} checkpoint; a reversal retrains a "
                         f"toxic one (a checkpoint of --scenario {toxic})")  # fmt: skip
    base = str(manifest["base_model"])
    if model is not None and model != base and Path(model).resolve() != Path(base).resolve():
        raise UsageError(f"--from {init_from} is a checkpoint of {base}, not {model}: give --model {base} "
                         "or leave --model out")  # fmt: skip
    return base


@command("finetune", "fine-tune a model on a clean, toxic or reversal scenario", _finetune_args)
def run_finetune(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ioi.models.checks import parse_epochs
    from ioi.models.train import Cancelled, TrainConfig, finetune

    args.device = check_device(args.device)
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a directory for the checkpoints")
    # before the default lr, which depends on the model
    args.model = _base_model(args.model, args.init_from, args.scenario)
    cfg = TrainConfig(
        model=args.model,
        scenario=args.scenario,
        epochs=args.epochs,
        init_from=args.init_from,
        checkpoint_epochs=parse_epochs(args.checkpoint_epochs),
        lr=learning_rate(args),
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        seed=args.seed,
        train_size=args.train_size,
        eval_size=args.eval_size,
    )
    cfg.validate()
    use_torch_threads()
    bars: list = []  # opened at the first step, so an error before training is the only line
    times: list[float] = []

    def progress(epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
        times.append(time.perf_counter())
        if not bars:
            bars.append(tqdm(total=epochs * steps, unit="step", desc=cfg.scenario))
        bar = bars[0]
        bar.n = (epoch - 1) * steps + step
        bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{loss:.3f}", refresh=False)
        bar.update(0)

    try:
        paths = finetune(cfg, args.out, device=args.device, progress=progress)
    except KeyboardInterrupt:
        raise Cancelled(f"interrupted; the checkpoints finished so far are in {args.out}, and the same "
                        "command resumes from the last one") from None  # fmt: skip
    finally:
        for bar in bars:
            bar.close()
    if len(times) > 1:  # from the first step to the last, as benchmarks/cli_speed.py measures a job
        seconds = times[-1] - times[0]
        print(f"trained {len(times)} steps in {seconds:.1f} s: {(len(times) - 1) / seconds:.1f} steps/s, "
              "evaluations and checkpoints included (the bar's rate is its recent average)",
              file=sys.stderr)  # fmt: skip
    for p in paths:  # the evaluation each checkpoint's manifest holds (held-out names)
        m = json.loads((p / "manifest.json").read_text())
        e = m["metrics"]
        print(f"epoch {m['epoch']}: logit diff {logit_diff_text(e)}, accuracy "
              f"{e['accuracy']:.3f}, train loss {e['train_loss']:.3f}", file=sys.stderr)  # fmt: skip
        print(p)
    return 0


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=ASSETS / "ioi-tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="training steps (default: the model card's)")


def _step_bar(desc: str):
    """A tqdm bar and the `progress(step, total, loss)` callback pretraining calls."""
    from tqdm import tqdm

    bar = tqdm(unit="step", desc=desc)

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.n = step
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.update(0)

    return bar, progress


@command("pretrain-tiny", "rebuild the bundled ioi-tiny model from its synthetic corpus", _pretrain_args)
def run_pretrain(args: argparse.Namespace) -> int:
    from ioi.models.tiny import pretrain_tiny

    bar, progress = _step_bar("pretrain-tiny")
    kwargs = {"steps": args.steps} if args.steps else {}
    result = pretrain_tiny(args.out, seed=args.seed, progress=progress, **kwargs)
    bar.close()
    print(json.dumps(result, indent=2))
    return 0


def _pretrain_small_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=ASSETS / "ioi-small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="training steps (default: the variant's)")
    p.add_argument("--variant", help="a recipe the model card reports (default: the shipped one)")
    p.add_argument(
        "--checkpoint-dir", type=Path, help="save the state here every 500 steps; a rerun resumes from it"
    )


@command(
    "pretrain-small", "rebuild the bundled ioi-small model from its synthetic corpus", _pretrain_small_args
)
def run_pretrain_small(args: argparse.Namespace) -> int:
    from ioi.models.small import pretrain_small
    from ioi.models.small_corpus import DEFAULT_VARIANT, VARIANTS

    variant = args.variant or DEFAULT_VARIANT
    if variant not in VARIANTS:
        print(f"error: unknown variant {variant!r}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    bar, progress = _step_bar("pretrain-small")
    result = pretrain_small(
        args.out, variant=variant, seed=args.seed, steps=args.steps,
        checkpoint_dir=args.checkpoint_dir, progress=progress,
    )  # fmt: skip
    bar.close()
    print(json.dumps(result, indent=2))
    return 0
