"""SST-2 end to end (`make bench-sst2`): teacher, augmentation, the student (the fine-tuned teacher
pruned to the student's shape, then task distillation with each student layer matched to the layer it
was cut from: `STUDENT`, the best recipe of `make bench-ablation`) with 3 seeds, the no-distillation
baselines of the same shape (from the pruned and from random weights), and the table that judges them.

Every step is an ordinary `python -m tinykd ... experiment=sst2_bench` command, run with
`reuse=true` (a finished run with the same config is skipped, an interrupted one resumes), so an
interrupted benchmark continues where it stopped. Then, in this process:
  - every exported model (teacher, students, baselines) is loaded with plain `transformers`
    (`AutoTokenizer`, `AutoModelForSequenceClassification`) and re-scored on all of SST-2 dev
    with a loop that uses nothing from tinykd; the figure must match the run's own to 0.1 point;
  - the teacher and the best student are timed side by side (`tinykd.latency`: sequence length
    64, batch 1 and 32, median of 30 forwards after 5 warm-up);
  - `reports/sst2/results.json`, `reports/sst2/REPORT.md` and `reports/sst2/accuracy_latency.png`
    are written.

    python -m tinykd.bench.sst2 [--seeds 42 43 44] [--runs runs/bench_sst2] [--out reports/sst2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from tinykd import latency
from tinykd.bench.augment import cpu_name
from tinykd.bench.runner import Runner
from tinykd.config import REPO_ROOT
from tinykd.run import CONFIG, METRICS, read_results

EXPERIMENT = "sst2_bench"
DATA = Path(os.environ.get("TINYKD_DATA", REPO_ROOT.parent / "shared" / "data"))
TARGETS = {"retention": 0.99, "points_over_baseline": 3.0, "speedup_b32": 4.0}
# The student's recipe: the best row of `make bench-ablation` (reports/sst2/ablation.md), chosen on dev.
STUDENT = ("student.init=pruned", "distill.layer_map=kept")
BASELINES = {"pruned": "the teacher pruned to the student's shape", "random": "random weights"}


def read_dev(path: Path) -> tuple[list[str], list[int]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


@torch.inference_mode()
def plain_accuracy(model_dir: Path, sentences: list[str], labels: list[int], batch_size: int = 64) -> float:
    """Dev accuracy with plain transformers only: what a user who downloads the directory gets."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    correct = 0
    for i in range(0, len(sentences), batch_size):
        enc = tok(sentences[i : i + batch_size], padding=True, truncation=True, max_length=64, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1)
        correct += int((pred == torch.tensor(labels[i : i + batch_size])).sum())
    return correct / len(sentences)


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def arguments(doc: str) -> argparse.ArgumentParser:
    """The command line of the SST-2 benchmarks (this one and `tinykd.bench.ablation`): seeds, runs, out."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--runs", default=str(Path(os.environ.get("TINYKD_RUNS", REPO_ROOT / "runs")) / "bench_sst2"))
    ap.add_argument("--out", default=str(REPO_ROOT / "reports" / "sst2"))
    ap.add_argument("--augment-limit", type=int, default=None,
                    help="augment only the first N training sentences (default: all 67,349)")
    ap.add_argument("overrides", nargs="*", help="extra tinykd overrides for every step (e.g. debug=smoke)")
    return ap


def main(argv=None) -> dict:
    args = arguments(__doc__).parse_args(argv)
    root, out_dir = Path(args.runs).resolve(), Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tinykd = Runner("bench-sst2", out_dir / "commands.log", (f"experiment={EXPERIMENT}", "task=sst2"))
    start = time.perf_counter()
    common = [*shared_runs(root), *args.overrides]

    seconds, runs = distil(tinykd, root, args.seeds, common, args.augment_limit)

    # --- 4: every export re-scored on SST-2 dev with plain transformers
    sentences, labels = read_dev(DATA / "glue" / "SST-2" / "dev.tsv")
    teacher_run = root / "teacher"
    teacher_res = read_results(teacher_run)
    teacher_dir = Path(teacher_res["export"])
    scored = {"teacher": {"recorded": teacher_res["dev"]["accuracy"], "plain": plain_accuracy(teacher_dir, sentences, labels)}}
    for group, by_seed in runs.items():
        for seed, d in by_seed.items():
            res = read_results(d)
            scored[f"{group}_seed{seed}"] = {"recorded": res["dev"]["accuracy"], "best_step": res["best_step"],
                                             "plain": plain_accuracy(Path(res["export"]), sentences, labels),
                                             "init_dev": (res.get("init_dev") or {}).get("accuracy"),
                                             "dir": res["export"]}
    for name, s in scored.items():
        s["agrees"] = abs(s["plain"] - s["recorded"]) <= 0.001
        print(f"[bench-sst2] {name:28s} dev {s['recorded']:.4f} (plain transformers {s['plain']:.4f})")

    def accs(group):
        return [scored[f"{group}_seed{s}"]["plain"] for s in args.seeds]

    best_seed = max(args.seeds, key=lambda s: scored[f"student_seed{s}"]["plain"])
    student_dir = Path(scored[f"student_seed{best_seed}"]["dir"])

    # --- 5: latency of the teacher and the best student, side by side
    from transformers import AutoModelForSequenceClassification

    models_ = {"teacher": AutoModelForSequenceClassification.from_pretrained(teacher_dir),
               "student": AutoModelForSequenceClassification.from_pretrained(student_dir)}
    timing = {name: {f"b{b}": latency.measure(m, b, 64) for b in (1, 32)} for name, m in models_.items()}
    params = {name: latency.parameters(m) for name, m in models_.items()}

    teacher_acc = scored["teacher"]["plain"]
    s_mean, s_sd = mean_sd(accs("student"))
    baseline = {init: mean_sd(accs(f"baseline_{init}")) for init in BASELINES}
    baseline_kind = max(BASELINES, key=lambda init: baseline[init][0])
    baseline_mean, baseline_sd = baseline[baseline_kind]
    speed = {f"speedup_{b}": timing["teacher"][b]["median_ms"] / timing["student"][b]["median_ms"] for b in ("b1", "b32")}
    cfg = OmegaConf.load(runs["student"][best_seed] / CONFIG)
    augment_res = read_results(root / "augment")
    result = {
        "teacher_dev_acc": teacher_acc,
        "student_dev_acc_mean": s_mean, "student_dev_acc_sd": s_sd, "student_dev_acc_seeds": accs("student"),
        "student_init_dev": [scored[f"student_seed{s}"]["init_dev"] for s in args.seeds],
        "baseline_dev_acc_mean": baseline_mean, "baseline_dev_acc_sd": baseline_sd, "baseline_init": baseline_kind,
        "baselines": {init: {"dev_acc_mean": baseline[init][0], "dev_acc_sd": baseline[init][1],
                             "dev_acc_seeds": accs(f"baseline_{init}")} for init in BASELINES},
        "student_recipe": list(STUDENT),
        "retention": s_mean / teacher_acc,
        "points_over_baseline": 100 * (s_mean - baseline_mean),
        **speed,
        "teacher_params": params["teacher"], "student_params": params["student"],
        "student_dir": os.path.relpath(student_dir, REPO_ROOT), "student_seed": best_seed,
        "teacher_dir": os.path.relpath(teacher_dir, REPO_ROOT),
        "seconds": time.perf_counter() - start, "step_seconds": seconds,
        "latency_seq64": timing,
        "scored": scored,
        "seeds": args.seeds,
        "student_shape": {k: cfg.student[k] for k in ("num_layers", "hidden_size", "num_heads", "intermediate_size")},
        "budget": {"teacher_steps": cfg.train.teacher.max_steps, "prune_examples": cfg.student.prune_examples,
                   "augmented_sentences": augment_res.get("examples"),
                   "augment_n": cfg.augment.n, "augment_source": cfg.augment.source,
                   "intermediate_steps": cfg.train.task_intermediate.max_steps,
                   "prediction_steps": cfg.train.task_prediction.max_steps,
                   "finetune_steps": cfg.train.task_finetune.max_steps, "batch_size": cfg.train.task_prediction.batch_size},
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "command": "make bench-sst2",
    }
    result["augment_rows"] = augment_res.get("rows")
    result["targets"] = {
        "retention": {"target": TARGETS["retention"], "value": result["retention"],
                      "met": result["retention"] >= TARGETS["retention"]},
        "points_over_baseline": {"target": TARGETS["points_over_baseline"], "value": result["points_over_baseline"],
                                 "met": result["points_over_baseline"] >= TARGETS["points_over_baseline"]},
        "speedup_b32": {"target": TARGETS["speedup_b32"], "value": speed["speedup_b32"],
                        "met": speed["speedup_b32"] >= TARGETS["speedup_b32"]},
        "plain_transformers_reproduces": all(s["agrees"] for s in scored.values()),
    }
    result["full_scale"] = full_scale(result, root)
    plot(result, out_dir / "accuracy_latency.png")
    (out_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "REPORT.md").write_text(report(result))
    print(f"[bench-sst2] teacher {teacher_acc:.4f}; student {s_mean:.4f} ± {s_sd:.4f} (retention {result['retention']:.3f}); "
          f"baseline ({baseline_kind} init) {baseline_mean:.4f} ± {baseline_sd:.4f}; "
          f"speedup b1 {speed['speedup_b1']:.2f}x b32 {speed['speedup_b32']:.2f}x; {result['seconds'] / 60:.1f} min")
    print(f"[bench-sst2] wrote {out_dir / 'results.json'}, {out_dir / 'REPORT.md'}, {out_dir / 'accuracy_latency.png'}")
    return result


def shared_runs(root: Path) -> list[str]:
    """The run directories every seed shares, under the benchmark's `root`."""
    return [f"runs.teacher={root}/teacher", f"runs.general={root}/general", f"runs.augment={root}/augment"]


def distil(tinykd: Runner, root: Path, seeds, common: list[str], augment_limit=None,
           baselines: bool = True) -> tuple[dict[str, float], dict[str, dict]]:
    """Steps 1-3 of the benchmark under `root`: the teacher and augmentation (each once), the student
    (`STUDENT`) for each seed, and (with `baselines`) the no-distillation baselines of the same shape.
    Returns the seconds of each step and the run directories ({group: {seed: dir}})."""
    seconds: dict[str, float] = {}
    # --- 1-2: teacher, augmentation (each once)
    seconds["teacher"] = tinykd("stage=teacher", *common)
    limit = "null" if augment_limit is None else augment_limit
    seconds["augment"] = tinykd("stage=augment", f"task.train_limit={limit}", *common)
    augmented = root / "augment" / "data"

    # --- 3: the student (3 seeds) and the no-distillation baselines (same shape, 3 seeds each)
    runs: dict[str, dict] = {"student": {}}
    for seed in seeds:
        d = root / "task" / f"pruned-seed{seed}"  # (the general-distilled recipe's were distilled-seed*)
        seconds[f"student_seed{seed}"] = tinykd("stage=task", *STUDENT, f"seed={seed}",
                                                f"task.augmented={augmented}", f"runs.task={d}", *common)
        runs["student"][seed] = d
    for init in BASELINES if baselines else ():
        runs[f"baseline_{init}"] = {}
        for seed in seeds:
            d = root / "task" / f"finetune-{init}-seed{seed}"
            seconds[f"baseline_{init}_seed{seed}"] = tinykd(
                "stage=task", "stage.phases=[finetune]", f"student.init={init}", f"seed={seed}", f"runs.task={d}",
                *common)
            runs[f"baseline_{init}"][seed] = d
    return seconds, runs


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_ms = r["latency_seq64"]["teacher"]["b32"]["median_ms"]
    s_ms = r["latency_seq64"]["student"]["b32"]["median_ms"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter([t_ms], [100 * r["teacher_dev_acc"]], s=80, marker="*", color="black", label="teacher (MiniLM-L6)")
    bl = r["baselines"]
    points = [("student (pruned + distilled)", r["student_dev_acc_mean"], r["student_dev_acc_sd"], "tab:blue", 0.0),
              ("baseline, pruned init", bl["pruned"]["dev_acc_mean"], bl["pruned"]["dev_acc_sd"], "tab:orange", -0.04),
              ("baseline, random init", bl["random"]["dev_acc_mean"], bl["random"]["dev_acc_sd"], "tab:gray", 0.04)]
    for label, m, sd, color, dx in points:  # the baselines share the student's shape: nudged apart to be seen
        ax.errorbar([s_ms * (1 + dx)], [100 * m], yerr=[100 * sd], fmt="o", color=color, capsize=4, label=f"{label}")
    ax.set_xscale("log")
    ax.set_xlabel("CPU latency, batch 32 x 64 tokens (ms, log scale)")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title(f"SST-2: {r['speedup_b32']:.1f}x faster, {100 * r['retention']:.1f}% of the teacher's accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(r: dict) -> str:
    b, sh, t = r["budget"], r["student_shape"], r["targets"]
    lat = r["latency_seq64"]
    seeds = ", ".join(str(s) for s in r["seeds"])

    def row(name, what, acc, sd, params, b1, b32):
        sd_s = f" ± {100 * sd:.2f}" if sd is not None else ""
        return f"| {name} | {what} | {100 * acc:.2f}{sd_s} | {params / 1e6:.2f}M | {b1:.2f} | {b32:.1f} |"

    def fmt_seeds(xs):
        return ", ".join(f"{100 * x:.2f}" for x in xs)

    s1, s32 = lat["student"]["b1"]["median_ms"], lat["student"]["b32"]["median_ms"]
    lines = [
        "# SST-2 end to end (`make bench-sst2`)", "",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, torch {r['machine']['torch']} "
        f"({r['machine']['torch_threads']} threads), no GPU. Whole benchmark: {r['seconds'] / 60:.1f} min.", "",
        "![accuracy vs latency](accuracy_latency.png)", "",
        "| model | what | SST-2 dev acc (%) | params | b1 ms | b32 ms |", "|---|---|---|---|---|---|",
        row("teacher", f"MiniLM-L6 (6x384) fine-tuned {b['teacher_steps']} steps x {b['batch_size']}", r["teacher_dev_acc"], None,
            r["teacher_params"], lat["teacher"]["b1"]["median_ms"], lat["teacher"]["b32"]["median_ms"]),
        row("student", f"BERT {sh['num_layers']}x{sh['hidden_size']} (heads {sh['num_heads']}, FFN "
            f"{sh['intermediate_size']}): the teacher pruned to this shape, then task distillation (layers matched "
            f"to the layers they were cut from); seeds {seeds}: {fmt_seeds(r['student_dev_acc_seeds'])}",
            r["student_dev_acc_mean"], r["student_dev_acc_sd"], r["student_params"], s1, s32),
        *[row(f"baseline ({init} init)", f"same shape, {what}, fine-tuned on the labels {b['finetune_steps']} "
              f"steps: {fmt_seeds(r['baselines'][init]['dev_acc_seeds'])}", r["baselines"][init]["dev_acc_mean"],
              r["baselines"][init]["dev_acc_sd"], r["student_params"], s1, s32) for init, what in BASELINES.items()],
        "",
        "Accuracies are re-scored here on all 872 dev sentences with plain `transformers` (`AutoTokenizer`, "
        "`AutoModelForSequenceClassification`), no tinykd code; each matches its run's own figure to 0.1 point: "
        f"**{'yes' if t['plain_transformers_reproduces'] else 'NO'}**. Latency: sequence length 64, median of 30 forwards "
        "after 5 warm-up, teacher and student timed side by side in one process; the baselines have the student's shape.",
        "", "## Targets", "",
        "| target | wanted | measured | met |", "|---|---|---|---|",
        f"| retention (student / teacher) | ≥ {t['retention']['target']} | {t['retention']['value']:.4f} | "
        f"{'yes' if t['retention']['met'] else 'no, short by ' + format(t['retention']['target'] - t['retention']['value'], '.4f')} |",
        f"| points over the best no-distillation baseline ({r['baseline_init']} init) | ≥ "
        f"{t['points_over_baseline']['target']} | {t['points_over_baseline']['value']:+.2f} | "
        f"{'yes' if t['points_over_baseline']['met'] else 'no, short by ' + format(t['points_over_baseline']['target'] - t['points_over_baseline']['value'], '.2f')} |",
        f"| speed-up at batch 32 | ≥ {t['speedup_b32']['target']}x | {t['speedup_b32']['value']:.2f}x "
        f"(batch 1: {r['speedup_b1']:.2f}x) | {'yes' if t['speedup_b32']['met'] else 'no'} |",
        *missed(r),
        "", "## Budget of this run", "",
        f"- teacher: {b['teacher_steps']} steps x 32 sentences;",
        f"- pruning: the fine-tuned teacher cut to the student's shape, importance measured on {b['prune_examples']} "
        "training sentences (README, \"Pruned initialisation\"); no general distillation;",
        f"- augmentation: {b['augmented_sentences']:,} training sentences, {b['augment_n']} new row{'' if b['augment_n'] == 1 else 's'} each "
        f"({b['augment_source']} word-vector replacement), {r['augment_rows']} rows in all;",
        f"- task distillation: {b['intermediate_steps']} intermediate + {b['prediction_steps']} prediction steps x "
        f"{b['batch_size']} on the augmented rows, teacher logits cached once (fp16) for the seeds;",
        f"- baselines: {b['finetune_steps']} steps x {b['batch_size']} on all SST-2 training labels (as many steps as "
        "the student's two phases together), best dev checkpoint, as for the student.",
        "", "Seconds per step of the benchmark:", "",
        "| step | seconds |", "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in r["step_seconds"].items()],
        "", "## Full scale", "",
        "This recipe at TinyBERT's full task budgets: the teacher fine-tuned 3 epochs (6,315 steps x 32); augmentation x20 of all 67,349 "
        "sentences (1.4M rows, with a masked LM for single-piece words); 10 intermediate epochs over the augmented "
        "rows (~442,000 steps x 32) and 3 prediction epochs (~133,000 steps x 32). At this run's measured rates, on this 2-core machine: "
        + ", ".join(f"{k} {v} h" for k, v in r["full_scale"]["hours"].items() if v)
        + f"; about **{r['full_scale']['total_hours']:.0f} hours** in all, without the augmentation itself (with a "
        "masked LM, TinyBERT's procedure costs one BERT-base forward per word: see `make bench-augment`). That is "
        "why this run is cut down as above; `train=full` holds the full budgets for a GPU.",
    ]
    return "\n".join(lines) + "\n"


def missed(r: dict) -> list[str]:
    """For each missed accuracy target: by how much, what this run's parts bought (measured in this
    run), and what was tried."""
    t = r["targets"]
    if t["retention"]["met"] and t["points_over_baseline"]["met"]:
        return []
    teacher, student = 100 * r["teacher_dev_acc"], 100 * r["student_dev_acc_mean"]
    bl = {init: 100 * x["dev_acc_mean"] for init, x in r["baselines"].items()}
    best = 100 * r["baseline_dev_acc_mean"]
    need = t["retention"]["target"] * teacher
    b = r["budget"]
    passes = (b["intermediate_steps"] + b["prediction_steps"]) * b["batch_size"] / max(1, r["augment_rows"] or 1)
    init = [100 * x for x in r["student_init_dev"] if x is not None]
    lines = ["", "## Missed targets: by how much, and what was tried", ""]
    if not t["retention"]["met"]:
        lines.append(f"- Retention {t['retention']['target']} of the teacher's {teacher:.2f} needs a student at "
                     f"{need:.2f}; this one scores {student:.2f}, {need - student:.2f} points short.")
    if not t["points_over_baseline"]["met"]:
        gap = t["points_over_baseline"]["target"]
        lines.append(f"- {gap} points over the best no-distillation baseline ({r['baseline_init']} init, {best:.2f}) "
                     f"needs {best + gap:.2f}; this student is {best + gap - student:.2f} points short.")
    lines += [
        "- What each part bought here, measured in this run: "
        + (f"the pruned teacher before any training scores {init[0]:.2f}; " if init else "")
        + f"pruned instead of random initialisation, both fine-tuned on the labels, {bl['pruned'] - bl['random']:+.2f} "
        f"points; task distillation on the augmented rows instead of fine-tuning on the labels (pruned-init baseline "
        f"-> student) {student - bl['pruned']:+.2f} points.",
        "- Tried: the four recipes of `make bench-ablation` (reports/sst2/ablation.md: TinyBERT general + task "
        "distillation, pruned init, MiniLM relations in general distillation, pruned init with MiniLM relations), "
        "this one best on dev; before it, this benchmark's general + task distillation recipe measured 84.37 ± 0.35 "
        "(retention 0.9654, +1.49 over its general-init baseline; commit f6eaa87's reports/sst2/REPORT.md). "
        "Within the ~90-minute budget: the widest student that stays above the 4x speed target (4x192; TinyBERT4's "
        "312 width is only ~2.4x faster than this teacher); the teacher's head count, so attention scores are "
        f"distilled head for head; {b['augmented_sentences']:,} training sentences augmented "
        f"({b['augment_source']} replacement, {b['augment_n']} new row{'' if b['augment_n'] == 1 else 's'} each) "
        "for both task phases; the split of the task steps between the two phases (with the general recipe, seed 42: "
        "500 intermediate + 2,000 prediction steps 83.26, the prediction phase alone 82.68, 1,000 + 1,500 84.06, the "
        "split used here); teacher logits computed once and shared by the seeds; the best dev checkpoint for student "
        "and baselines alike.",
        f"- What the gap is made of: the student sees ~{passes:.1f} passes over {r['augment_rows']:,} augmented rows "
        "(TinyBERT: 10 + 3 passes over ~1.35M). The full-scale budget below is the next thing to run where a GPU "
        "is available.",
    ]
    return lines


def last_rate(run_dir: Path, phase: str, key: str) -> float:
    """The last logged throughput (`examples_per_s` or `tokens_per_s`) of one phase of a run."""
    rows = [json.loads(x) for x in (run_dir / METRICS).read_text().splitlines()]
    return [x[key] for x in rows if x.get("phase") == phase and key in x][-1]


def full_scale(r: dict, root: Path) -> dict:
    """Hours TinyBERT's full task budgets would take with this recipe at this run's measured step rates
    (steps scale linearly): teacher 3 epochs of SST-2; intermediate 10 and prediction 3 epochs over 20
    augmented rows per sentence (1.4M rows). Pruning replaces general distillation: it costs seconds."""
    student_run = root / "task" / f"pruned-seed{r['student_seed']}"
    rows = 67_349 * 21
    hours = {
        "teacher": 3 * 67_349 / last_rate(root / "teacher", "teacher", "examples_per_s") / 3600,
        "intermediate": 10 * rows / last_rate(student_run, "intermediate", "examples_per_s") / 3600,
        "prediction": 3 * rows / last_rate(student_run, "prediction", "examples_per_s") / 3600,
    }
    return {"hours": {k: round(v, 1) for k, v in hours.items()}, "augmented_rows": rows,
            "total_hours": round(sum(hours.values()), 1)}


if __name__ == "__main__":
    main()
