"""What `python -m tinykd` says before Hydra composes anything: the usage (`--help`, or a bare command)
and the check of the command line's overrides against `conf/` and the schema (`tinykd.config.Config`).

An unknown group option (`student=tinybrt`), a key the schema lacks (`train.genral.max_steps=3`), a `+` on
a key that exists or on one that does not (`+lr=5e-5`, which Hydra would add and nothing would read) and a
value of the wrong type each become one `TinyKDError` with the fix and, where a close name exists, a
"did you mean"; the dispatcher prints it and exits with status 2, as for every other refusal.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, Sequence

from tinykd.config import REPO_ROOT, STAGES, Config, dataclass_of
from tinykd.errors import TinyKDError

CONF = REPO_ROOT / "conf"

# What each config group chooses (conf/<group>/*.yaml holds its options), in the order `--help` lists them.
GROUPS = {
    "stage": "what to run (listed above)",
    "task": "the data, its columns and its metric (task=custom: your own files)",
    "teacher": "the fine-tuned model to distil from",
    "student": "the shape of the student and how it starts (student.init=pruned|general|random|...)",
    "distill": "the distillation losses and their weights",
    "train": "the budgets (steps, batch size, learning rate) of every training phase",
    "engine": "plain PyTorch or DeepSpeed ZeRO; device and precision",
    "logger": "metrics.jsonl, plus Weights & Biases when wandb",
    "experiment": "a preset that sets several of the above (benchmarks, sweeps)",
    "hparams_search": "a sweep's search space (with -m)",
    "debug": "smoke: tiny models and a few steps, to try a command in seconds",
}

# Hydra's own flags that take a value (`--cfg job`), and those whose value is optional (`--info defaults`).
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                "-cd", "--experimental-rerun", "--shell-completion", "-sc"}
_OPTIONAL_VALUE_FLAGS = {"--info", "-i"}
_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def group_options(group: str, extra: Sequence[Path] = ()) -> list[str]:
    """The options of a config group: conf/<group>/*.yaml, and the same group in `extra` config directories
    (`--config-dir`, `hydra.searchpath`)."""
    return sorted({p.stem for d in (CONF, *extra) for p in (Path(d) / group).glob("*.yaml")})


def config_dirs(flags: Sequence[str], overrides: Sequence[str]) -> list[Path]:
    """The config directories a command line adds to conf/: `--config-dir DIR` and the file:// entries of
    `hydra.searchpath=[...]`."""
    import re

    dirs = [Path(flags[i + 1]) for i, f in enumerate(flags[:-1]) if f in ("--config-dir", "-cd")]
    dirs += [Path(f.split("=", 1)[1]) for f in flags if f.startswith(("--config-dir=", "-cd="))]
    for o in overrides:
        if o.lstrip("+").startswith("hydra.searchpath="):
            dirs += [Path(p) for p in re.findall(r"file://([^,\]\s'\"]+)", o)]
    return dirs


def usage() -> str:
    """The text of `python -m tinykd --help`."""
    width = max(len(n) for n in STAGES)
    gwidth = max(len(g) for g in GROUPS)
    lines = [
        "usage: python -m tinykd stage=<stage> [group=<option> ...] [key=value ...]",
        "       python -m tinykd -m stage=<stage> key=a,b ...    (a sweep: one run per combination)",
        "",
        "tinykd distils a fine-tuned Transformer (the teacher) into a small, fast student (TinyBERT's two stages,",
        "DistilBERT, MiniLM relations, pruning), evaluates it and exports it as a plain Hugging Face model.",
        "",
        "stages:",
        *[f"  {name:<{width}}  {spec.summary}" for name, spec in STAGES.items()],
        "",
        "config groups (group=<option>; the files are conf/<group>/<option>.yaml):",
    ]
    for group, what in GROUPS.items():
        lines.append(f"  {group:<{gwidth}}  {what}")
        lines.append(f"  {'':<{gwidth}}    {', '.join(group_options(group))}")
    lines += [
        "",
        "see and override values:",
        "  python -m tinykd stage=task task=sst2 --cfg job      print the composed config and exit",
        "  python -m tinykd stage=task train.task_prediction.lr=5e-5 distill.temperature=2",
        "  every key, its default and its valid values: tinykd/config.py (the schema); presets: conf/",
        "",
        "start here:",
        "  python -m tinykd stage=pipeline task=sst2 debug=smoke    a whole run at toy scale (tiny models)",
        "  make run                                                 the main job (README)",
        "",
        "Hydra's own help: python -m tinykd --hydra-help",
    ]
    return "\n".join(lines)


def split_command_line(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(Hydra's flags with their values, the overrides)."""
    flags: list[str] = []
    overrides: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and "=" not in a.split(" ")[0]:
            flags.append(a)
            takes = a in _VALUE_FLAGS or (a in _OPTIONAL_VALUE_FLAGS and i + 1 < len(args)
                                          and args[i + 1] in _INFO_VALUES)
            if takes and i + 1 < len(args):
                flags.append(args[i + 1])
                i += 1
        elif a.startswith("-"):  # --flag=value
            flags.append(a)
        else:
            overrides.append(a)
        i += 1
    return flags, overrides


def _fields(tp: type) -> dict[str, Any]:
    hints = typing.get_type_hints(tp)
    return {f.name: hints[f.name] for f in dataclasses.fields(tp)}


def _all_keys(tp: type = Config, prefix: str = "") -> list[str]:
    out = []
    for name, hint in _fields(tp).items():
        sub = dataclass_of(hint)
        out += _all_keys(sub, f"{prefix}{name}.") if sub is not None else [prefix + name]
    return out


def _free_form(hint: Any) -> bool:
    """A field whose value may hold keys the schema does not list (a dict, Any)."""
    inner = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) is typing.Union else [hint]
    return any(h is Any or h is dict or typing.get_origin(h) is dict for h in inner)


def _lookup(key: str) -> tuple[Any, str | None, list[str]]:
    """(the field's type hint, None, []) when `key` is in the schema, else (None, the part that is not,
    the names that are there)."""
    tp: Any = Config
    parts = key.split(".")
    hint: Any = None
    for i, part in enumerate(parts):
        if tp is None:  # a value, not a node of keys
            if _free_form(hint):
                return Any, None, []
            return None, ".".join(parts[:i]), []
        fields = _fields(tp)
        if part not in fields:
            return None, ".".join(parts[: i + 1]), list(fields)
        hint = fields[part]
        tp = dataclass_of(hint)
    return hint, None, []


def _suggest(word: str, names: Sequence[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(word, list(names), n=n, cutoff=0.6)


def _did_you_mean(names: Sequence[str]) -> str:
    return f"did you mean {' or '.join(names)}? " if names else ""


def _unknown_key(key: str, missing: str, siblings: list[str], value: str = "") -> TinyKDError:
    leaf = missing.split(".")[-1]
    parent = missing.rpartition(".")[0]
    near = [f"{parent}.{s}" if parent else s for s in _suggest(leaf, siblings)]
    if not near:  # `lr` for `train.teacher.lr`: keys anywhere whose last part is close
        last = key.split(".")[-1]
        near = [k for k in _all_keys() if _suggest(last, [k.split(".")[-1]], 1)][:4]
    if not parent:  # a misspelt group: `studnt=tiny` for `student=tiny`
        groups = _suggest(leaf, list(GROUPS))
        near = [f"{g}={value}" if value else g for g in groups] + [k for k in near if k not in groups]
    near = list(dict.fromkeys(near))[:4]
    where = (f"{parent} holds {', '.join(siblings)}" if parent and siblings
             else "the groups and stages: python -m tinykd --help")
    return TinyKDError(f"{key} is not a tinykd key ({missing} does not exist).",
                       f"{_did_you_mean(near)}{where}; every key and value: --cfg job.")


def _type_error(key: str, value: Any, hint: Any) -> str | None:
    """Why `value` cannot go into the field `key` of type `hint`, by OmegaConf's own conversion rules (what
    Hydra applies: `resume=yes`, `seed='42'` and `lr=1` pass), or None when it can (or cannot be told here)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    if value is None or (isinstance(value, str) and "${" in value):  # null, or an interpolation
        return None
    inner = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) is typing.Union else [hint]
    if len(inner) != 1 or inner[0] not in (bool, int, float):
        return None
    probe = OmegaConf.structured(_Probe[inner[0]])
    try:
        probe.value = value
    except ValidationError:
        return {bool: "true or false", int: "a whole number", float: "a number"}[inner[0]]
    return None


@dataclasses.dataclass
class _BoolProbe:
    value: bool = False


@dataclasses.dataclass
class _IntProbe:
    value: int = 0


@dataclasses.dataclass
class _FloatProbe:
    value: float = 0.0


_Probe = {bool: _BoolProbe, int: _IntProbe, float: _FloatProbe}


def check_overrides(overrides: Sequence[str], multirun: bool = False, extra_dirs: Sequence[Path] = ()) -> None:
    """Refuse, before Hydra composes, an override that names nothing tinykd has (see the module doc).
    `extra_dirs`: config directories beside conf/ (`config_dirs`), whose group options count too."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for text in overrides:
        try:
            o = parser.parse_override(text)
        except OverrideParseException as e:
            raise TinyKDError(f"Cannot read the override {text!r}: {str(e).splitlines()[0]}",
                              "write it as key=value (quote values with spaces or commas: key='a, b').") from None
        key = o.key_or_group
        if key == "hydra" or key.startswith("hydra.") or key.startswith("hydra/") or o.package or o.is_delete():
            continue
        is_group = any((Path(d) / key).is_dir() for d in (CONF, *extra_dirs))
        added = o.is_add() or o.is_force_add()
        if is_group:
            if added:
                raise TinyKDError(f"{text}: the group {key} is already in tinykd's defaults, so '+' cannot add it.",
                                  f"drop the '+': {key}={o.get_value_element_as_str()}.")
            _check_option(key, o, extra_dirs)
            continue
        hint, missing, siblings = _lookup(key)
        if missing is not None:
            if added:  # Hydra would add the key, and nothing would ever read it
                err = _unknown_key(key, missing, siblings, _shown_value(o))
                raise TinyKDError(f"{text}: '+' adds a new key, {key}, and nothing in tinykd reads it.", err.fix)
            if not siblings:
                raise TinyKDError(f"{key} is not a tinykd key: {missing} is a value, not a group of keys.",
                                  f"set {missing}=<value>; every key and value: --cfg job.")
            raise _unknown_key(key, missing, siblings, _shown_value(o))
        if o.is_add():  # `++key=` sets a key whether or not it exists: on one that does, an ordinary override
            raise TinyKDError(f"{text}: {key} is already a tinykd key; '+' is for adding keys that do not exist.",
                              f"drop the '+': {text.lstrip('+')}.")
        if not o.is_sweep_override():
            wrong = _type_error(key, o.value(), hint)
            if wrong:
                raise TinyKDError(f"{key}={o.get_value_element_as_str()}: {key} takes {wrong}.",
                                  f"give {key} {wrong} (its default: --cfg job shows it).")


def _shown_value(o) -> str:
    """An override's value as typed (a sweep's, `a,b`, has no single value: empty)."""
    return "" if o.is_sweep_override() else o.get_value_element_as_str()


def _check_option(group: str, o, extra_dirs: Sequence[Path] = ()) -> None:
    options = group_options(group, extra_dirs)
    if o.is_sweep_override():
        try:
            values = list(o.sweep_string_iterator())
        except Exception:  # a range or interval: not a list of group options, Hydra says what is wrong
            return
    else:
        values = [o.get_value_element_as_str()]
    for v in values:
        if v in ("null", "None") or v in options:
            continue
        near = _suggest(v, options)
        raise TinyKDError(f"{group}={v}: there is no {group} option {v!r} (no conf/{group}/{v}.yaml).",
                          f"{_did_you_mean([f'{group}={n}' for n in near])}The {group} options: {', '.join(options)}.")
