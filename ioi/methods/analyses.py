"""The registry of analyses: each turns (model, clean batch, ABC batch) into a per-head table.

Every chart of the dashboard, every `ioi analyze METHOD` and every analysis a job runs at a
checkpoint goes through `run_analysis`, so a new method registered here appears everywhere.

Each analysis declares its options once, typed (`Option`). The built-in analyses are declared in
`BUILTIN`, a table that imports nothing heavy: the CLI lists and validates names and options, and
a job is refused at submit time, without importing torch; the implementing module is imported only
when the analysis runs, and its `@register_analysis(name)` binds the function to the declaration.
A user's own analysis (a module named in $IOI_ANALYSIS_MODULES) declares everything in its decorator.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from ioi.models.load import LoadedModel
    from ioi.task.data import IOIBatch


@dataclass
class AnalysisResult:
    """`heads` has one row per head with columns layer, head, value (plus method-specific ones);
    `summary` holds scalars (e.g. faithfulness); `tables` any further tidy tables."""

    method: str
    heads: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            **self.summary,
            "heads": self.heads.to_dict(orient="records"),
            **{name: t.to_dict(orient="records") for name, t in self.tables.items()},
        }


def heads_frame(value: torch.Tensor, **columns: torch.Tensor) -> pd.DataFrame:
    """The `heads` table from [layer, head] tensors: columns layer, head, value, then `columns`."""
    import pandas as pd

    n_layers, n_heads = value.shape
    frame = {
        "layer": [layer for layer in range(n_layers) for _ in range(n_heads)],
        "head": [h for _ in range(n_layers) for h in range(n_heads)],
        "value": value.detach().cpu().double().flatten().tolist(),
    }
    for name, col in columns.items():
        frame[name] = col.detach().cpu().double().flatten().tolist()
    return pd.DataFrame(frame)


AnalysisFn = Callable[..., "AnalysisResult"]
"""fn(model, clean, abc, *, other=None, **options) -> AnalysisResult"""

TYPES = ("bool", "int", "float", "str", "heads", "layers", "circuit")
"""Option types: heads are "L.H" text ("9.9 10.0") or a list of it; layers a list of layer numbers;
a circuit is a JSON object (`Circuit.to_json`)."""
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


class OptionError(ValueError):
    """An unknown analysis or option, or a value of the wrong type; the message lists the valid ones."""


@dataclass(frozen=True)
class Option:
    """One keyword option of an analysis. A `default` of None means "unset: the analysis decides"."""

    name: str
    type: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    """The smallest value a number option takes (a count of 1, a threshold of 0); None: any."""
    maximum: float | None = None
    """The largest (a share of 1); None: any."""

    def parse(self, value: Any) -> Any:
        """`value` (typed, or text from a command line) as this option's type; OptionError otherwise."""
        if value is None and self.default is None:
            return None
        try:
            out = _convert(self.type, value)
        except (TypeError, ValueError):
            raise OptionError(f"option {self.name} is {self.type} ({self.help}), got {value!r}") from None
        if self.choices and out not in self.choices:
            raise OptionError(f"option {self.name} is one of {', '.join(self.choices)}, got {value!r}")
        if self.minimum is not None and not out >= self.minimum:  # NaN is below every minimum
            raise OptionError(f"option {self.name} is at least {self.minimum:g} ({self.help}), got {value!r}")
        if self.maximum is not None and not out <= self.maximum:
            raise OptionError(f"option {self.name} is at most {self.maximum:g} ({self.help}), got {value!r}")
        return out

    def describe(self) -> str:
        choices = f" ({'|'.join(self.choices)})" if self.choices else ""
        minimum = f" ≥ {self.minimum:g}" if self.minimum is not None else ""
        maximum = f" ≤ {self.maximum:g}" if self.maximum is not None else ""
        return f"{self.name}: {self.type}{choices}{minimum}{maximum} = {self.default!r}: {self.help}"


def _convert(kind: str, value: Any) -> Any:
    """`value` as option type `kind`; TypeError/ValueError when it is not one."""
    text = isinstance(value, str)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if text and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
    elif kind == "int" and not isinstance(value, bool):
        if isinstance(value, int) or (text and value.strip().lstrip("-").isdigit()):
            return int(value)
    elif kind == "float" and not isinstance(value, bool) and isinstance(value, int | float | str):
        return float(value)
    elif kind == "str" and text:
        return value
    elif kind == "heads" and (text or isinstance(value, list | tuple)):
        return value if text else [str(h) for h in value]
    elif kind == "layers":
        if text:
            value = value.replace(",", " ").split()
        items = value if isinstance(value, list | tuple) else [value]
        return [_convert("int", v) for v in items]
    elif kind == "circuit":
        out = json.loads(value) if text else value
        if isinstance(out, dict) or hasattr(out, "classes"):  # Circuit.to_json() or a Circuit
            return out
    raise TypeError(kind)


@dataclass
class Analysis:
    """A registered analysis: its declaration, and `fn` once its module is imported."""

    name: str
    description: str
    module: str
    options: tuple[Option, ...] = ()
    needs_other: bool = False
    fn: AnalysisFn | None = None
    at_ends: bool = False
    """An experiment runs it at its last checkpoint (and a clean run at its starting model) only:
    an expensive analysis whose in-between values no result uses."""

    def check(self, options: dict[str, Any]) -> dict[str, Any]:
        """`options` converted to their declared types; OptionError naming the valid ones otherwise."""
        declared = {o.name: o for o in self.options}
        unknown = [key for key in options if key not in declared]
        if unknown:
            valid = ", ".join(declared) or "none"
            raise OptionError(f"unknown {self.name} options {', '.join(unknown)}; its options: {valid}")
        return {key: declared[key].parse(value) for key, value in options.items()}


def _opt(
    name: str, type: str, default: Any, help: str, *choices: str, minimum: float | None = None,
    maximum: float | None = None,
) -> Option:  # fmt: skip
    return Option(name, type, default, help, choices, minimum, maximum)


def _cutoff(name: str, default: float, help: str) -> Option:
    """A classification threshold: a number from 0 up."""
    return _opt(name, "float", default, help, minimum=0)


POSITIONS = ("end", "io", "s1", "s1+1", "s2")
ABLATIONS = ("mean", "mean-by-template", "zero", "resample")
_ABLATION = _opt(
    "ablation", "str", "mean-by-template", "what replaces an ablated head (METHODS §5)", *ABLATIONS
)
_CIRCUIT = _opt("circuit", "circuit", None, "the circuit to use (default: the model's, METHODS §5)")
_SEED = _opt("seed", "int", 0, "seed of resampling / bootstrap")
_MAX_ROWS = _opt("max_rows", "int", 512, "prompts × variants per forward pass (memory)", minimum=1)
_THRESHOLD = "drop in F through its receivers a head of this class causes at least, × F(M)"

BUILTIN: dict[str, Analysis] = {
    a.name: a
    for a in (
        Analysis("dla", "Direct logit attribution of each head on logit(IO) − logit(S) at END",
                 "ioi.methods.attribution"),
        Analysis("eap", "Attribution patching: gradient estimate of per-head patching clean ← ABC",
                 "ioi.methods.attribution", (
                     _opt("positions", "str", "all", "patch every position or only END", "all", "end"),
                     _opt("compare", "bool", False, "also run real activation patching to compare"),
                     _MAX_ROWS,
                 )),
        Analysis("attention", "Attention END→IO / END→S (and S2→S1, S2→S1+1, S1+1→S1) and OV copy scores",
                 "ioi.methods.attention", (
                     _opt("k", "int", 5, "top-k of the copy score", minimum=1),
                     _opt("copy", "bool", True, "compute OV copy scores (the slow part on GPT-2)"),
                 )),
        Analysis("head-profile", "Per head: DLA and attention END→IO / END→S with 95% bootstrap intervals "
                 "over prompts, and the OV copy score (the dashboard's head page)", "ioi.methods.prompt",
                 (_SEED,)),
        Analysis("patch", "activation patching per head: clean run with one head's output from ABC",
                 "ioi.methods.patching", (
                     _opt("position", "str", None, "patch only this position (default: all)", *POSITIONS),
                     _opt("normalize", "bool", True, "divide by F_clean − F_abc (METHODS §4)"),
                 )),
        Analysis("path-patch", "path patching per sender head, to the logits or to receiver heads' q/k/v",
                 "ioi.methods.path_patching", (
                     _opt("receiver", "str", "logits", "where the path ends", "logits", "q", "k", "v"),
                     _opt("heads", "heads", None, "receiver heads, e.g. '9.9 9.6 10.0'"),
                     _opt("position", "str", None, "receiver position (default: end)", *POSITIONS),
                     _opt("frozen_mlp", "bool", False, "freeze MLPs on the path"),
                     _opt("normalize", "bool", True, "divide by F_clean − F_abc (METHODS §4)"),
                 )),
        Analysis("knockout", "mean-ablation knockout: each head alone, each circuit class, or chosen heads",
                 "ioi.methods.ablation", (
                     _ABLATION,
                     _opt("position", "str", None, "ablate only at this position (default: all)", *POSITIONS),
                     _opt("heads", "heads", None, "also ablate these heads together, e.g. '9.9 9.6'"),
                     _opt("mlps", "layers", (), "also ablate these layers' MLPs together"),
                     _opt("per_head", "bool", True, "ablate each head alone too (else NaN)"),
                     _CIRCUIT,
                     _SEED,
                 ), at_ends=True),
        Analysis("faithfulness", "F(circuit)/F(model) under mean ablation, with its interval; MLP knockouts "
                 "(rows: the circuit's heads, value 1)",
                 "ioi.methods.ablation", (_ABLATION, _CIRCUIT, _SEED)),
        Analysis("circuit-tests", "completeness and minimality of the circuit (METHODS §5, K stated)",
                 "ioi.methods.ablation", (_ABLATION, _CIRCUIT, _SEED), at_ends=True),
        Analysis("classify", "IOI head classes (IOI paper criteria) and the other heads carrying the effect",
                 "ioi.methods.classify", (
                     _opt("freeze_mlp", "bool", False, "freeze MLPs in the path patching"),
                     _cutoff("name_mover", 0.05, "|path effect to the logits| of a name mover, × F(M)"),
                     _cutoff("min_copy_score", 0.25, "OV copy score of a name mover"),
                     _cutoff("backup", 0.05, "DLA rise of a backup when name movers are out, × F(M)"),
                     _cutoff("s_inhibition", 0.02, _THRESHOLD),
                     _cutoff("induction", 0.02, _THRESHOLD),
                     _cutoff("previous_token", 0.02, _THRESHOLD),
                     _cutoff("previous_token_min_attention", 0.2, "S1+1→S1 attention, previous-token"),
                     _cutoff("other", 0.10, "|path effect| or |DLA| of another effect head, × F(M)"),
                     _cutoff("min_logit_diff", 0.5, "F(M) below which the model does not do the task"),
                 )),
        Analysis("edges", "edge-level circuit: exact edge patching (or EAP / EAP-IG), the smallest edge set "
                 "reaching a faithfulness, and faithfulness against the number of edges",
                 "ioi.methods.edge_circuit", (
                     _opt("method", "str", "exact", "how edges are scored", "exact", "eap", "eap-ig"),
                     _opt("steps", "int", 5, "EAP-IG integration steps", minimum=1),
                     _opt("faithfulness", "float", 0.8, "faithfulness the edge circuit must reach",
                          minimum=0.01, maximum=1.0),
                     _opt("points", "int", 24, "points of the faithfulness-vs-edges curve", minimum=1),
                     _opt("compare", "bool", False, "also run exact edge patching: rank correlation"),
                     _SEED,
                 )),
        Analysis("cmap", "Cross-model activation patching: each head and each class (jointly), both ways",
                 "ioi.methods.cmap", (
                     _opt("mode", "str", "output", "patch head outputs or patterns", "output", "pattern"),
                     _opt("direction", "str", "both", "which model receives (b<-a: the base, --other)",
                          "a<-b", "b<-a", "both"),
                     _opt("positions", "str", None, "default: end for output, all for pattern", "end", "all"),
                     _opt("n_boot", "int", 1000, "bootstrap resamples of the paired intervals", minimum=1),
                     _SEED,
                     _CIRCUIT,
                     _MAX_ROWS,
                 ), needs_other=True),
    )
}  # fmt: skip
ANALYSES: dict[str, Analysis] = dict(BUILTIN)
"""Every analysis declared so far: the built-in ones, then those user modules register."""


def register_analysis(
    name: str, description: str | None = None, *, options: tuple[Option, ...] = (), needs_other: bool = False
):
    """Decorator binding `fn(model, clean, abc, *, other=None, **options)` to analysis `name`: a
    built-in one is declared in `BUILTIN` (give only its name); a new one declares itself here."""

    def add(fn: AnalysisFn) -> AnalysisFn:
        if name in BUILTIN:
            if description is not None or options:
                raise TypeError(f"analysis {name!r} is declared in BUILTIN; register it by name only")
            ANALYSES[name].fn = fn
        else:
            ANALYSES[name] = Analysis(name, description or name, fn.__module__, options, needs_other, fn)
        return fn

    return add


def analysis(name: str) -> Analysis:
    """The declaration of `name` (not importing its module); OptionError listing the known ones."""
    if name not in ANALYSES:
        raise OptionError(f"unknown analysis {name!r}; known: {', '.join(sorted(ANALYSES))}")
    return ANALYSES[name]


def check_analyses(names: Sequence[str], known: dict[str, Analysis] = ANALYSES) -> None:
    """OptionError, listing the known ones, if any of `names` is not a declared analysis."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise OptionError(
            f"unknown analysis {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
        )


def implementation(name: str) -> AnalysisFn:
    """The function of analysis `name`, importing its module on first use."""
    entry = analysis(name)
    if entry.fn is None:
        importlib.import_module(entry.module)
    if entry.fn is None:
        raise TypeError(f"module {entry.module} does not register analysis {name!r}")
    return entry.fn


def load_builtin_analyses() -> dict[str, Analysis]:
    """Import every built-in analysis module and return the registry."""
    for name in BUILTIN:
        implementation(name)
    return ANALYSES


def run_analysis(
    name: str,
    model: LoadedModel,
    clean: IOIBatch,
    abc: IOIBatch,
    *,
    other: LoadedModel | None = None,
    **options: Any,
) -> AnalysisResult:
    """Run analysis `name` with `options` checked against its declaration (OptionError, before
    anything runs, for an unknown name or option or a value of the wrong type)."""
    entry = analysis(name)
    checked = entry.check(options)
    if entry.needs_other and other is None:
        raise OptionError(f"analysis {name!r} compares two models: give the second one (--other)")
    return implementation(name)(model, clean, abc, other=other, **checked)
