"""Sweeps: trial records, the summary (leaderboard, CSV, plot), and the Hydra callback.

A Hydra multirun (`python -m tinykd -m ...`) runs one job per trial, each in its own
directory `<sweep_dir>/<overrides>` named by the trial's swept values, so a trial's
directory is the same every time the sweep asks for it. Each trial writes `trial.json`
(its overrides, status, metric, seconds, error). With `reuse=true` a finished trial is not
run again: its recorded metric is returned (and Optuna, seeded, then asks for the same
next trials). `summarize(sweep_dir)` rebuilds `summary.csv`, `summary.md` and
`summary.png` from the trial directories alone.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tinykd.atomic import atomic_write, atomic_write_text
from tinykd.errors import TinyKDError

TRIAL = "trial.json"


# ----------------------------------------------------------------------------- trial records


def write_trial(trial_dir: Path, record: dict) -> None:
    trial_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(trial_dir / TRIAL, json.dumps(record, indent=2))


def read_trials(sweep_dir: Path) -> list[dict]:
    trials = []
    for path in sorted(sweep_dir.glob(f"*/{TRIAL}")):
        if ".prev-" in path.parent.name:
            continue
        rec = json.loads(path.read_text())
        rec["dir"] = path.parent.name
        trials.append(rec)
    return trials


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`key=value` strings → {key: value} with values typed as Hydra types them."""
    out = {}
    for o in OverridesParser.create().parse_overrides(overrides):
        out[o.key_or_group] = o.value()
    return out


# ----------------------------------------------------------------------------- validation


def swept_keys(config: DictConfig) -> list[str]:
    """Keys the multirun varies: the sweeper's `params` plus command-line sweeps (a=1,2; choice(...))."""
    keys = list((config.hydra.sweeper.get("params") or {}).keys())
    for o in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
        if o.is_sweep_override():
            keys.append(o.key_or_group)
    return sorted(set(keys))


def check_sweep(config: DictConfig, sweep_dir: Path) -> dict:
    """Refuse a sweep that cannot work, before any trial runs; returns the sweep's identity."""
    keys = swept_keys(config)
    if not keys:
        raise TinyKDError("Empty sweep: no parameter is swept.",
                          "choose a search space (hparams_search=<name>) or sweep a key on the command line (a=1,2).")
    n_trials = config.hydra.sweeper.get("n_trials")
    if n_trials is not None and n_trials <= 0:
        raise TinyKDError(f"Empty sweep: hydra.sweeper.n_trials={n_trials}.", "set hydra.sweeper.n_trials >= 1.")
    groups = set(config.hydra.runtime.choices.keys()) if "runtime" in config.hydra else set()
    for key in keys:
        plain = key.lstrip("+~")
        if plain in groups or plain.split("/")[0] in groups:
            continue
        if OmegaConf.select(config, plain, default="__missing__") == "__missing__":
            raise TinyKDError(f"The search space names config key '{plain}', which does not exist.",
                              "fix the key in conf/hparams_search/ or on the command line (see conf/ for the keys).")
    identity = {
        "task_overrides": sorted(config.hydra.overrides.task),
        "sweeper_params": OmegaConf.to_container(config.hydra.sweeper.params)
        if config.hydra.sweeper.get("params") else {},
        "sweeper": config.hydra.sweeper.get("_target_"),
        "swept": keys,
    }
    marker = sweep_dir / "sweep.json"
    if marker.is_file():
        old = json.loads(marker.read_text())
        if old != identity:
            diff = sorted(k for k in identity if old.get(k) != identity[k])
            raise TinyKDError(
                f"Sweep directory {sweep_dir} holds trials of a different sweep configuration (differs in: {diff}; "
                f"was {old['task_overrides']}).",
                "refusing to mix them: run the original command to continue it, or give this sweep its own directory "
                "(hydra.sweep.dir=<new dir>).",
            )
    else:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, json.dumps(identity, indent=2))
    return identity


# ----------------------------------------------------------------------------- summary


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def summarize(sweep_dir: str | Path) -> dict:
    """Write summary.csv, summary.md and summary.png for the trials under `sweep_dir`."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise TinyKDError(f"Sweep directory {sweep_dir} does not exist.", "pass dir=<the sweep's directory>.")
    trials = read_trials(sweep_dir)
    if not trials:
        raise TinyKDError(f"No trials ({TRIAL}) under {sweep_dir}.", "pass dir=<a directory a multirun wrote>.")
    marker = sweep_dir / "sweep.json"
    declared = json.loads(marker.read_text())["swept"] if marker.is_file() else []
    params_per_trial = [parse_overrides(t["overrides"]) for t in trials]
    all_keys = sorted({k for p in params_per_trial for k in p})
    varying = [k for k in all_keys if len({json.dumps(p.get(k), default=str) for p in params_per_trial}) > 1]
    params = sorted(set(varying) | {k for k in declared if k in all_keys})
    metric = next((t["metric_name"] for t in trials if t.get("metric_name")), "metric")

    def sort_key(t):
        ok = t["status"] == "finished" and t.get("metric") is not None and math.isfinite(t["metric"])
        return (0 if ok else 1, -(t["metric"] if ok else 0.0), t["num"])

    order = sorted(range(len(trials)), key=lambda i: sort_key(trials[i]))
    rows = []
    for rank, i in enumerate(order, start=1):
        t, p = trials[i], params_per_trial[i]
        rows.append({"rank": rank, "trial": t["num"], "status": t["status"], metric: t.get("metric"),
                     **{k: p.get(k) for k in params}, "seconds": t.get("seconds"), "error": t.get("error") or "",
                     "dir": t["dir"]})

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(sweep_dir / "summary.csv", buf.getvalue())

    finished = [r for r in rows if r["status"] == "finished"]
    lines = [f"# Sweep summary: {sweep_dir}", "",
             f"{len(trials)} trials: {len(finished)} finished, {len(rows) - len(finished)} failed or unfinished. "
             f"Sorted by dev {metric} (higher is better).", ""]
    head = ["rank", "trial", "status", metric, *params, "seconds", "error"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in rows:
        cells = [_fmt(r[h]) if r[h] is not None else "" for h in head]
        cells[-1] = cells[-1].replace("|", "/").replace("\n", " ")[:200]
        lines.append("| " + " | ".join(cells) + " |")
    effects = parameter_effects(finished, params, metric)
    if effects:
        lines += ["", "## What moved the metric", "",
                  f"For each swept parameter: the mean dev {metric} of the finished trials at each of its values (trials), "
                  "and the spread, the best mean less the worst. Parameters are sorted by spread; in a guided search "
                  "the values are not tried equally often, so a spread over few trials is a hint, not a measurement.",
                  "", "| parameter | spread | mean per value (trials) |", "|---|---|---|"]
        for e in effects:
            per = ", ".join(f"{_fmt(v)}: {m:.4f} ({n})" for v, m, n in e["values"])
            lines.append(f"| {e['param']} | {e['spread']:.4f} | {per} |")
    lines += ["", "![metric against each swept parameter](summary.png)", ""]
    atomic_write_text(sweep_dir / "summary.md", "\n".join(lines))
    plot(sweep_dir / "summary.png", rows, params, metric)
    best = finished[0] if finished else None
    return {"sweep_dir": str(sweep_dir), "trials": len(trials), "finished": len(finished), "best": best,
            "params": params, "metric": metric, "effects": effects}


def parameter_effects(finished: list[dict], params: list[str], metric: str) -> list[dict]:
    """Per swept parameter, the mean metric of the finished trials at each value it took, and the spread
    (max mean − min mean), sorted by spread, largest first. A parameter that took one value has no spread."""
    out = []
    for key in params:
        groups: dict[str, list] = {}
        for r in finished:
            if r[metric] is not None and math.isfinite(r[metric]):
                groups.setdefault(json.dumps(r.get(key), default=str), []).append(r)
        if len(groups) < 2:
            continue
        values = sorted(((g[0].get(key), sum(x[metric] for x in g) / len(g), len(g)) for g in groups.values()),
                        key=lambda v: -v[1])
        out.append({"param": key, "spread": values[0][1] - values[-1][1], "values": values})
    return sorted(out, key=lambda e: -e["spread"])


def plot(path: Path, rows: list[dict], params: list[str], metric: str) -> None:
    """One panel per swept parameter: the metric of every finished trial, the best one starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "finished" and r[metric] is not None]
    n = max(1, len(params))
    cols = min(3, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.4 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, key in zip(axes.flat, params or ["trial"]):
        values = [r.get(key, r["trial"]) for r in done]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            xs = values
        else:
            cats = sorted({str(v) for v in values})
            xs = [cats.index(str(v)) for v in values]
            ax.set_xticks(range(len(cats)), cats, rotation=20)
        ax.scatter(xs, [r[metric] for r in done], color="tab:blue", alpha=0.8, label="trial")
        if done:
            ax.scatter([xs[0]], [done[0][metric]], marker="*", s=250, color="tab:red", label="best", zorder=3)
        if numeric and values and min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"dev {metric}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params or ["trial"]):]:
        ax.axis("off")
    axes.flat[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{len(done)} finished trials")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


# ----------------------------------------------------------------------------- Hydra callback


class SweepCallback(Callback):
    """Checks a multirun before it starts and writes its summary when it ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_sweep(config, Path(config.hydra.sweep.dir))
        except TinyKDError as e:
            import sys

            print(f"error: {e.problem}" + (f"\n  fix: {e.fix}" if e.fix else ""), file=sys.stderr)
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not any(sweep_dir.glob(f"*/{TRIAL}")):
            return
        result = summarize(sweep_dir)
        best = result["best"]
        print(f"[tinykd] sweep: {result['finished']}/{result['trials']} trials finished; summary in "
              f"{sweep_dir / 'summary.md'} and {sweep_dir / 'summary.png'}")
        if best:
            print(f"[tinykd] best trial {best['trial']}: dev {result['metric']} = {best[result['metric']]:.4f} "
                  f"({best['dir']})")


def trial_metric(result: dict) -> Optional[float]:
    metric = result.get("main_metric")
    return result.get("dev", {}).get(metric) if metric else None
