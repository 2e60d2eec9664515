"""Token classification and extractive QA on real data (`make bench-ner`, `bench-pos`, `bench-qa`): the
MiniLM-L6 teacher fine-tuned, a 4 x 192 student distilled (general, then task distillation: intermediate and
prediction layers) with 3 seeds, the no-distillation baselines of the same shape (3 seeds each, from the
general-distilled weights and from random weights), the speed-up, and the table that judges them against
the issue's targets.

    python -m tinykd.bench.spans --task wnut17|upos|squad [--seeds 42 43 44] [--out reports/ner] [overrides...]

Every step is an ordinary `python -m tinykd ... experiment=<task>_bench reuse=true` command (tinykd/bench/
runner.py): an interrupted benchmark continues where it stopped, and the general-distilled student (task-
agnostic) is made once for the three. Then, in this process:
  - every export (teacher, students, baselines) is loaded with plain `transformers` and scored again on all of
    dev: token tasks by a loop that uses nothing from tinykd (its own word windows, seqeval / word accuracy);
    QA by the plain model's logits on the dev windows, answers searched and scored by tinykd.squad (the
    official script's rules: tests/test_squad.py); each must match its run's own figure;
  - teacher and best student are timed side by side (tinykd.latency, batch 1 and 32);
  - `<out>/results.json`, `<out>/REPORT.md`, `<out>/score_latency.png` and `<out>/commands.log` are written.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from tinykd import latency
from tinykd.bench.augment import cpu_name
from tinykd.bench.runner import Runner
from tinykd.config import REPO_ROOT
from tinykd.run import CONFIG, METRICS, RESULTS, read_results

TARGETS = {"retention": 0.95, "points_over_baseline": 2.0, "speedup_b32": 4.0}


@dataclass(frozen=True)
class Bench:
    task: str  # conf/task/<task>.yaml
    out: str  # reports/<out>
    title: str
    metric: str  # the main metric, judged by the targets
    metric_name: str
    others: tuple[str, ...]  # reported beside it
    augment: bool  # task distillation on stage=augment's rows (token tasks: only O words replaced)
    latency_len: int  # tokens of the timed inputs: about a dev example's length
    data: str  # what the figures are on, for the report
    # the no-distillation baselines' initial weights (UPOS and QA: the general-distilled ones only, for time: at the
    # same steps bench-sst2 and bench-ner measured the random-init baseline below them, so the harder one is kept)
    baselines: tuple[str, ...] = ("general", "random")


BENCHES = {
    "wnut17": Bench("wnut17", "ner", "NER on WNUT-17", "entity_f1", "entity F1",
                    ("entity_precision", "entity_recall", "token_accuracy"), True, 64,
                    "WNUT-17 train (3,394 sentences) -> dev (1,009 sentences, 836 entities)"),
    # no augmentation for part of speech: it replaces only words tagged O, and UPOS has no O tag
    "upos": Bench("upos", "pos", "UPOS tagging on UD English-EWT", "token_accuracy", "word accuracy", (), False, 64,
                  "UD English-EWT train (12,544 sentences) -> dev (2,001 sentences, 25,147 words)", ("general",)),
    "squad": Bench("squad", "qa", "Extractive QA (SQuAD v1.1 format)", "squad_f1", "F1", ("squad_em",), False, 256,
                   "../shared/data/squad train.json (36 articles, 8,123 questions) -> dev.json (6 articles, "
                   "1,302 questions): the SQuAD v1.1 dev articles split by article, not the official training file",
                   ("general",)),
}


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


# ----------------------------------------------------------------------------- plain-transformers rescoring


def _conll_words(path: Path, token_col: int, tag_col: int, conllu: bool) -> list[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL / CoNLL-U file, read here without tinykd (CoNLL-U: FORM and UPOS, no
    multiword-token ranges or empty nodes)."""
    out, words, tags = [], [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if conllu and line.startswith("#"):
            continue
        if not line.strip():
            if words:
                out.append((words, tags))
                words, tags = [], []
            continue
        fields = line.split("\t")
        if conllu and ("-" in fields[0] or "." in fields[0]):
            continue
        words.append(fields[token_col])
        tags.append(fields[tag_col])
    if words:
        out.append((words, tags))
    return out


@torch.inference_mode()
def plain_token_scores(export: Path, sentences, max_len: int, entity: bool) -> dict[str, float]:
    """Dev scores of a token classifier with plain transformers: every word tagged by its first sub-token;
    a sentence longer than `max_len` tokens read in consecutive word chunks that fit; a word with no
    sub-token at all (a lone U+FE0F) read as [UNK], as tinykd reads it."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForTokenClassification.from_pretrained(export).eval()
    names = model.config.id2label
    room = max_len - tok.num_special_tokens_to_add()
    predicted, gold = [], []
    for words, tags in sentences:
        pieces = [tok(w, add_special_tokens=False)["input_ids"] or [tok.unk_token_id] for w in words]
        chunks, start, used = [], 0, 0
        for i, p in enumerate(pieces):  # greedy word chunks of at most `room` sub-tokens
            if used and used + len(p) > room:
                chunks.append((start, i))
                start, used = i, 0
            used += min(len(p), room)
        chunks.append((start, len(words)))
        tags_out = []
        for a, b in chunks:
            ids, firsts = [], []
            for p in pieces[a:b]:
                firsts.append(len(ids))
                ids.extend(p[:room])
            enc = [tok.cls_token_id, *ids, tok.sep_token_id]  # BERT's [CLS] words [SEP] (the MiniLM teacher's)
            best = model(input_ids=torch.tensor([enc])).logits[0].argmax(-1).tolist()
            tags_out += [names[best[1 + f]] for f in firsts]
        predicted.append(tags_out)
        gold.append(tags)
    words = sum(len(g) for g in gold)
    out = {"token_accuracy": sum(p == g for ps, gs in zip(predicted, gold) for p, g in zip(ps, gs)) / words}
    if entity:
        out |= {"entity_f1": float(f1_score(gold, predicted)), "entity_precision": float(precision_score(gold, predicted)),
                "entity_recall": float(recall_score(gold, predicted))}
    return out


def plain_qa_scores(export: Path, cfg) -> dict[str, float]:
    """Dev EM/F1 of a QA export loaded with plain transformers (AutoModelForQuestionAnswering), on tinykd's dev
    windows, answers searched and scored as tinykd does (tinykd.squad: the official script's rules)."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from tinykd import build
    from tinykd.evaluate import evaluate

    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForQuestionAnswering.from_pretrained(export)
    spec = build.task_spec(cfg)
    dev = build.task_split(cfg, spec, tok, "dev")
    return evaluate(model, dev, tok, spec, 64, torch.device("cpu"))


def plain_scores(bench: Bench, export: Path, cfg) -> dict[str, float]:
    t = cfg.task
    if bench.task == "squad":
        return plain_qa_scores(export, cfg)
    conllu = str(t.dev).endswith(".conllu")
    sentences = _conll_words(Path(t.dev), 1 if conllu else 0, 3 if conllu else 1, conllu)[:t.dev_limit]
    return plain_token_scores(export, sentences, t.max_seq_len, entity=t.tag_scheme == "iob2")


# ----------------------------------------------------------------------------- the benchmark


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=sorted(BENCHES), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--baselines", nargs="+", default=None, choices=["general", "random"],
                    help="the no-distillation baselines' initial weights (default: the task's, BENCHES)")
    ap.add_argument("--runs", default=str(Path(os.environ.get("TINYKD_RUNS", REPO_ROOT / "runs")) / "bench_spans"))
    ap.add_argument("--out", default=None, help="default: reports/<ner|pos|qa>")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite REPORT.md (and the plot) from <out>/results.json, running nothing")
    ap.add_argument("overrides", nargs="*", help="extra tinykd overrides for every step (e.g. debug=smoke)")
    args = ap.parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)  # the report names the command that made it
    bench = BENCHES[args.task]
    if args.report_only:
        out_dir = Path(args.out or REPO_ROOT / "reports" / bench.out)
        result = json.loads((out_dir / "results.json").read_text())  # the report's own
        if "student_curve" not in result:  # results written before the curve was recorded
            result["student_curve"] = dev_curve(REPO_ROOT / Path(result["student_dir"]).parent, bench.metric)
            (out_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        plot(result, out_dir / "score_latency.png")
        (out_dir / "REPORT.md").write_text(report(result))
        return result
    args.baselines = args.baselines or list(bench.baselines)
    root = Path(args.runs).resolve()
    out_dir = Path(args.out or REPO_ROOT / "reports" / bench.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    t = bench.task
    common = [f"runs.teacher={root}/{t}/teacher", f"runs.general={root}/general", f"runs.augment={root}/{t}/augment",
              *args.overrides]
    tinykd = Runner(f"bench-{bench.out}", out_dir / "commands.log", (f"experiment={t}_bench",))
    seconds: dict[str, float] = {}

    # --- teacher, general distillation (shared by the span benchmarks), augmentation
    seconds["teacher"] = tinykd("stage=teacher", *common)
    seconds["general"] = tinykd("stage=general", *common)
    extra = []
    if bench.augment:
        seconds["augment"] = tinykd("stage=augment", *common)
        extra = [f"task.augmented={root}/{t}/augment/data"]

    # --- task distillation and the baselines, 3 seeds each
    runs: dict[str, dict[int, Path]] = {"student": {}, **{f"baseline_{b}": {} for b in args.baselines}}
    for seed in args.seeds:
        d = root / t / f"distilled-seed{seed}"
        seconds[f"student_seed{seed}"] = tinykd("stage=task", f"seed={seed}", *extra, f"runs.task={d}", *common)
        runs["student"][seed] = d
    for init in args.baselines:
        for seed in args.seeds:
            d = root / t / f"finetune-{init}-seed{seed}"
            seconds[f"baseline_{init}_seed{seed}"] = tinykd("stage=task", "stage.phases=[finetune]",
                                                            f"student.init={init}", f"seed={seed}", f"runs.task={d}",
                                                            *common)
            runs[f"baseline_{init}"][seed] = d

    # --- every export scored again with plain transformers
    teacher_res = read_results(root / t / "teacher")
    cfg = OmegaConf.load(runs["student"][args.seeds[0]] / CONFIG)
    exports = {"teacher": (Path(teacher_res["export"]), teacher_res["dev"])}
    for group, by_seed in runs.items():
        for seed, d in by_seed.items():
            res = read_results(d)
            exports[f"{group}_seed{seed}"] = (Path(res["export"]), res["dev"])
    scored = {}
    for name, (export, recorded) in exports.items():
        plain = plain_scores(bench, export, cfg)
        scored[name] = {"recorded": recorded, "plain": plain, "dir": os.path.relpath(export, REPO_ROOT),
                        "agrees": bool(all(abs(plain[k] - recorded[k]) <= 1e-3 for k in plain if k in recorded))}
        print(f"[bench-{bench.out}] {name:28s} dev {bench.metric} {recorded[bench.metric]:.4f} "
              f"(plain transformers {plain[bench.metric]:.4f})")

    def values(group, metric=bench.metric):
        return [scored[f"{group}_seed{s}"]["plain"][metric] for s in args.seeds]

    best_seed = max(args.seeds, key=lambda s: scored[f"student_seed{s}"]["plain"][bench.metric])
    student_dir = REPO_ROOT / scored[f"student_seed{best_seed}"]["dir"]

    # --- latency: teacher and best student side by side
    from tinykd import models

    loaded = {name: models.load_classifier(str(d), 2 if t == "squad" else len(cfg_labels(d)), None, name,
                                           task_type=cfg.task.type)
              for name, d in (("teacher", exports["teacher"][0]), ("student", student_dir))}
    timing = {name: {f"b{b}": latency.measure(m, b, bench.latency_len) for b in (1, 32)} for name, m in loaded.items()}
    params = {name: latency.parameters(m) for name, m in loaded.items()}
    speed = {f"speedup_{b}": timing["teacher"][b]["median_ms"] / timing["student"][b]["median_ms"] for b in ("b1", "b32")}

    teacher_score = scored["teacher"]["plain"][bench.metric]
    s_mean, s_sd = mean_sd(values("student"))
    baselines = {b: mean_sd(values(f"baseline_{b}")) for b in args.baselines}
    best_baseline = max(baselines, key=lambda b: baselines[b][0])
    result = {
        "task": t, "metric": bench.metric, "title": bench.title, "data": bench.data,
        "teacher": teacher_score, "student_mean": s_mean, "student_sd": s_sd, "student_seeds": values("student"),
        "baselines": {b: {"mean": m, "sd": sd, "seeds": values(f"baseline_{b}")} for b, (m, sd) in baselines.items()},
        "best_baseline": best_baseline,
        "others": {m: {"teacher": scored["teacher"]["plain"][m], "student_mean": mean_sd(values("student", m))[0],
                       **{f"baseline_{b}_mean": mean_sd(values(f"baseline_{b}", m))[0] for b in args.baselines}}
                   for m in bench.others},
        "retention": s_mean / teacher_score if teacher_score > 0 else float("nan"),  # (a smoke teacher may score 0)
        "points_over_baseline": 100 * (s_mean - baselines[best_baseline][0]),
        **speed, "latency": timing, "params": params, "latency_len": bench.latency_len,
        "student_seed": best_seed, "student_dir": os.path.relpath(student_dir, REPO_ROOT),
        "scored": scored, "seeds": args.seeds, "seconds": time.perf_counter() - start, "step_seconds": seconds,
        "student_shape": {k: cfg.student[k] for k in ("num_layers", "hidden_size", "num_heads", "intermediate_size")},
        "budget": budget(cfg, root / t),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "commands": tinykd.commands, "command": f"make bench-{bench.out}" if given == ["--task", args.task]
        else "python -m tinykd.bench.spans " + " ".join(given),
        "reused_steps": [k for k, c in zip(seconds, tinykd.commands) if c in tinykd.reused],
    }
    result["targets"] = {
        "retention": {"target": TARGETS["retention"], "value": result["retention"]},
        "points_over_baseline": {"target": TARGETS["points_over_baseline"], "value": result["points_over_baseline"]},
        "speedup_b32": {"target": TARGETS["speedup_b32"], "value": speed["speedup_b32"]},
    }
    for v in result["targets"].values():
        v["met"] = bool(v["value"] >= v["target"])
    result["plain_transformers_reproduces"] = all(s["agrees"] for s in scored.values())
    result["student_curve"] = dev_curve(runs["student"][best_seed], bench.metric)
    plot(result, out_dir / "score_latency.png")
    (out_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "REPORT.md").write_text(report(result))
    print(f"[bench-{bench.out}] teacher {teacher_score:.4f}; student {s_mean:.4f} ± {s_sd:.4f} (retention "
          f"{result['retention']:.3f}); best baseline ({best_baseline}) {baselines[best_baseline][0]:.4f}; speed-up "
          f"b1 {speed['speedup_b1']:.2f}x b32 {speed['speedup_b32']:.2f}x; {result['seconds'] / 60:.1f} min")
    return result


def dev_curve(run_dir: Path, metric: str) -> list[tuple[str, int, float]]:
    """(phase, step, dev score) at every evaluation of a task run, from its metrics.jsonl."""
    rows = [json.loads(x) for x in (run_dir / METRICS).read_text().splitlines()]
    return [(x["phase"], x["step"], x[f"dev/{metric}"]) for x in rows if f"dev/{metric}" in x]


def missed(r: dict) -> list[str]:
    """For each missed score target: by how much, and what this run's parts bought, measured in this run."""
    tg = r["targets"]
    if tg["retention"]["met"] and tg["points_over_baseline"]["met"]:
        return []
    pct = 100
    teacher, student = pct * r["teacher"], pct * r["student_mean"]
    lines = ["## Missed targets: by how much, and what the parts bought", ""]
    if not tg["retention"]["met"]:
        need = tg["retention"]["target"] * teacher
        lines.append(f"- Retention {tg['retention']['target']} of the teacher's {teacher:.2f} needs a student at "
                     f"{need:.2f}; this one scores {student:.2f}, {need - student:.2f} points short.")
    if not tg["points_over_baseline"]["met"]:
        base = pct * r["baselines"][r["best_baseline"]]["mean"]
        lines.append(f"- {tg['points_over_baseline']['target']} points over the {r['best_baseline']}-init baseline "
                     f"({base:.2f}) needs {base + tg['points_over_baseline']['target']:.2f}; this student is "
                     f"{base + tg['points_over_baseline']['target'] - student:.2f} points short.")
    b = r["baselines"]
    if "general" in b:
        parts = [f"task distillation instead of fine-tuning on the labels (general-init baseline -> student) "
                 f"{student - pct * b['general']['mean']:+.2f} points"]
        if "random" in b:
            parts.insert(0, f"general distillation (random-init baseline -> general-init baseline) "
                            f"{pct * (b['general']['mean'] - b['random']['mean']):+.2f} points")
        lines.append("- What each part bought, measured in this run: " + "; ".join(parts) + ".")
    curve = r.get("student_curve")
    if curve:
        shown = ", ".join(f"{phase} {step}: {100 * v:.2f}" for phase, step, v in curve)
        rising = curve[-1][2] >= max(v for *_, v in curve)
        lines.append(f"- The best student's dev {r['metric']} at each evaluation (%): {shown}"
                     + ("; still rising at its last evaluation." if rising else "."))
    lines.append("")
    return lines


def cfg_labels(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text())["id2label"]


def budget(cfg, root: Path) -> dict:
    """What the runs trained on and for how long, read from their configs and results."""
    aug = root / "augment" / RESULTS
    tr = cfg.train
    return {"teacher_steps": tr.teacher.max_steps, "general_steps": tr.general.max_steps,
            "general_batch": tr.general.batch_size, "corpus_max_lines": cfg.corpus.max_lines,
            "intermediate_steps": tr.task_intermediate.max_steps, "prediction_steps": tr.task_prediction.max_steps,
            "finetune_steps": tr.task_finetune.max_steps, "batch_size": tr.task_prediction.batch_size,
            "max_seq_len": cfg.task.max_seq_len,
            "augmented_rows": json.loads(aug.read_text())["rows"] if aug.is_file() else None,
            "augment_n": cfg.augment.n if aug.is_file() else None}


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_ms, s_ms = r["latency"]["teacher"]["b32"]["median_ms"], r["latency"]["student"]["b32"]["median_ms"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter([t_ms], [100 * r["teacher"]], s=80, marker="*", color="black", label="teacher (MiniLM-L6)")
    points = [("student (distilled)", r["student_mean"], r["student_sd"], "tab:blue", 0.0)]
    colors = {"general": ("tab:orange", -0.04), "random": ("tab:gray", 0.04)}
    for b, v in r["baselines"].items():
        points.append((f"baseline, {b} init", v["mean"], v["sd"], *colors[b]))
    for label, m, sd, color, dx in points:  # the baselines share the student's shape: nudged apart to be seen
        ax.errorbar([s_ms * (1 + dx)], [100 * m], yerr=[100 * sd], fmt="o", color=color, capsize=4, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(f"CPU latency, batch 32 x {r['latency_len']} tokens (ms, log scale)")
    ax.set_ylabel(f"dev {r['metric']} (%)")
    ax.set_title(f"{r['title']}: {r['speedup_b32']:.1f}x faster, {100 * r['retention']:.1f}% of the teacher")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(r: dict) -> str:
    sh, b, tg = r["student_shape"], r["budget"], r["targets"]
    lat = r["latency"]
    pct = lambda x: f"{100 * x:.2f}"  # noqa: E731

    def seeds(xs):
        return ", ".join(pct(x) for x in xs)

    def spread(mean, sd, n):  # one seed has no spread to show
        return f"{pct(mean)} ± {pct(sd)}" if n > 1 else f"{pct(mean)} (one seed)"

    t1, t32 = lat["teacher"]["b1"]["median_ms"], lat["teacher"]["b32"]["median_ms"]
    s1, s32 = lat["student"]["b1"]["median_ms"], lat["student"]["b32"]["median_ms"]
    rows = [f"| teacher | MiniLM-L6 (6x384) fine-tuned {b['teacher_steps']} steps x 32 | {pct(r['teacher'])} | "
            f"{r['params']['teacher'] / 1e6:.2f}M | {t1:.2f} | {t32:.1f} |",
            f"| student | BERT {sh['num_layers']}x{sh['hidden_size']} (heads {sh['num_heads']}, FFN "
            f"{sh['intermediate_size']}): general + task distillation; seeds {', '.join(map(str, r['seeds']))}: "
            f"{seeds(r['student_seeds'])} | {spread(r['student_mean'], r['student_sd'], len(r['seeds']))} | "
            f"{r['params']['student'] / 1e6:.2f}M | {s1:.2f} | {s32:.1f} |"]
    for name, v in r["baselines"].items():
        what = "general-distilled" if name == "general" else "random"
        rows.append(f"| baseline ({name} init) | same shape, {what} weights, fine-tuned on the labels "
                    f"{b['finetune_steps']} steps: {seeds(v['seeds'])} | {spread(v['mean'], v['sd'], len(v['seeds']))} | "
                    f"{r['params']['student'] / 1e6:.2f}M | {s1:.2f} | {s32:.1f} |")
    others = [f"| {m} | {pct(v['teacher'])} | {pct(v['student_mean'])} | "
              + " | ".join(pct(v[f"baseline_{x}_mean"]) for x in r["baselines"]) + " |" for m, v in r["others"].items()]

    def verdict(k, fmt):
        v = tg[k]
        return "yes" if v["met"] else f"no, short by {format(v['target'] - v['value'], fmt)}"

    lines = [
        f"# {r['title']} (`{r['command']}`)", "",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, torch {r['machine']['torch']} "
        f"({r['machine']['torch_threads']} threads), no GPU. Whole benchmark: {r['seconds'] / 60:.1f} min "
        "(the general-distilled student, shared by the span benchmarks, is made by the first of them to run).", "",
        f"Data: {r['data']}. Figures: dev {r['metric']}, every model scored again with plain `transformers` "
        f"(matches each run's own figure: **{'yes' if r['plain_transformers_reproduces'] else 'NO'}**).", "",
        "![score vs latency](score_latency.png)", "",
        f"| model | what | dev {r['metric']} (%) | params | b1 ms | b32 ms |", "|---|---|---|---|---|---|", *rows, "",
        f"Latency: {r['latency_len']} tokens, median of 30 forwards after 5 warm-up, teacher and best student timed "
        "side by side in one process.", "",
    ]
    if others:
        lines += ["Other metrics (means over seeds, %):", "",
                  "| metric | teacher | student | " + " | ".join(f"baseline ({x})" for x in r["baselines"]) + " |",
                  "|---|---|---|" + "---|" * len(r["baselines"]), *others, ""]
    lines += [
        "## Targets", "", "| target | wanted | measured | met |", "|---|---|---|---|",
        f"| retention (student / teacher) | ≥ {tg['retention']['target']} | {tg['retention']['value']:.4f} | "
        f"{verdict('retention', '.4f')} |",
        f"| points over the best no-distillation baseline ({r['best_baseline']} init) | ≥ "
        f"{tg['points_over_baseline']['target']} | {tg['points_over_baseline']['value']:+.2f} | "
        f"{verdict('points_over_baseline', '.2f')} |",
        f"| speed-up at batch 32 | ≥ {tg['speedup_b32']['target']}x | {tg['speedup_b32']['value']:.2f}x (batch 1: "
        f"{r['speedup_b1']:.2f}x) | {verdict('speedup_b32', '.2f')} |", "",
        *missed(r),
        "## Budget of this run", "",
        f"- teacher: {b['teacher_steps']} steps x 32, windows of {b['max_seq_len']} tokens;",
        f"- general distillation (shared): {b['general_steps']} steps x {b['general_batch']} blocks of 128 tokens "
        f"from `../shared/data/corpus` (first {b['corpus_max_lines']} lines of each file);",
    ]
    if b["augmented_rows"]:
        lines.append(f"- augmentation: every training sentence, {b['augment_n']} new row(s) each, GloVe word-vector "
                     f"replacement of words tagged O only: {b['augmented_rows']:,} rows in all;")
    lines += [
        f"- task distillation: {b['intermediate_steps']} intermediate + {b['prediction_steps']} prediction steps x "
        f"{b['batch_size']}{' on the augmented rows' if b['augmented_rows'] else ''}, the best dev checkpoint;",
        f"- baselines: {b['finetune_steps']} steps x {b['batch_size']} on the gold labels (about the student's "
        "steps), the best dev checkpoint.", "",
        "Seconds per step (a reused step found its run finished by an earlier invocation of this benchmark: "
        "its seconds are the reuse check's, not the run's):", "", "| step | seconds |", "|---|---|",
        *[f"| {k} | {v:.0f}{' (reused)' if k in r.get('reused_steps', ()) else ''} |"
          for k, v in r["step_seconds"].items()], "",
        *[f"Note: {n}" for n in r.get("notes", ())], *([""] if r.get("notes") else []),
        "## Commands", "", "```", *r["commands"], "```", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
