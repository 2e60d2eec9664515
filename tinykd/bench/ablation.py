"""The SST-2 ablation (`make bench-ablation`): what pruned initialisation and MiniLM's attention relations buy,
with the MiniLM-L6 teacher and the 4 x 192 student of `make bench-sst2`, every row the same budget (`BUDGET`:
half of bench-sst2's task steps, so that 21 task runs fit in about two hours on 2 CPU cores) and 3 seeds:

  (a) tinybert        general distillation (TinyBERT's layer losses, random init) + today's task distillation
  (b) pruned          the fine-tuned teacher pruned to the student's shape + today's task distillation
                      (each student layer matched to the teacher layer it was cut from)
  (c) minilm_general  general distillation with MiniLM relations (random init) + today's task distillation
  (d) pruned_minilm   pruned init + task distillation whose intermediate phase adds MiniLM relations
  (e) the no-distillation baselines of that shape: random and pruned initialisation, fine-tuned on the gold
      labels for as many steps as the two distillation phases together

Every step is an ordinary `python -m tinykd ... reuse=true` command under `--runs` (the teacher, augmentation
and TinyBERT general distillation are `make bench-sst2`'s own runs, shared; the task runs live under
`<runs>/ablation/`, apart from bench-sst2's, whose budget differs). Then, in this process, every
export is re-scored with plain `transformers` on SST-2 dev (selection) and on the held-out Rotten Tomatoes
sentences of `tinykd.bench.heldout` (never used to select anything), teacher and student are timed side by
side, and `<out>/ablation.{json,md,png}` are written.

    python -m tinykd.bench.ablation [--seeds 42 43 44] [--runs runs/bench_sst2] [--out reports/sst2]
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from tinykd import latency
from tinykd.bench.augment import cpu_name
from tinykd.bench.runner import Runner
from tinykd.bench.sst2 import DATA, EXPERIMENT, STUDENT, arguments, mean_sd, plain_accuracy, read_dev, shared_runs
from tinykd.run import read_results

TARGETS = {"retention": 0.99, "points_over_baseline": 3.0, "speedup_b32": 4.0}
PRUNED = STUDENT  # bench-sst2's student: row (b)
# name -> (label, general-stage overrides or None, task-stage overrides)
RECIPES = {
    "tinybert": ("(a) general distillation + task distillation (TinyBERT)", (), ("student.init=general",)),
    "pruned": ("(b) pruned init + task distillation", None, PRUNED),
    "minilm_general": ("(c) MiniLM relations in general distillation + task distillation", ("distill=minilm",),
                       ("student.init=general",)),
    "pruned_minilm": ("(d) pruned init + task distillation with MiniLM relations", None,
                      (*PRUNED, "distill=minilm", "distill.weights.hidden=1")),
}
# (a general-distilled init baseline is one more row: BASELINES["general"] = "general-distilled init")
BASELINES = {"random": "random init", "pruned": "pruned init"}
# Every row's task budget: half of bench-sst2's (conf/experiment/sst2_bench.yaml: 1,000 + 1,500 distillation
# steps, 2,500 fine-tuning steps), the same for every row; evaluation and checkpoints as there.
BUDGET = ("train.task_intermediate.max_steps=500", "train.task_prediction.max_steps=750",
          "train.task_finetune.max_steps=1250")
HELDOUT_LIMIT = 2000  # balanced held-out sentences scored (of tinykd.bench.heldout's 2,018)


def general_dir(root: Path, name: str) -> Path:
    """The general stage's run directory of a recipe: TinyBERT's is bench-sst2's own."""
    return root / ("general" if name == "tinybert" else f"general-{name}")


def run_all(tinykd: Runner, root: Path, seeds, common: list[str], augment_limit=None) -> tuple[dict, dict]:
    """Every run of the ablation; returns (seconds per step, {row: {seed: task run directory}})."""
    seconds: dict[str, float] = {}
    seconds["teacher"] = tinykd("stage=teacher", *common)
    limit = "null" if augment_limit is None else augment_limit  # as bench-sst2: every training sentence
    seconds["augment"] = tinykd("stage=augment", f"task.train_limit={limit}", *common)
    augmented = f"task.augmented={root / 'augment' / 'data'}"
    runs: dict[str, dict] = {}
    for name, (_, general, task) in RECIPES.items():
        where = [f"runs.general={general_dir(root, name)}"]
        if general is not None:
            seconds[f"general_{name}"] = tinykd("stage=general", *general, *common, *where)
        runs[name] = {}
        for seed in seeds:
            d = root / "ablation" / f"{name}-seed{seed}"
            seconds[f"{name}_seed{seed}"] = tinykd("stage=task", *task, f"seed={seed}", augmented, f"runs.task={d}",
                                                   *BUDGET, *common, *where)
            runs[name][seed] = d
    for init in BASELINES:
        runs[f"baseline_{init}"] = {}
        for seed in seeds:
            d = root / "ablation" / f"finetune-{init}-seed{seed}"
            seconds[f"baseline_{init}_seed{seed}"] = tinykd(
                "stage=task", "stage.phases=[finetune]", f"student.init={init}", f"seed={seed}", f"runs.task={d}",
                *BUDGET, *common)
            runs[f"baseline_{init}"][seed] = d
    return seconds, runs


def main(argv=None) -> dict:
    args = arguments(__doc__).parse_args(argv)  # bench-sst2's command line
    from tinykd.bench.heldout import load_heldout

    held_texts, held_labels = load_heldout(limit=HELDOUT_LIMIT)  # before hours of runs: a missing package stops here
    root, out_dir = Path(args.runs).resolve(), Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tinykd = Runner("bench-ablation", out_dir / "ablation_commands.log", (f"experiment={EXPERIMENT}", "task=sst2"))
    start = time.perf_counter()
    seconds, runs = run_all(tinykd, root, args.seeds, [*shared_runs(root), *args.overrides], args.augment_limit)

    # --- every export re-scored with plain transformers: SST-2 dev, and the held-out sentences
    dev_texts, dev_labels = read_dev(DATA / "glue" / "SST-2" / "dev.tsv")
    teacher_dir = Path(read_results(root / "teacher")["export"])
    teacher = {"dev": plain_accuracy(teacher_dir, dev_texts, dev_labels),
               "heldout": plain_accuracy(teacher_dir, held_texts, held_labels)}
    rows = {}
    for row, by_seed in runs.items():
        scores = []
        for seed, d in by_seed.items():
            res = read_results(d)
            export = Path(res["export"])
            scores.append({"seed": seed, "recorded": res["dev"]["accuracy"], "best_step": res["best_step"],
                           "init_dev": (res.get("init_dev") or {}).get("accuracy"),
                           "dev": plain_accuracy(export, dev_texts, dev_labels),
                           "heldout": plain_accuracy(export, held_texts, held_labels), "dir": str(export)})
            print(f"[bench-ablation] {row:16s} seed {seed}: dev {scores[-1]['dev']:.4f} "
                  f"held-out {scores[-1]['heldout']:.4f}")
        dev_m, dev_sd = mean_sd([s["dev"] for s in scores])
        held_m, held_sd = mean_sd([s["heldout"] for s in scores])
        rows[row] = {"label": RECIPES[row][0] if row in RECIPES else f"(e) no distillation, {BASELINES[row[9:]]}",
                     "dev_mean": dev_m, "dev_sd": dev_sd, "heldout_mean": held_m, "heldout_sd": held_sd,
                     "retention": dev_m / teacher["dev"], "heldout_retention": held_m / teacher["heldout"],
                     "seeds": scores}
    best_baseline = max((r for r in rows if r.startswith("baseline_")), key=lambda r: rows[r]["dev_mean"])
    for name in RECIPES:
        rows[name]["points_over_baseline"] = 100 * (rows[name]["dev_mean"] - rows[best_baseline]["dev_mean"])
        rows[name]["heldout_points_over_baseline"] = 100 * (rows[name]["heldout_mean"]
                                                            - rows[best_baseline]["heldout_mean"])

    # --- teacher and a student of the ablation's shape, timed side by side
    from transformers import AutoModelForSequenceClassification

    pair = {"teacher": AutoModelForSequenceClassification.from_pretrained(teacher_dir),
            "student": AutoModelForSequenceClassification.from_pretrained(rows["pruned"]["seeds"][0]["dir"])}
    timing = {f"b{b}": latency.measure_side_by_side(pair, b, 64) for b in (1, 32)}
    speedup = {b: t["teacher"]["median_ms"] / t["student"]["median_ms"] for b, t in timing.items()}
    best = max(RECIPES, key=lambda r: rows[r]["dev_mean"])  # chosen on dev only
    result = {
        "teacher": teacher, "rows": rows, "best_recipe": best, "best_baseline": best_baseline,
        "latency_seq64": timing, "speedup": speedup, "seeds": args.seeds, "budget": list(BUDGET), "step_seconds": seconds,
        "seconds": time.perf_counter() - start, "heldout_examples": len(held_texts),
        "targets": {
            "retention": {"target": TARGETS["retention"], "value": rows[best]["retention"],
                          "met": rows[best]["retention"] >= TARGETS["retention"]},
            "points_over_baseline": {"target": TARGETS["points_over_baseline"],
                                     "value": rows[best]["points_over_baseline"],
                                     "met": rows[best]["points_over_baseline"] >= TARGETS["points_over_baseline"]},
            "speedup_b32": {"target": TARGETS["speedup_b32"], "value": speedup["b32"],
                            "met": speedup["b32"] >= TARGETS["speedup_b32"]}},
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "commands": tinykd.commands, "command": "make bench-ablation",
    }
    (out_dir / "ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out_dir / "ablation.png")
    (out_dir / "ablation.md").write_text(report(result))
    print(f"[bench-ablation] best recipe on dev: {best} {rows[best]['dev_mean']:.4f} (retention "
          f"{rows[best]['retention']:.4f}); wrote {out_dir / 'ablation.md'}")
    return result


def plot(r: dict, path: Path) -> None:
    """Dev and held-out accuracy of every row (mean ± sd over seeds), the teacher's as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["rows"])
    fig, ax = plt.subplots(figsize=(8.4, 4.6))
    xs = range(len(names))
    for dx, key, color, label in ((-0.18, "dev", "tab:blue", "SST-2 dev"),
                                  (0.18, "heldout", "tab:orange", "held-out Rotten Tomatoes")):
        ax.bar([x + dx for x in xs], [100 * r["rows"][n][f"{key}_mean"] for n in names], width=0.36,
               yerr=[100 * r["rows"][n][f"{key}_sd"] for n in names], color=color, alpha=0.8, capsize=3, label=label)
        ax.axhline(100 * r["teacher"][key], color=color, linestyle="--", linewidth=1,
                   label=f"teacher, {label}")
    ax.axhline(99 * r["teacher"]["dev"], color="black", linestyle=":", linewidth=1, label="99% of the teacher (dev)")
    ax.set_xticks(list(xs), [r["rows"][n]["label"].split(" ", 1)[0] + "\n" + n for n in names], fontsize=8)
    lo = min(100 * min(r["rows"][n]["dev_mean"], r["rows"][n]["heldout_mean"]) for n in names)
    ax.set_ylim(lo - 4, 100 * max(r["teacher"].values()) + 2)
    ax.set_ylabel("accuracy (%), mean ± sd over seeds")
    ax.set_title(f"SST-2 ablation: 4x192 student, {r['speedup']['b32']:.1f}x faster than the teacher at batch 32")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(r: dict) -> str:
    t, rows = r["teacher"], r["rows"]
    m = r["machine"]
    lines = [
        "# SST-2 ablation (`make bench-ablation`)", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), no GPU. "
        f"Whole ablation: {r['seconds'] / 60:.1f} min (runs reused from earlier invocations count as seconds).", "",
        "![ablation](ablation.png)", "",
        f"Budget of every row (`BUDGET` in `tinykd/bench/ablation.py`, half of `make bench-sst2`'s task steps): "
        f"{', '.join(f'`{o}`' for o in r['budget'])}; teacher, augmentation and general distillation are "
        "bench-sst2's.", "",
        f"Teacher (MiniLM-L6, fine-tuned): SST-2 dev {100 * t['dev']:.2f}, held-out {100 * t['heldout']:.2f} "
        f"({r['heldout_examples']} Rotten Tomatoes sentences SST-2 train/dev lack, `tinykd/bench/heldout.py`). "
        f"Every student: BERT 4 x 192, 12 heads, 768 feed-forward, {r['speedup']['b32']:.2f}x faster than the "
        f"teacher at batch 32 (batch 1: {r['speedup']['b1']:.2f}x), timed side by side at 64 tokens. Seeds "
        f"{', '.join(map(str, r['seeds']))}; mean ± sd; every figure re-scored with plain `transformers`.", "",
        "| row | dev acc (%) | retention | held-out acc (%) | held-out retention | points over best baseline (dev / held-out) | per seed (dev) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, x in rows.items():
        over = (f"{x['points_over_baseline']:+.2f} / {x['heldout_points_over_baseline']:+.2f}"
                if "points_over_baseline" in x else "")
        per_seed = ", ".join(f"{100 * s['dev']:.2f}" for s in x["seeds"])
        lines.append(f"| {x['label']} | {100 * x['dev_mean']:.2f} ± {100 * x['dev_sd']:.2f} | {x['retention']:.4f} | "
                     f"{100 * x['heldout_mean']:.2f} ± {100 * x['heldout_sd']:.2f} | {x['heldout_retention']:.4f} | "
                     f"{over} | {per_seed} |")
    tg = r["targets"]
    lines += ["", f"Best recipe on dev: **{r['best_recipe']}**; best baseline on dev: {r['best_baseline']}.", "",
              "| target | wanted | measured (best recipe) | met |", "|---|---|---|---|"]
    for key, what in (("retention", "retention of the teacher's dev accuracy"),
                      ("points_over_baseline", "points over the best no-distillation baseline"),
                      ("speedup_b32", "speed-up at batch 32")):
        x = tg[key]
        short = "" if x["met"] else f", short by {x['target'] - x['value']:.4g}"
        lines.append(f"| {what} | ≥ {x['target']} | {x['value']:.4g} | {'yes' if x['met'] else 'no' + short} |")
    pruned_init = [s["init_dev"] for s in rows["pruned"]["seeds"] if s["init_dev"] is not None]
    if pruned_init:
        lines += ["", f"The pruned student before any training scores {100 * pruned_init[0]:.2f} on dev "
                  "(the task stage's `init_dev`)."]
    lines += ["", "Seconds per step:", "", "| step | seconds |", "|---|---|",
              *[f"| {k} | {v:.0f} |" for k, v in r["step_seconds"].items()], "", "Commands:", "", "```",
              *r["commands"], "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
