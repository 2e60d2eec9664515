"""Your own data (`make bench-custom`): three datasets from ../shared/data that tinykd reads only through
`task=custom`, as a user would describe them, distilled with the MiniLM teacher.

1. The files, written here in a few lines each (under `<runs>/data/`, never into the repository):
   - SST-2 as CSV (`text,label`, integer labels), from GLUE's SST-2 TSVs;
   - MRPC as JSON Lines (`sentence1`, `sentence2`, `label` a string: "different" / "paraphrase", whose
     sorted order keeps GLUE's class ids 0 / 1), from GLUE's MRPC TSVs;
   - a multi-label set from the SST phrase trees: one example per sentence, its labels (overlapping)
     `positive`, `negative` (the sentence's own sentiment), `has_very_positive_phrase`,
     `has_very_negative_phrase` (some node labelled 4 / 0) and `mixed` (a positive and a negative phrase
     of two words or more), as JSON Lines with a list of label names per row; and the same rows as CSV
     with one 0/1 column per label (`task.label_columns`).
2. The runs: ordinary `python -m tinykd ...` commands with `reuse=true` (a finished run with the same
   config is skipped, an interrupted one resumes): one general distillation shared by every task; then,
   per dataset, `stage=teacher` and `stage=task`. SST-2 and MRPC run twice with identical overrides,
   through the GLUE registry (`task=sst2`, `task=mrpc`) and through the custom files; the label-column
   CSV is scored with `stage=eval`.
3. The checks, in this process: the GLUE-path and custom-path teacher and student dev figures are
   exactly equal; both paths tokenise the same examples in the same order (`tinykd.build.task_split`
   on each run's config); every export, loaded with plain `transformers` (`AutoTokenizer`,
   `AutoModelForSequenceClassification`) and scored on the dev file written in step 1 by a loop that uses
   nothing from tinykd, reproduces its run's dev figures to 1e-6. The script exits with status 1 when
   a check fails, after writing the report.

Writes `reports/custom/results.json`, `REPORT.md` and `commands.log`. Every command runs from the
repository root.

    python -m tinykd.bench.custom [--quick] [--seed 42] [--runs runs/bench_custom] [--out reports/custom]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from tinykd.bench.augment import cpu_name
from tinykd.bench.runner import Runner, compose
from tinykd.config import REPO_ROOT
from tinykd.run import read_results

DATA = Path(os.environ.get("TINYKD_DATA", REPO_ROOT.parent / "shared" / "data"))
TOLERANCE = 1e-6  # a reloaded export's dev figure against its run's
LABELS = ("positive", "negative", "has_very_positive_phrase", "has_very_negative_phrase", "mixed")
LABEL_METRICS = ("micro_f1", "macro_f1", "exact_match")  # tinykd's defaults for multi-label tasks
MRPC_NAMES = ("different", "paraphrase")  # GLUE's 0 and 1; sorted, so the custom path keeps the ids
GLUE_NAMES = {"sst2": ("negative", "positive"), "mrpc": ("not_equivalent", "equivalent")}  # tinykd.tasks
# The student: BERT 3 x 384 (the teacher's width, heads and feed-forward, half its layers), started by the general
# stage from the teacher's embeddings and layers 1, 3, 5, then distilled on the corpus. With budgets of a few hundred
# steps a student from random weights stayed at chance on SST-2 dev (4 x 192, 100 general + 80 + 120 task steps:
# 52.2%); one copied from the teacher starts from what the teacher knows of English.
STUDENT_NAME = "bert_l3_384"
STUDENT = [f"student.name={STUDENT_NAME}", "student.num_layers=3", "student.hidden_size=384", "student.num_heads=12",
           "student.intermediate_size=1536", "student.general_init=teacher_layers"]

# Budgets in optimiser steps (batches of 32 unless `teacher_batch` says otherwise). Full: sized for ~45 minutes on
# 2 CPU cores shared with other work, one torch thread per run (REPORT.md has the measured seconds of each run).
# `weak_teacher`: the task stage distils even when the teacher does not clear tinykd's gate (chance + 0.1 on dev):
# at these budgets the MRPC teacher reaches ~0.77 accuracy against the gate's 0.78 (measured: 240 steps of 16),
# and the multi-label teacher is near its threshold; the gate's figures are reported either way.
# Quick: the same commands with a few steps and a few hundred training examples, to check the benchmark end to end.
BUDGETS = {
    "full": {
        "general": ["train.general.max_steps=40", "train.general.lr=1.0e-4", "train.general.save_every=20",
                    "corpus.max_lines=3000"],
        "sst2": {"train_limit": 20000, "dev_limit": None, "teacher": 120, "teacher_batch": 32, "intermediate": 50,
                 "prediction": 100, "weak_teacher": False},
        "mrpc": {"train_limit": None, "dev_limit": None, "teacher": 240, "teacher_batch": 16, "intermediate": 40,
                 "prediction": 60, "weak_teacher": True},
        "multilabel": {"train_limit": None, "dev_limit": None, "teacher": 200, "teacher_batch": 32, "intermediate": 60,
                       "prediction": 120, "weak_teacher": True},
    },
    "quick": {
        "general": ["train.general.max_steps=8", "train.general.save_every=4", "corpus.max_lines=100"],
        "sst2": {"train_limit": 256, "dev_limit": 200, "teacher": 12, "teacher_batch": 32, "intermediate": 6,
                 "prediction": 6, "weak_teacher": True},
        "mrpc": {"train_limit": 256, "dev_limit": 200, "teacher": 12, "teacher_batch": 32, "intermediate": 6,
                 "prediction": 6, "weak_teacher": True},
        # all of dev: the SST dev trees are grouped by sentiment, so its first rows are not a sample
        "multilabel": {"train_limit": 256, "dev_limit": None, "teacher": 12, "teacher_batch": 32, "intermediate": 6,
                       "prediction": 6, "weak_teacher": True},
    },
}


# ----------------------------------------------------------------------------- the files, as a user writes them


def rel(path: Path) -> str:
    """`path` as the commands name it: relative to the repository root (where they run) when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def write_if_changed(path: Path, text: str) -> None:
    """Write `text` unless the file already holds it: an unchanged file keeps its modification time, which
    tinykd's tokenised-data caches are keyed on, so a rerun of the benchmark reuses them."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def read_glue(path: Path) -> list[dict]:
    # GLUE TSVs: tab-separated, no quoting (a quote is text); MRPC's train.tsv starts with a byte-order mark
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def to_csv(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def sst2_csv(glue_dir: Path, out: Path) -> dict:
    """SST-2 as CSV: text,label with integer labels (the text without GLUE's trailing space)."""
    for split in ("train", "dev"):
        rows = [{"text": r["sentence"].strip(), "label": int(r["label"])} for r in read_glue(glue_dir / f"{split}.tsv")]
        write_if_changed(out / f"{split}.csv", to_csv(rows, ["text", "label"]))
    return {split: out / f"{split}.csv" for split in ("train", "dev")}


def mrpc_jsonl(glue_dir: Path, out: Path) -> dict:
    """MRPC as JSON Lines: sentence1, sentence2 and the label as a word."""
    for split in ("train", "dev"):
        rows = [{"sentence1": r["#1 String"].strip(), "sentence2": r["#2 String"].strip(),
                 "label": MRPC_NAMES[int(r["Quality"])]} for r in read_glue(glue_dir / f"{split}.tsv")]
        write_if_changed(out / f"{split}.jsonl", to_jsonl(rows))
    return {split: out / f"{split}.jsonl" for split in ("train", "dev")}


PTB = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def parse_tree(line: str) -> list[tuple[int, list[str]]]:
    """Every node of one SST tree, `(4 (2 a) (4 (3 lovely) (2 film)))`, root first, as (its sentiment 0-4,
    its leaves, unescaped as in ../shared/data/README.md: -LRB- -> '(' ..., '\\/' -> '/', '\\*' -> '*')."""
    # split on plain spaces only: a leaf may hold a non-breaking space ("2 1/2"), which str.split() would cut
    toks = [t for t in line.replace("(", " ( ").replace(")", " ) ").split(" ") if t]
    nodes: list[tuple[int, list[str]]] = []
    pos = 0

    def node() -> list[str]:
        nonlocal pos
        if toks[pos] != "(":
            raise ValueError(f"expected '(' at token {pos} of {line[:60]!r}")
        label, pos = int(toks[pos + 1]), pos + 2
        index = len(nodes)
        nodes.append((label, []))  # placeholder: root first, children after
        if toks[pos] == "(":
            leaves = []
            while toks[pos] == "(":
                leaves += node()
        else:
            leaves, pos = [PTB.get(toks[pos], toks[pos]).replace("\\/", "/").replace("\\*", "*")], pos + 1
        if toks[pos] != ")":
            raise ValueError(f"expected ')' at token {pos} of {line[:60]!r}")
        pos += 1
        nodes[index] = (label, leaves)
        return leaves

    node()
    if pos != len(toks):
        raise ValueError(f"text after the tree's end in {line[:60]!r}")
    return nodes


def tree_labels(nodes: list[tuple[int, list[str]]]) -> list[str]:
    """The multi-label classes of one sentence (its tree's nodes, root first), in LABELS order."""
    root = nodes[0][0]
    phrases = [label for label, leaves in nodes if len(leaves) >= 2]
    has = {
        "positive": root >= 3,
        "negative": root <= 1,
        "has_very_positive_phrase": any(label == 4 for label, _ in nodes),
        "has_very_negative_phrase": any(label == 0 for label, _ in nodes),
        "mixed": any(x >= 3 for x in phrases) and any(x <= 1 for x in phrases),
    }
    return [name for name in LABELS if has[name]]


def sst_multilabel(trees_dir: Path, out: Path) -> dict:
    """One example per SST sentence (train.txt, dev.txt): JSON Lines with a list of labels per row, and CSV
    with one 0/1 column per label. Returns the files and each split's label counts."""
    counts = {}
    for split in ("train", "dev"):
        lines = [x for x in (trees_dir / f"{split}.txt").read_text(encoding="utf-8").splitlines() if x.strip()]
        rows = []
        for line in lines:
            nodes = parse_tree(line)
            rows.append({"text": " ".join(nodes[0][1]), "labels": tree_labels(nodes)})
        write_if_changed(out / f"{split}.jsonl", to_jsonl(rows))
        columns = [{"text": r["text"], **{n: int(n in r["labels"]) for n in LABELS}} for r in rows]
        write_if_changed(out / f"{split}_columns.csv", to_csv(columns, ["text", *LABELS]))
        c = Counter(n for r in rows for n in r["labels"])
        counts[split] = {"examples": len(rows), **{n: c[n] for n in LABELS},
                         "no_label": sum(not r["labels"] for r in rows),
                         "labels_per_example": sum(len(r["labels"]) for r in rows) / len(rows)}
    files = {split: out / f"{split}.jsonl" for split in ("train", "dev")}
    files |= {f"{split}_columns": out / f"{split}_columns.csv" for split in ("train", "dev")}
    return {"files": files, "counts": counts}


# ----------------------------------------------------------------------------- the runs


def task_overrides(files: dict, budgets: dict) -> dict[str, list[str]]:
    """Each task run's task.* overrides: GLUE and custom paths of a dataset differ only in how the data
    is named (and, MRPC, in stating GLUE's metrics, which the custom path would otherwise choose by
    problem type: accuracy, macro_f1)."""

    def limits(b):
        return [f"task.{k}={b[k]}" for k in ("train_limit", "dev_limit") if b[k] is not None]

    sst2 = ["task.max_seq_len=64", *limits(budgets["sst2"])]
    mrpc = ["task.max_seq_len=128", *limits(budgets["mrpc"])]
    s, m, ml = files["sst2"], files["mrpc"], files["multilabel"]["files"]
    return {
        "sst2_glue": ["task=sst2", *sst2],
        "sst2_csv": ["task=custom", "task.name=sst2_csv", f"task.train={rel(s['train'])}", f"task.dev={rel(s['dev'])}",
                     "task.text_columns=[text]", "task.label_column=label", *sst2],
        "mrpc_glue": ["task=mrpc", *mrpc],
        "mrpc_jsonl": ["task=custom", "task.name=mrpc_jsonl", f"task.train={rel(m['train'])}", f"task.dev={rel(m['dev'])}",
                       "task.text_columns=[sentence1,sentence2]", "task.label_column=label", "task.metrics=[f1,accuracy]",
                       *mrpc],
        "sst_multilabel": ["task=custom", "task.name=sst_multilabel", f"task.train={rel(ml['train'])}",
                           f"task.dev={rel(ml['dev'])}", "task.text_columns=[text]", "task.label_column=labels",
                           "task.problem_type=multi_label_classification", f"task.labels=[{','.join(LABELS)}]",
                           "task.max_seq_len=64", *limits(budgets["multilabel"])],
    }


def family(name: str) -> str:
    """A run's dataset (its budgets): sst2, mrpc or multilabel."""
    return "multilabel" if name == "sst_multilabel" else name.split("_")[0]


def compose_name(name: str) -> str:
    """The task.name of a run (its run directories are named by it)."""
    return {"sst2_glue": "sst2", "mrpc_glue": "mrpc"}.get(name, name)


def phase_overrides(b: dict) -> tuple[list[str], list[str]]:
    """(teacher stage, task stage) budget overrides of one dataset."""
    teacher = [f"train.teacher.max_steps={b['teacher']}", f"train.teacher.batch_size={b['teacher_batch']}",
               f"train.teacher.save_every={max(1, b['teacher'] // 3)}"]
    every = max(1, b["prediction"] // 3)  # the prediction phase is scored on dev three times; the best is kept
    task = [f"train.task_intermediate.max_steps={b['intermediate']}",
            f"train.task_intermediate.save_every={max(1, b['intermediate'] // 2)}",
            f"train.task_prediction.max_steps={b['prediction']}", f"train.task_prediction.eval_every={every}",
            f"train.task_prediction.save_every={every}"]
    if b["weak_teacher"]:
        task.append("distill.allow_weak_teacher=true")
    return teacher, task


# ----------------------------------------------------------------------------- checks


def tokenised(overrides: list[str], tokenizer_dir: str) -> dict[str, dict[str, list]]:
    """The train and dev examples a task run trained and scored on, as tinykd tokenises them (its cache)."""
    from tinykd import build, models

    cfg = compose(overrides)
    spec = build.task_spec(cfg)
    tokenizer = models.load_tokenizer(tokenizer_dir)
    out = {}
    for split in ("train", "dev"):
        ds = build.task_split(cfg, spec, tokenizer, split)
        out[split] = {c: ds[c] for c in ds.column_names}
    return out


def same_weights(dir_a: str, dir_b: str) -> float:
    """The largest absolute difference between two exports' weights (inf: different tensors)."""
    from safetensors.torch import load_file

    a, b = load_file(Path(dir_a) / "model.safetensors"), load_file(Path(dir_b) / "model.safetensors")
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@torch.inference_mode()
def plain_scores(model_dir: str, texts: list[tuple], labels: list, *, multi_label: bool, max_len: int,
                 positive: str | None = None, batch_size: int = 64) -> dict:
    """Dev scores with plain transformers only, what a user who downloads the directory gets: the export's own
    tokenizer and label names (`id2label`). `labels`: each row's class name (single-label) or names (multi-label)."""
    from sklearn.metrics import f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    logits = []
    for i in range(0, len(texts), batch_size):
        chunk = list(zip(*texts[i : i + batch_size]))  # one tuple per text column
        enc = tok(*chunk, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        logits.append(model(**enc).logits)
    logits = torch.cat(logits).numpy()
    if multi_label:
        pred = (logits > 0).astype(int)
        gold = np.array([[int(n in row) for n in names] for row in labels])
        return {"micro_f1": float(f1_score(gold, pred, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
                "exact_match": float((pred == gold).all(1).mean()), "id2label": names}
    pred = [names[i] for i in logits.argmax(-1)]
    out = {"accuracy": float(np.mean([p == g for p, g in zip(pred, labels)])), "id2label": names}
    if positive is not None:
        out["f1"] = float(f1_score([g == positive for g in labels], [p == positive for p in pred]))
    return out


def dev_rows(name: str, files: dict, dev_limit: int | None) -> tuple[list[tuple], list, str | None]:
    """The dev file written in step 1, read back: (texts, each row's label as a name, the positive class for F1)."""
    if name.startswith("sst2"):
        with open(files["sst2"]["dev"], newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        texts, labels, positive = [(r["text"],) for r in rows], [r["label"] for r in rows], None
    elif name.startswith("mrpc"):
        rows = [json.loads(x) for x in files["mrpc"]["dev"].read_text(encoding="utf-8").splitlines()]
        texts, labels, positive = [(r["sentence1"], r["sentence2"]) for r in rows], [r["label"] for r in rows], "paraphrase"
    else:
        rows = [json.loads(x) for x in files["multilabel"]["files"]["dev"].read_text(encoding="utf-8").splitlines()]
        texts, labels, positive = [(r["text"],) for r in rows], [r["labels"] for r in rows], None
    n = len(rows) if dev_limit is None else dev_limit
    if name.endswith("_glue"):  # the GLUE path's exports name the classes as tinykd's registry does
        glue = GLUE_NAMES[family(name)]
        own = ("0", "1") if name.startswith("sst2") else MRPC_NAMES  # the file's names, in GLUE's class-id order
        labels = [glue[own.index(x)] for x in labels]
        positive = positive and glue[1]
    return texts[:n], labels[:n], positive


# ----------------------------------------------------------------------------- the benchmark


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few steps and a few hundred examples per run (~8 min)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--runs", default=None, help="default: runs/bench_custom (--quick: runs/bench_custom_quick)")
    ap.add_argument("--out", default=None, help="default: reports/custom (--quick: <runs>/report)")
    ap.add_argument("overrides", nargs="*", help="extra tinykd overrides for every run")
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    runs_base = Path(os.environ.get("TINYKD_RUNS", REPO_ROOT / "runs"))
    root = Path(args.runs or runs_base / ("bench_custom_quick" if args.quick else "bench_custom")).resolve()
    out_dir = Path(args.out or (root / "report" if args.quick else REPO_ROOT / "reports" / "custom")).resolve()
    os.chdir(REPO_ROOT)  # the commands name files relative to the repository root, where they run
    threads = [o.split("=", 1)[1] for o in args.overrides if o.startswith("engine.num_threads=")]
    if threads:  # the reloads and checks here run with the runs' thread count
        torch.set_num_threads(int(threads[-1]))
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "commands.log"
    tinykd = Runner("bench-custom", log)
    start = time.perf_counter()
    budgets = BUDGETS[mode]
    seconds: dict[str, float] = {}

    # --- 1: the files
    t0 = time.perf_counter()
    files = {"sst2": sst2_csv(DATA / "glue" / "SST-2", root / "data" / "sst2"),
             "mrpc": mrpc_jsonl(DATA / "glue" / "MRPC", root / "data" / "mrpc"),
             "multilabel": sst_multilabel(DATA / "sst" / "trees", root / "data" / "sst_multilabel")}
    seconds["data"] = time.perf_counter() - t0

    # --- 2: the runs; one general distillation shared by every task run
    common = [f"paths.runs={rel(root)}", "teacher=minilm_l6", "logger=none", f"seed={args.seed}", *args.overrides]
    seconds["general"] = tinykd("stage=general", *common, *STUDENT, *budgets["general"])
    tasks = task_overrides(files, budgets)
    task_cfg: dict[str, list[str]] = {}
    for name, task in tasks.items():
        teacher_b, task_b = phase_overrides(budgets[family(name)])
        seconds[f"{name}/teacher"] = tinykd("stage=teacher", *common, *task, *teacher_b)
        if name == "sst_multilabel":  # the gate scores all of dev: its first rows are the positive sentences
            task_b = [*task_b, f"distill.gate_examples={files['multilabel']['counts']['dev']['examples']}"]
        task_cfg[name] = ["stage=task", *common, *task, *STUDENT, *task_b]
        seconds[f"{name}/task"] = tinykd(*task_cfg[name])
    results = {name: {"teacher": read_results(root / "teacher" / f"{compose_name(name)}-minilm_l6"),
                      "task": read_results(root / "task" / f"{compose_name(name)}-minilm_l6-{STUDENT_NAME}")}
               for name in tasks}

    # the multi-label exports scored on the label-column CSV (one 0/1 column per label) by stage=eval
    ml = files["multilabel"]["files"]
    columns_task = ["task=custom", "task.name=sst_multilabel_columns", f"task.train={rel(ml['train_columns'])}",
                    f"task.dev={rel(ml['dev_columns'])}", "task.text_columns=[text]",
                    f"task.label_columns=[{','.join(LABELS)}]", "task.problem_type=multi_label_classification",
                    "task.max_seq_len=64"]
    if budgets["multilabel"]["dev_limit"] is not None:
        columns_task.append(f"task.dev_limit={budgets['multilabel']['dev_limit']}")
    columns_eval = {}
    for who in ("teacher", "task"):
        export = results["sst_multilabel"][who]["export"]
        d = root / "eval" / f"sst_multilabel_columns-{'teacher' if who == 'teacher' else 'student'}"
        seconds[f"sst_multilabel_columns/{d.name.split('-')[1]}"] = tinykd(
            "stage=eval", *common, *columns_task, f"model={rel(Path(export))}", f"runs.eval={rel(d)}")
        columns_eval["teacher" if who == "teacher" else "student"] = read_results(d)

    # --- 3: the checks
    checks: list[dict] = []

    def check(what: str, a, b, tol: float = 0.0) -> bool:
        ok = a == b if tol == 0 else (a is not None and b is not None and abs(a - b) <= tol)
        checks.append({"check": what, "a": a, "b": b, "tolerance": tol, "ok": ok})
        print(f"[bench-custom] {'ok  ' if ok else 'FAIL'} {what}: {a} vs {b}")
        return ok

    pairs = {"sst2": ("sst2_glue", "sst2_csv", ("accuracy",)), "mrpc": ("mrpc_glue", "mrpc_jsonl", ("f1", "accuracy"))}
    identical = {}
    for fam, (glue, custom, metrics) in pairs.items():
        for m in metrics:
            check(f"{fam} teacher dev {m}: GLUE path = custom path",
                  results[glue]["teacher"]["dev"][m], results[custom]["teacher"]["dev"][m])
            check(f"{fam} teacher dev {m} in the task run: GLUE path = custom path",
                  results[glue]["task"]["teacher_dev"][m], results[custom]["task"]["teacher_dev"][m])
            check(f"{fam} student dev {m}: GLUE path = custom path",
                  results[glue]["task"]["dev"][m], results[custom]["task"]["dev"][m])
        check(f"{fam} student best step: GLUE path = custom path",
              results[glue]["task"]["best_step"], results[custom]["task"]["best_step"])
        teacher_dir = results[glue]["teacher"]["export"]
        a, b = tokenised(task_cfg[glue], teacher_dir), tokenised(task_cfg[custom], teacher_dir)
        identical[fam] = {"examples": {s: len(a[s]["labels"]) for s in a}}
        for split in ("train", "dev"):
            same = a[split] == b[split]
            checks.append({"check": f"{fam} tokenised {split} examples (input_ids, token_type_ids, attention_mask, "
                                    "labels, in order): GLUE path = custom path",
                           "a": len(a[split]["labels"]), "b": len(b[split]["labels"]), "tolerance": 0, "ok": same})
            print(f"[bench-custom] {'ok  ' if same else 'FAIL'} {fam} tokenised {split}: "
                  f"{len(a[split]['labels'])} vs {len(b[split]['labels'])} examples")
            identical[fam][f"tokenised_{split}"] = same
        for who, key in (("teacher", "teacher"), ("student", "task")):
            identical[fam][f"{who}_weights_max_abs_diff"] = same_weights(results[glue][key]["export"],
                                                                        results[custom][key]["export"])

    plain = {}
    for name in tasks:
        texts, labels, positive = dev_rows(name, files, budgets[family(name)]["dev_limit"])
        multi = name == "sst_multilabel"
        max_len = 128 if family(name) == "mrpc" else 64
        for who, key, recorded in (("teacher", "teacher", results[name]["teacher"]["dev"]),
                                   ("student", "task", results[name]["task"]["dev"])):
            got = plain_scores(results[name][key]["export"], texts, labels, multi_label=multi, max_len=max_len,
                               positive=positive)
            plain[f"{name}/{who}"] = got
            for m in ([*LABEL_METRICS] if multi else ["accuracy", *(["f1"] if positive else [])]):
                check(f"{name} {who} dev {m}: plain transformers = the run's", got[m], recorded[m], TOLERANCE)
    for who in ("teacher", "student"):
        for m in LABEL_METRICS:
            check(f"sst_multilabel {who} dev {m}: label-column CSV (stage=eval) = list-of-labels JSON Lines",
                  columns_eval[who]["dev"][m], plain[f"sst_multilabel/{who}"][m], TOLERANCE)

    # --- 4: the report
    t_ml, s_ml = results["sst_multilabel"]["task"]["teacher_dev"], results["sst_multilabel"]["task"]["dev"]
    result = {
        "mode": mode,
        "ok": all(c["ok"] for c in checks),
        "sst2": {p: {"teacher_dev": results[n]["teacher"]["dev"], "student_dev": results[n]["task"]["dev"],
                     "teacher_dev_in_task_run": results[n]["task"]["teacher_dev"],
                     "student_best_step": results[n]["task"]["best_step"],
                     "teacher_export": rel(Path(results[n]["teacher"]["export"])),
                     "student_export": rel(Path(results[n]["task"]["export"]))}
                 for p, n in (("glue", "sst2_glue"), ("custom", "sst2_csv"))},
        "mrpc": {p: {"teacher_dev": results[n]["teacher"]["dev"], "student_dev": results[n]["task"]["dev"],
                     "teacher_dev_in_task_run": results[n]["task"]["teacher_dev"],
                     "student_best_step": results[n]["task"]["best_step"],
                     "teacher_export": rel(Path(results[n]["teacher"]["export"])),
                     "student_export": rel(Path(results[n]["task"]["export"]))}
                 for p, n in (("glue", "mrpc_glue"), ("custom", "mrpc_jsonl"))},
        "identical": identical,
        "multilabel": {
            "labels": list(LABELS), "label_counts": files["multilabel"]["counts"],
            "teacher_dev": results["sst_multilabel"]["teacher"]["dev"], "teacher_dev_in_task_run": t_ml,
            "student_dev": s_ml, "student_best_step": results["sst_multilabel"]["task"]["best_step"],
            "retention_micro_f1": s_ml["micro_f1"] / t_ml["micro_f1"],
            "teacher_gate": results["sst_multilabel"]["task"]["teacher_gate"],
            "label_columns_eval": {w: columns_eval[w]["dev"] for w in columns_eval},
            "teacher_export": rel(Path(results["sst_multilabel"]["teacher"]["export"])),
            "student_export": rel(Path(results["sst_multilabel"]["task"]["export"])),
        },
        "teacher_gates": {n: results[n]["task"]["teacher_gate"] for n in tasks},
        "plain_transformers": plain,
        "checks": checks,
        "files": {k: {s: rel(p) for s, p in (v["files"] if "files" in v else v).items()} for k, v in files.items()},
        "budgets": {k: v for k, v in budgets.items()},
        "student": STUDENT,
        "overrides": args.overrides,
        "seed": args.seed,
        "commands": tinykd.commands,
        "seconds": time.perf_counter() - start,
        "step_seconds": seconds,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "command": "make bench-custom" if not args.quick else "python -m tinykd.bench.custom --quick",
    }
    (out_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "REPORT.md").write_text(report(result))
    failed = [c["check"] for c in checks if not c["ok"]]
    print(f"[bench-custom] {len(checks) - len(failed)}/{len(checks)} checks passed; {result['seconds'] / 60:.1f} min; "
          f"wrote {out_dir / 'results.json'}, {out_dir / 'REPORT.md'}, {log}")
    if failed:
        raise SystemExit("[bench-custom] failed checks:\n  " + "\n  ".join(failed))
    return result


def report(r: dict) -> str:
    def pct(x):
        return f"{100 * x:.2f}"

    def yes(x):
        return "yes" if x else "**NO**"

    def rows_used(x: dict) -> str:
        return "all" if x["train_limit"] is None else f"first {x['train_limit']:,}"

    def pair_table(fam: str, metrics: tuple[str, ...]) -> list[str]:
        g, c, same = r[fam]["glue"], r[fam]["custom"], r["identical"][fam]
        p = r["plain_transformers"]
        custom_name = {"sst2": "sst2_csv", "mrpc": "mrpc_jsonl"}[fam]
        rows = ["| model | metric | GLUE path | custom path | equal | plain transformers (GLUE / custom) |",
                "|---|---|---|---|---|---|"]
        for who, key in (("teacher", "teacher_dev"), ("student", "student_dev")):
            for m in metrics:
                a, b = g[key][m], c[key][m]
                rows.append(f"| {who} | {m} | {pct(a)} | {pct(b)} | {yes(a == b)} | "
                            f"{pct(p[f'{fam}_glue/{who}'][m])} / {pct(p[f'{custom_name}/{who}'][m])} |")
        rows += ["", f"Tokenised examples (input ids, token types, attention masks, labels, in order) identical: train "
                 f"({same['examples']['train']:,}) {yes(same['tokenised_train'])}, dev ({same['examples']['dev']:,}) "
                 f"{yes(same['tokenised_dev'])}. Best student step: {g['student_best_step']} / {c['student_best_step']}. "
                 f"Largest weight difference between the two paths' exports: teacher "
                 f"{same['teacher_weights_max_abs_diff']:.3g}, student {same['student_weights_max_abs_diff']:.3g}."]
        return rows

    ml = r["multilabel"]
    counts = ml["label_counts"]
    b = r["budgets"]
    lines = [
        "# Your own data (`make bench-custom`)" + (" — quick mode" if r["mode"] == "quick" else ""), "",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, torch {r['machine']['torch']} "
        f"({r['machine']['torch_threads']} thread{'' if r['machine']['torch_threads'] == 1 else 's'} per process), no GPU. Whole benchmark: {r['seconds'] / 60:.1f} min. "
        f"All checks passed: **{'yes' if r['ok'] else 'NO'}** ({sum(c['ok'] for c in r['checks'])}/{len(r['checks'])}).",
        "",
        "Three datasets from `../shared/data`, read by tinykd only through `task=custom` (files written by "
        "`tinykd/bench/custom.py` under `" + str(Path(r['files']['sst2']['train']).parents[1]) + "`), distilled from the "
        "offline MiniLM-L6 teacher (6x384) into one BERT student of 3 layers x 384 (12 heads, feed-forward 1536; "
        "general distillation starts it from the teacher's embeddings and layers 1, 3, 5), "
        f"seed {r['seed']}. Dev figures in %. \"Plain transformers\": each export loaded with `AutoTokenizer` and "
        "`AutoModelForSequenceClassification` and scored on the dev file written here by a loop with no tinykd code "
        "(argmax, mapped through the export's `id2label`; multi-label: logits > 0, scikit-learn's F1); each equals its "
        f"run's figure to {TOLERANCE:g}.",
        "", "## SST-2: GLUE path (`task=sst2`) vs CSV (`task=custom`, `text,label`)", "",
        *pair_table("sst2", ("accuracy",)),
        "", "## MRPC: GLUE path (`task=mrpc`) vs JSON Lines (`task=custom`, `sentence1`, `sentence2`, "
        "`label` as \"different\" / \"paraphrase\")", "",
        *pair_table("mrpc", ("f1", "accuracy")),
        "",
        "The custom run states GLUE's metrics (`task.metrics=[f1,accuracy]`): by default a custom single-label task "
        "is scored with accuracy and macro-F1 and its checkpoints selected on accuracy, where GLUE's MRPC selects on F1.",
        "", "## Multi-label: SST sentences with overlapping labels from their phrase trees", "",
        "One example per sentence of `../shared/data/sst/trees` (train 8,544, dev 1,101): the leaves joined by spaces "
        "(-LRB- etc. unescaped), with every label that holds:", "",
        "| label | rule | train | dev |", "|---|---|---|---|",
        *[f"| `{n}` | {rule} | {counts['train'][n]:,} ({pct(counts['train'][n] / counts['train']['examples'])}%) | "
          f"{counts['dev'][n]:,} ({pct(counts['dev'][n] / counts['dev']['examples'])}%) |"
          for n, rule in zip(LABELS, ("root 3 or 4", "root 0 or 1", "some node labelled 4", "some node labelled 0",
                                      "a phrase of 2+ words labelled 3/4 and one labelled 0/1"))],
        f"| (none) | neutral root, no strong phrase, not mixed | {counts['train']['no_label']:,} | "
        f"{counts['dev']['no_label']:,} |",
        "",
        f"Labels per sentence: {counts['train']['labels_per_example']:.2f} (train), "
        f"{counts['dev']['labels_per_example']:.2f} (dev).", "",
        "Why these labels: the root's sentiment gives the sentence's own polarity (a neutral sentence has neither "
        "`positive` nor `negative`), while the phrase-level flags record what the sentence contains whatever its overall "
        "verdict: a very positive or very negative phrase (SST's extreme labels, often a single word such as "
        "\"masterpiece\" or \"worst\"), and `mixed` for sentences that weigh a positive against a negative phrase "
        "(\"a charming but slow film\"), the cases one polarity label cannot describe. They overlap by construction "
        "(a `positive` sentence can be `mixed` and hold a very negative phrase) and every one is read off the human "
        "annotations of the trees, so the set is real labelled text rather than a synthetic split.",
        "",
        "| model | micro-F1 | macro-F1 | exact match | plain transformers micro-F1 | label-column CSV micro-F1 |",
        "|---|---|---|---|---|---|",
        *[f"| {who} | {pct(d['micro_f1'])} | {pct(d['macro_f1'])} | {pct(d['exact_match'])} | "
          f"{pct(r['plain_transformers'][f'sst_multilabel/{who}']['micro_f1'])} | "
          f"{pct(ml['label_columns_eval'][who]['micro_f1'])} |"
          for who, d in (("teacher", ml["teacher_dev"]), ("student", ml["student_dev"]))],
        "",
        f"Retention (student / teacher micro-F1): **{ml['retention_micro_f1']:.3f}**. Teacher gate (micro-F1 on the first "
        f"{ml['teacher_gate']['examples']} dev sentences against the better constant predictor, + 0.1): "
        f"{ml['teacher_gate']['score']:.4f} vs threshold {ml['teacher_gate']['threshold']:.4f}, "
        f"{'passed' if ml['teacher_gate']['passed'] else 'not passed'}. The label-column CSV (one 0/1 column per label, "
        "`task.label_columns=[...]`) is scored by `stage=eval` on the same exports and gives the same figures.",
        "", "## Budgets (optimiser steps)", "",
        "| dataset | training rows | teacher | task: intermediate | task: prediction (dev-scored 3 times, best kept) |",
        "|---|---|---|---|---|",
        *[f"| {fam} | {rows_used(b[fam])} | {b[fam]['teacher']} x {b[fam]['teacher_batch']} | "
          f"{b[fam]['intermediate']} x 32 | {b[fam]['prediction']} x 32 |" for fam in ("sst2", "mrpc", "multilabel")],
        "",
        f"General distillation, shared by every task run: {' '.join(b['general'])} (blocks of 128 tokens from "
        "`../shared/data/corpus`, batches of 32). Sequence length 64 (SST-2, multi-label) and 128 (MRPC, as GLUE's "
        "task config). Extra overrides for every run: " + (", ".join(f"`{o}`" for o in r["overrides"]) or "none") + ".",
        "", "## Teacher gate", "",
        "tinykd's task stage first scores the teacher on dev (the first `distill.gate_examples`, 500 by default; all "
        "1,101 for the multi-label set, whose dev trees are grouped by sentiment) and refuses one that does not beat "
        "chance by 0.1. At these budgets the MRPC and multi-label teachers may fall short, so their task runs set "
        "`distill.allow_weak_teacher=true` (a warning instead of a refusal); the figures:", "",
        "| run | metric | teacher | chance | threshold | passed | weak teacher allowed |", "|---|---|---|---|---|---|---|",
        *[f"| {n} | {g['metric']} | {g['score']:.4f} | {g['chance']:.4f} | {g['threshold']:.4f} | "
          f"{'yes' if g['passed'] else 'no'} | {'yes' if b[family(n)]['weak_teacher'] else 'no'} |"
          for n, g in r["teacher_gates"].items()],
        "", "## Seconds", "",
        "| step | seconds |", "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in r["step_seconds"].items()],
        f"| **total** | **{r['seconds']:.0f}** |",
        "", "## Commands", "",
        "Run from the repository root in this order (each with `reuse=true`; `python` is the venv's); output in "
        "`commands.log`.", "",
        "```", *r["commands"], "```", "",
    ]
    failed = [c for c in r["checks"] if not c["ok"]]
    if failed:
        lines += ["## Failed checks", "", *[f"- {c['check']}: {c['a']} vs {c['b']}" for c in failed], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
