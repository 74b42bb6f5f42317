"""`ioi analyze METHOD`: one analysis of the registry on one model, printed as its per-head table."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

from ioi.cli.registry import (
    add_inputs,
    check_device,
    check_size,
    command,
    command_prompts,
    model_name,
    use_torch_threads,
)
from ioi.methods.analyses import ANALYSES, OptionError, analysis

SHOWN = 15  # head rows printed as text

ANALYZE_SIZE = 100
TEXT_OPTIONS = {"heads"}
"""Options kept as text: head lists like "10.10" must not become the number 10.1."""


def _analyses_epilog() -> str:
    """Every declared analysis with its options, for `ioi analyze --help`."""
    lines = ["analyses and their --option KEY=VALUE (type, default):"]
    for a in ANALYSES.values():
        lines.append(f"  {a.name}{' (needs --other)' if a.needs_other else ''}: {a.description}")
        lines += [f"      {o.describe()}" for o in a.options]
    return "\n".join(lines)


def _analyze_args(p: argparse.ArgumentParser) -> None:
    p.epilog = _analyses_epilog()
    p.add_argument("method", help=f"one of: {', '.join(ANALYSES)} (options below)")
    p.add_argument(
        "--other",
        help="the base model a cross-model analysis compares --model with (cmap: the starting model, "
        "--model the fine-tuned one)",
    )
    add_inputs(p, size=ANALYZE_SIZE)
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the analysis (listed below), e.g. --option receiver=q "
        "--option heads='9.9 9.6 10.0'; repeatable",
    )
    p.add_argument(
        "--circuit",
        type=Path,
        help="a circuit JSON file for knockout/faithfulness (Circuit.to_json, or `analyze classify --out`'s)",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--out", type=Path, help="also write the JSON result to this file")


def parse_options(pairs: list[str]) -> dict[str, object]:
    """["key=value", …] -> {key: JSON value or text}; ValueError for a pair without '='."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"an option is KEY=VALUE, got {pair!r}")
        key = key.replace("-", "_")
        if key in TEXT_OPTIONS:
            options[key] = value
            continue
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def json_safe(value: object) -> object:
    """`value` with NaN/inf floats as null, so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _circuit_file(path: Path) -> dict:
    """The circuit JSON in `path`, checked now (before a model loads); ValueError naming the file."""
    from ioi.task.circuit import Circuit

    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--circuit {path} is not a JSON file ({err})") from None
    except OSError as err:
        raise ValueError(f"--circuit {path}: {err.strerror or err}") from None
    try:
        Circuit.from_json(data)
    except ValueError as err:
        raise ValueError(f"--circuit {path}: {err}") from None
    return data


@command(
    "analyze",
    "run one analysis (any name in the analysis registry) and print its per-head table",
    _analyze_args,
)
def run_analyze(args: argparse.Namespace) -> int:
    try:  # everything the user typed is checked before a model is loaded
        check_device(args.device)
        if args.out and args.out.is_dir():
            raise ValueError(f"--out {args.out} is a directory; give a file for the JSON result")
        if args.out and not args.out.absolute().parent.is_dir():  # said now, not after the analysis
            raise ValueError(f"--out {args.out}: folder {args.out.absolute().parent} does not exist")
        options = parse_options(args.option)
        entry = analysis(args.method)
        if "circuit" in options:
            raise ValueError("a circuit is given as a file: --circuit FILE, not --option circuit=…")
        if args.circuit and not any(o.name == "circuit" for o in entry.options):
            takes = sorted(a.name for a in ANALYSES.values() if any(o.name == "circuit" for o in a.options))
            raise ValueError(f"--circuit: {entry.name} uses no circuit; these do: {', '.join(takes)}")
        if args.circuit:
            options["circuit"] = _circuit_file(args.circuit)
            found_on = options["circuit"].get("model")
            if found_on and found_on != model_name(args):  # `analyze classify --out` names its model
                warnings.warn(f"--circuit {args.circuit} was found on {found_on}, not on {model_name(args)}",
                              stacklevel=1)  # fmt: skip
        options = entry.check(options)
        if entry.needs_other and not args.other:
            raise OptionError(
                f"analysis {args.method!r} compares two models: give the second one with --other"
            )
        if args.other and not entry.needs_other:  # it would be loaded and not used
            pairs = ", ".join(n for n, a in ANALYSES.items() if a.needs_other)
            raise OptionError(f"analysis {args.method!r} reads one model; --other is for {pairs}")
        check_size(args)
    except (ValueError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from ioi.methods.analyses import run_analysis
    from ioi.models.load import load_model
    from ioi.task.data import abc_counterfactual, tokenize

    use_torch_threads()
    try:
        model = load_model(model_name(args), device=args.device, seed=args.seed)
        other = load_model(args.other, device=args.device, seed=args.seed) if args.other else None
        samples, clean = command_prompts(args, model.tokenizer, model.bridge.cfg.n_ctx)
        abc = tokenize(abc_counterfactual(samples, args.seed), model.tokenizer, like=clean)
        result = run_analysis(args.method, model, clean, abc, other=other, **options)
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        if isinstance(err, TypeError) and "unexpected keyword argument" not in str(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    other_model = {"other": args.other} if args.other else {}
    out = json_safe({"model": model_name(args), **other_model, "n_prompts": len(clean), **result.to_json()})
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            if not isinstance(value, list | dict) and value not in (None, ""):  # unset fields say nothing
                print(f"{key:>14}: {value}")
        heads = result.heads
        valued = heads[heads["value"].notna()]  # e.g. heads that cannot send to a path's receivers
        top = valued.reindex(valued["value"].abs().sort_values(ascending=False).index).head(SHOWN)
        print(f"\n{ANALYSES[args.method].description}.")
        if heads.empty:
            why = out.get("circuit_reason") or out.get("ratio_undefined") or "the analysis found none"
            print(f"No rows: {why}")
            return 0
        if len(heads) > len(valued):
            print(f"{len(heads) - len(valued)} rows without a value are not shown (--json has them as null).")
        if len(valued) > SHOWN:
            print(f"The {SHOWN} of {len(valued)} rows with the largest |value| (all: --json or --out):")
        print(top.to_string(index=False, na_rep="-"))  # '-': undefined (a share of a ~0 gap), or no class
    return 0
