"""Token classification and extractive QA on real data (`make bench-ner`, `bench-pos`, `bench-qa`): the
MiniLM-L6 teacher fine-tuned, a 4 x 192 student distilled by the recipe of `conf/experiment/<task>_bench.yaml`
(its initialisation, transfer data, losses and budgets) with 3 seeds, the no-distillation baselines of the same
shape (3 seeds from the student's own initialisation, and from the best other one), the speed-up, what each
CPU-minute buys (dev score against training minutes), and the table that judges them against the targets.

    python -m tinykd.bench.spans --task wnut17|upos|squad [--seeds 42 43 44] [--test FILE] [--out reports/ner]
                                 [overrides...]

Every step is an ordinary `python -m tinykd ... experiment=<task>_bench reuse=true` command (tinykd/bench/
runner.py): an interrupted benchmark continues where it stopped. Then, in this process:
  - every export (teacher, students, baselines) is loaded with plain `transformers` and scored again on all of
    dev: token tasks by a loop that uses nothing from tinykd (its own word windows, seqeval / word accuracy);
    QA by the plain model's logits on the dev windows, answers searched and scored by tinykd.squad (the
    official script's rules: tests/test_squad.py); each must match its run's own figure;
  - with `--test FILE` (a labelled file that is not in ../shared, in the task's own format), every student and
    baseline is also scored on it at the end of its run (task.test): a second opinion on recipes chosen on dev;
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
from typing import Optional

import torch
from omegaconf import OmegaConf

from tinykd import latency
from tinykd.bench.augment import cpu_name
from tinykd.bench.runner import Runner, compose
from tinykd.config import REPO_ROOT
from tinykd.run import CONFIG, METRICS, RESULTS, read_results

TARGETS = {"gap_closed": 0.5, "speedup_b32": 4.0}  # and each Bench's retention


@dataclass(frozen=True)
class Bench:
    task: str  # conf/task/<task>.yaml; the recipe is conf/experiment/<task>_bench.yaml
    out: str  # reports/<out>
    title: str
    metric: str  # the main metric, judged by the targets
    metric_name: str
    others: tuple[str, ...]  # reported beside it
    augment: bool  # stage=augment runs first and the students train on its rows (task.augmented)
    latency_len: int  # tokens of the timed inputs: about a dev example's length
    data: str  # what the figures are on, for the report
    retention: float  # the target: student / teacher on dev
    other_init: str = "general"  # the other no-distillation baseline's initial weights (the best other one)
    other_seeds: int = 1  # its seeds (the student's own initialisation gets all of them): the 90-minute budget


BENCHES = {
    "wnut17": Bench("wnut17", "ner", "NER on WNUT-17", "entity_f1", "entity F1",
                    ("entity_precision", "entity_recall", "token_accuracy"), False, 64,
                    "WNUT-17 train (3,394 sentences) -> dev (1,009 sentences, 836 entities)", 0.95),
    "upos": Bench("upos", "pos", "UPOS tagging on UD English-EWT", "token_accuracy", "word accuracy", (), False, 64,
                  "UD English-EWT train (12,544 sentences) -> dev (2,001 sentences, 25,147 words)", 0.98),
    "squad": Bench("squad", "qa", "Extractive QA (SQuAD v1.1 format)", "squad_f1", "F1", ("squad_em",), False, 256,
                   "../shared/data/squad train.json (36 articles, 8,123 questions) -> dev.json (6 articles, "
                   "1,302 questions): the SQuAD v1.1 dev articles split by article, not the official training file",
                   0.95),
}
INITS = {"pruned": "the fine-tuned teacher pruned to the student's shape", "general": "the general-distilled student",
         "random": "random weights"}


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
    ap.add_argument("--test", default=None, help="a labelled file not in ../shared: every student and baseline is "
                                                 "also scored on it (task.test)")
    ap.add_argument("--runs", default=str(Path(os.environ.get("TINYKD_RUNS", REPO_ROOT / "runs")) / "bench_spans"))
    ap.add_argument("--out", default=None, help="default: reports/<ner|pos|qa>")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite REPORT.md (and the plot) from <out>/results.json, running nothing")
    ap.add_argument("overrides", nargs="*", help="extra tinykd overrides for every step (e.g. debug=smoke)")
    args = ap.parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)  # the report names the command that made it
    bench = BENCHES[args.task]
    out_dir = Path(args.out or REPO_ROOT / "reports" / bench.out)
    if args.report_only:
        result = json.loads((out_dir / "results.json").read_text())  # the report's own
        plot(result, out_dir / "score_latency.png")
        (out_dir / "REPORT.md").write_text(report(result))
        return result
    root = Path(args.runs).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    t = bench.task
    recipe = compose([f"experiment={t}_bench", "stage=task", *args.overrides])  # the student's recipe
    init = recipe.student.init
    inits = [init, *([bench.other_init] if bench.other_init != init else [])]
    common = [f"runs.teacher={root}/{t}/teacher", f"runs.general={root}/general", f"runs.augment={root}/{t}/augment",
              *args.overrides]
    test = [f"task.test={Path(args.test).resolve()}"] if args.test else []
    tinykd = Runner(f"bench-{bench.out}", out_dir / "commands.log", (f"experiment={t}_bench",))
    seconds: dict[str, float] = {}

    # --- teacher, general distillation (when a student or baseline starts from it), augmentation
    seconds["teacher"] = tinykd("stage=teacher", *common)
    if "general" in inits:
        seconds["general"] = tinykd("stage=general", *common)
    extra = []
    if bench.augment:
        seconds["augment"] = tinykd("stage=augment", *common)
        extra = [f"task.augmented={root}/{t}/augment/data"]

    # --- task distillation (3 seeds), then the baselines: the same shape on the gold labels alone
    runs: dict[str, dict[int, Path]] = {"student": {}, **{f"baseline_{b}": {} for b in inits}}
    for seed in args.seeds:
        d = root / t / f"distilled-{init}-seed{seed}"
        seconds[f"student_seed{seed}"] = tinykd("stage=task", f"seed={seed}", *extra, *test, f"runs.task={d}",
                                                *common)
        runs["student"][seed] = d
    for b in inits:
        layer_map = [] if b == "pruned" else ["distill.layer_map=uniform"]  # (kept maps a pruned student only)
        for seed in args.seeds if b == init else args.seeds[:bench.other_seeds]:
            d = root / t / f"finetune-{b}-seed{seed}"
            seconds[f"baseline_{b}_seed{seed}"] = tinykd("stage=task", "stage.phases=[finetune]", f"student.init={b}",
                                                         "task.transfer=null", *layer_map, f"seed={seed}", *test,
                                                         f"runs.task={d}", *common)
            runs[f"baseline_{b}"][seed] = d

    # --- every export scored again with plain transformers
    teacher_res = read_results(root / t / "teacher")
    cfg = OmegaConf.load(runs["student"][args.seeds[0]] / CONFIG)
    exports = {"teacher": (Path(teacher_res["export"]), teacher_res["dev"], None)}
    for group, by_seed in runs.items():
        for seed, d in by_seed.items():
            res = read_results(d)
            exports[f"{group}_seed{seed}"] = (Path(res["export"]), res["dev"], res)
    scored = {}
    for name, (export, recorded, res) in exports.items():
        plain = plain_scores(bench, export, cfg)
        scored[name] = {"recorded": recorded, "plain": plain, "dir": os.path.relpath(export, REPO_ROOT),
                        "agrees": bool(all(abs(plain[k] - recorded[k]) <= 1e-3 for k in plain if k in recorded)),
                        "test": (res or {}).get("test"), "init_dev": (res or {}).get("init_dev"),
                        "transfer": (res or {}).get("transfer")}
        print(f"[bench-{bench.out}] {name:28s} dev {bench.metric} {recorded[bench.metric]:.4f} "
              f"(plain transformers {plain[bench.metric]:.4f})")

    def values(group, metric=bench.metric):
        return [scored[k]["plain"][metric] for k in scored if k.startswith(f"{group}_seed")]

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
    baselines = {b: mean_sd(values(f"baseline_{b}")) for b in inits}
    best_baseline = max(baselines, key=lambda b: baselines[b][0])
    same = baselines[init][0]
    first = args.seeds[0]
    result = {
        "task": t, "metric": bench.metric, "title": bench.title, "data": bench.data, "init": init,
        "teacher": teacher_score, "student_mean": s_mean, "student_sd": s_sd, "student_seeds": values("student"),
        "baselines": {b: {"mean": m, "sd": sd, "seeds": values(f"baseline_{b}")} for b, (m, sd) in baselines.items()},
        "best_baseline": best_baseline,
        "init_dev": scored[f"student_seed{first}"]["init_dev"],  # before any training (pruning alone), or None
        "others": {m: {"teacher": scored["teacher"]["plain"][m], "student_mean": mean_sd(values("student", m))[0],
                       **{f"baseline_{b}_mean": mean_sd(values(f"baseline_{b}", m))[0] for b in inits}}
                   for m in bench.others},
        "retention": s_mean / teacher_score if teacher_score > 0 else float("nan"),  # (a smoke teacher may score 0)
        # the share of the gap between the no-distillation baseline (same initialisation) and the teacher closed
        "gap_closed": (s_mean - same) / (teacher_score - same) if teacher_score != same else float("nan"),
        "gap_closed_best": ((s_mean - baselines[best_baseline][0]) / (teacher_score - baselines[best_baseline][0])
                            if teacher_score != baselines[best_baseline][0] else float("nan")),
        "test": test_scores(scored, bench.metric, args.seeds, inits) if args.test else None,
        "test_file": args.test,
        **speed, "latency": timing, "params": params, "latency_len": bench.latency_len,
        "student_seed": best_seed, "student_dir": os.path.relpath(student_dir, REPO_ROOT),
        "transfer": scored[f"student_seed{first}"]["transfer"],
        "scored": scored, "seeds": args.seeds, "seconds": time.perf_counter() - start, "step_seconds": seconds,
        "student_shape": {k: cfg.student[k] for k in ("num_layers", "hidden_size", "num_heads", "intermediate_size")},
        "budget": budget(cfg, root / t), "recipe": recipe_summary(cfg),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "commands": tinykd.commands, "command": f"make bench-{bench.out}" if given == ["--task", args.task]
        else "python -m tinykd.bench.spans " + " ".join(given),
        "reused_steps": [k for k, c in zip(seconds, tinykd.commands) if c in tinykd.reused],
        # what each CPU-minute buys: the first seed's dev curves (its run paid for the teacher's transfer labels)
        "curves": {"student": dev_curve(runs["student"][first], bench.metric),
                   f"baseline_{init}": dev_curve(runs[f"baseline_{init}"][first], bench.metric)},
    }
    result["targets"] = {
        "retention": {"target": bench.retention, "value": result["retention"]},
        "gap_closed": {"target": TARGETS["gap_closed"], "value": result["gap_closed"]},
        "speedup_b32": {"target": TARGETS["speedup_b32"], "value": speed["speedup_b32"]},
    }
    for v in result["targets"].values():
        v["met"] = bool(v["value"] >= v["target"])
    result["plain_transformers_reproduces"] = all(s["agrees"] for s in scored.values())
    plot(result, out_dir / "score_latency.png")
    (out_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "REPORT.md").write_text(report(result))
    print(f"[bench-{bench.out}] teacher {teacher_score:.4f}; student {s_mean:.4f} ± {s_sd:.4f} (retention "
          f"{result['retention']:.3f}); baseline ({init}) {same:.4f}, gap closed {result['gap_closed']:.2f}; "
          f"speed-up b1 {speed['speedup_b1']:.2f}x b32 {speed['speedup_b32']:.2f}x; {result['seconds'] / 60:.1f} min")
    return result


def test_scores(scored: dict, metric: str, seeds: list[int], inits: list[str]) -> dict:
    """Mean scores on --test: the teacher (as the first student run scored it), the students, the baselines."""
    def mean(group: str, who: str = "student") -> Optional[float]:
        xs = [v["test"][who][metric] for k, v in scored.items() if k.startswith(f"{group}_seed") and v["test"]]
        return statistics.mean(xs) if xs else None

    teacher = scored[f"student_seed{seeds[0]}"]["test"]
    return {"teacher": teacher["teacher"][metric] if teacher and teacher.get("teacher") else None,
            "student": mean("student"), **{f"baseline_{b}": mean(f"baseline_{b}") for b in inits}}


def dev_curve(run_dir: Path, metric: str) -> list[tuple[str, int, float, Optional[float]]]:
    """(phase, step, dev score, minutes since the run began) at every evaluation of a task run (metrics.jsonl)."""
    rows = [json.loads(x) for x in (run_dir / METRICS).read_text().splitlines()]
    return [(x["phase"], x["step"], x[f"dev/{metric}"],
             x["elapsed_s"] / 60 if "elapsed_s" in x else None) for x in rows if f"dev/{metric}" in x]


def recipe_summary(cfg) -> dict:
    """The student recipe's settings that the report names."""
    d, t = cfg.distill, cfg.task
    return {"init": cfg.student.init, "layer_map": d.layer_map, "phases": list(cfg.stage.phases),
            "temperature": d.temperature, "pred_loss": d.pred_loss, "hard_label": d.weights.hard_label,
            "transfer": t.transfer, "transfer_limit": t.transfer_limit, "transfer_share": t.transfer_share,
            "augmented": bool(t.augmented), "prediction_lr": cfg.train.task_prediction.lr}


def missed(r: dict) -> list[str]:
    """For each missed score target: by how much, and what this run's parts bought, measured in this run."""
    tg = r["targets"]
    if tg["retention"]["met"] and tg["gap_closed"]["met"]:
        return []
    pct = 100
    teacher, student = pct * r["teacher"], pct * r["student_mean"]
    same = pct * r["baselines"][r["init"]]["mean"]
    lines = ["## Missed targets: by how much", ""]
    if not tg["retention"]["met"]:
        need = tg["retention"]["target"] * teacher
        lines.append(f"- Retention {tg['retention']['target']} of the teacher's {teacher:.2f} needs a student at "
                     f"{need:.2f}; this one scores {student:.2f}, {need - student:.2f} points short.")
    if not tg["gap_closed"]["met"]:
        need = same + tg["gap_closed"]["target"] * (teacher - same)
        lines.append(f"- Closing {tg['gap_closed']['target']:.0%} of the gap between the {r['init']}-init baseline "
                     f"({same:.2f}) and the teacher needs {need:.2f}; this student is {need - student:.2f} points "
                     "short.")
    curve = r["curves"]["student"]
    if curve:
        rising = curve[-1][2] >= max(c[2] for c in curve)
        lines.append(f"- The first seed's dev {r['metric']} was {100 * curve[-1][2]:.2f} at its last evaluation"
                     + (" and still rising." if rising else f", {100 * max(c[2] for c in curve):.2f} at its best."))
    lines.append("")
    return lines


def cfg_labels(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text())["id2label"]


def budget(cfg, root: Path) -> dict:
    """What the runs trained on and for how long, read from their configs and results."""
    aug = root / "augment" / RESULTS
    tr = cfg.train
    used = bool(cfg.task.augmented) and aug.is_file()
    return {"teacher_steps": tr.teacher.max_steps, "general_steps": tr.general.max_steps,
            "general_batch": tr.general.batch_size, "corpus_max_lines": cfg.corpus.max_lines,
            "intermediate_steps": tr.task_intermediate.max_steps, "prediction_steps": tr.task_prediction.max_steps,
            "finetune_steps": tr.task_finetune.max_steps, "batch_size": tr.task_prediction.batch_size,
            "max_seq_len": cfg.task.max_seq_len,
            "augmented_rows": json.loads(aug.read_text())["rows"] if used else None,
            "augment_n": cfg.augment.n if used else None}


COLORS = {"pruned": "tab:orange", "general": "tab:green", "random": "tab:gray"}


def plot(r: dict, path: Path) -> None:
    """Left: dev score against batch-32 latency (teacher, student, baselines). Right: dev score against training
    minutes, the student's and its same-init baseline's (the first seed): what each CPU-minute buys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_ms, s_ms = r["latency"]["teacher"]["b32"]["median_ms"], r["latency"]["student"]["b32"]["median_ms"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.5, 4.4))
    ax.scatter([t_ms], [100 * r["teacher"]], s=80, marker="*", color="black", label="teacher (MiniLM-L6)")
    points = [("student (distilled)", r["student_mean"], r["student_sd"], "tab:blue", 0.0)]
    for i, (b, v) in enumerate(r["baselines"].items()):
        points.append((f"baseline, {b} init", v["mean"], v["sd"], COLORS[b], 0.04 * (i + 1) * (-1) ** i))
    for label, m, sd, color, dx in points:  # the baselines share the student's shape: nudged apart to be seen
        ax.errorbar([s_ms * (1 + dx)], [100 * m], yerr=[100 * sd], fmt="o", color=color, capsize=4, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(f"CPU latency, batch 32 x {r['latency_len']} tokens (ms, log scale)")
    ax.set_ylabel(f"dev {r['metric']} (%)")
    ax.set_title(f"{r['title']}: {r['speedup_b32']:.1f}x faster, {100 * r['retention']:.1f}% of the teacher",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    for name, curve in r["curves"].items():
        xs = [c[3] for c in curve if c[3] is not None]
        if xs:
            label = "student (distilled)" if name == "student" else f"baseline, {name.split('_', 1)[1]} init"
            bx.plot(xs, [100 * c[2] for c in curve if c[3] is not None], "o-", ms=3, label=label,
                    color="tab:blue" if name == "student" else COLORS[name.split("_", 1)[1]])
    bx.axhline(100 * r["teacher"], color="black", ls="--", lw=1, label="teacher")
    bx.set_xlabel("training minutes (this machine, the first seed)")
    bx.set_ylabel(f"dev {r['metric']} (%)")
    bx.set_title("What each CPU-minute buys", fontsize=10)
    bx.grid(alpha=0.3)
    bx.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(r: dict) -> str:
    sh, b, tg, rc = r["student_shape"], r["budget"], r["targets"], r["recipe"]
    lat = r["latency"]
    pct = lambda x: f"{100 * x:.2f}"  # noqa: E731

    def seeds(xs):
        return ", ".join(pct(x) for x in xs)

    def spread(mean, sd, n):  # one seed has no spread to show
        return f"{pct(mean)} ± {pct(sd)}" if n > 1 else f"{pct(mean)} (one seed)"

    t1, t32 = lat["teacher"]["b1"]["median_ms"], lat["teacher"]["b32"]["median_ms"]
    s1, s32 = lat["student"]["b1"]["median_ms"], lat["student"]["b32"]["median_ms"]
    transfer = (f", teacher-labelled transfer data `{rc['transfer']}` (first {rc['transfer_limit']} rows)"
                if rc["transfer"] else "")
    phases = " + ".join(rc["phases"])
    rows = [f"| teacher | MiniLM-L6 (6x384) fine-tuned {b['teacher_steps']} steps x 32 | {pct(r['teacher'])} | "
            f"{r['params']['teacher'] / 1e6:.2f}M | {t1:.2f} | {t32:.1f} |",
            f"| student | BERT {sh['num_layers']}x{sh['hidden_size']} (heads {sh['num_heads']}, FFN "
            f"{sh['intermediate_size']}) from {INITS[r['init']]}; task distillation ({phases}){transfer}; seeds "
            f"{', '.join(map(str, r['seeds']))}: {seeds(r['student_seeds'])} | "
            f"{spread(r['student_mean'], r['student_sd'], len(r['seeds']))} | "
            f"{r['params']['student'] / 1e6:.2f}M | {s1:.2f} | {s32:.1f} |"]
    for name, v in r["baselines"].items():
        rows.append(f"| baseline ({name} init) | same shape, from {INITS[name]}, fine-tuned on the gold labels "
                    f"{b['finetune_steps']} steps: {seeds(v['seeds'])} | {spread(v['mean'], v['sd'], len(v['seeds']))} "
                    f"| {r['params']['student'] / 1e6:.2f}M | {s1:.2f} | {s32:.1f} |")
    if r.get("init_dev"):
        rows.append(f"| pruning alone | the student before any training | {pct(r['init_dev'][r['metric']])} | "
                    f"{r['params']['student'] / 1e6:.2f}M | {s1:.2f} | {s32:.1f} |")
    others = [f"| {m} | {pct(v['teacher'])} | {pct(v['student_mean'])} | "
              + " | ".join(pct(v[f"baseline_{x}_mean"]) for x in r["baselines"]) + " |" for m, v in r["others"].items()]

    def verdict(k, fmt):
        v = tg[k]
        return "yes" if v["met"] else f"no, short by {format(v['target'] - v['value'], fmt)}"

    lines = [
        f"# {r['title']} (`{r['command']}`)", "",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, torch {r['machine']['torch']} "
        f"({r['machine']['torch_threads']} threads), no GPU. Whole benchmark: {r['seconds'] / 60:.1f} min.", "",
        f"Data: {r['data']}. Figures: dev {r['metric']}, every model scored again with plain `transformers` "
        f"(matches each run's own figure: **{'yes' if r['plain_transformers_reproduces'] else 'NO'}**).", "",
        "![score vs latency, and vs training minutes](score_latency.png)", "",
        f"| model | what | dev {r['metric']} (%) | params | b1 ms | b32 ms |", "|---|---|---|---|---|---|", *rows, "",
        f"Latency: {r['latency_len']} tokens, median of 30 forwards after 5 warm-up, teacher and best student timed "
        "side by side in one process.", "",
    ]
    if others:
        lines += ["Other metrics (means over seeds, %):", "",
                  "| metric | teacher | student | " + " | ".join(f"baseline ({x})" for x in r["baselines"]) + " |",
                  "|---|---|---|" + "---|" * len(r["baselines"]), *others, ""]
    if r.get("test"):
        tt = r["test"]
        lines += [f"Held-out test ({r['test_file']}, not in ../shared; never used to choose anything): teacher "
                  f"{pct(tt['teacher'])}, student {pct(tt['student'])}, "
                  + ", ".join(f"baseline ({x.split('_', 1)[1]}) {pct(v)}" for x, v in tt.items()
                              if x.startswith("baseline_") and v is not None) + ".", ""]
    lines += [
        "## Targets", "", "| target | wanted | measured | met |", "|---|---|---|---|",
        f"| retention (student / teacher) | ≥ {tg['retention']['target']} | {tg['retention']['value']:.4f} | "
        f"{verdict('retention', '.4f')} |",
        f"| share of the gap between the no-distillation baseline ({r['init']} init) and the teacher closed | ≥ "
        f"{tg['gap_closed']['target']:.2f} | {tg['gap_closed']['value']:.2f} (against the best baseline, "
        f"{r['best_baseline']} init: {r['gap_closed_best']:.2f}) | {verdict('gap_closed', '.2f')} |",
        f"| speed-up at batch 32 | ≥ {tg['speedup_b32']['target']}x | {tg['speedup_b32']['value']:.2f}x (batch 1: "
        f"{r['speedup_b1']:.2f}x) | {verdict('speedup_b32', '.2f')} |", "",
        *missed(r),
        "## Recipe and budget of this run", "",
        f"- teacher: {b['teacher_steps']} steps x 32, inputs of up to {b['max_seq_len']} tokens;",
        f"- student: {INITS[r['init']]} (layer map `{rc['layer_map']}`); task distillation phases "
        f"{phases}: {b['intermediate_steps']} intermediate + {b['prediction_steps']} prediction steps x "
        f"{b['batch_size']} (prediction: `{rc['pred_loss']}` at T={rc['temperature']:g}, hard-label weight "
        f"{rc['hard_label']:g}, lr {rc['prediction_lr']:g}), the best dev checkpoint;",
    ]
    if r.get("transfer"):
        x = r["transfer"]
        lines.append(f"- transfer data: `{x['source']}`, {x['read']:,} rows read, {x['equal_to_a_scored_example']} "
                     f"equal to a dev example dropped, {x['rows']:,} featurised rows labelled once by the teacher "
                     f"(cached), {x['drawn']:,} drawn beside the {x['training_rows']:,} training rows;")
    if b["augmented_rows"]:
        lines.append(f"- augmentation: every training example, {b['augment_n']} new row(s) each: "
                     f"{b['augmented_rows']:,} rows in all;")
    if "general" in r["baselines"] or r["init"] == "general":
        lines.append(f"- general distillation (shared by the span benchmarks): {b['general_steps']} steps x "
                     f"{b['general_batch']} blocks of 128 tokens from `../shared/data/corpus` (first "
                     f"{b['corpus_max_lines']} lines of each file);")
    lines += [
        f"- baselines: {b['finetune_steps']} steps x {b['batch_size']} on the gold labels of the training split, "
        "the best dev checkpoint.", "",
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
