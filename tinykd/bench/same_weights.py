"""Does a code change leave what tinykd computes alone? Every training path on `debug=smoke`, run by one
checkout, its exported weights and written datasets hashed; two such records compared.

    git worktree add /tmp/before <rev>                 # the code before the change
    python -m tinykd.bench.same_weights --code /tmp/before --out before.json
    python -m tinykd.bench.same_weights --out after.json  # this checkout
    python -m tinykd.bench.same_weights --compare before.json after.json

Each record holds the sha256 of every `*.safetensors` and `*.arrow` file the runs wrote (exports, augmented data,
featurised splits and teacher outputs in the cache), every run's dev scores, and the names of the cache entries
(`paths.cache`/<kind>/<key>: equal names mean a cache the other code wrote is read, not rebuilt). Teacher outputs
are keyed by the teacher's files, modification times included, so their keys differ between any two records: those
are compared by content alone. Both records must be
made in the same `--work` folder (the default), because run paths are part of some cache keys. The comparison exits
1 on any difference and prints each.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tinykd.config import REPO_ROOT

# (label, overrides): every training path; later runs read earlier ones' run directories
RUNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("teacher", ("stage=teacher", "task=sst2")),
    ("general TinyBERT", ("stage=general",)),
    ("general MiniLM", ("stage=general", "distill=minilm", "runs.general=${paths.runs}/general/minilm")),
    ("general DistilBERT", ("stage=general", "distill=distilbert", "student=distilbert")),
    ("mlm_head", ("stage=mlm_head",)),
    ("task intermediate+prediction", ("stage=task", "task=sst2")),
    ("task finetune", ("stage=task", "task=sst2", "stage.phases=[finetune]", "runs.task=${paths.runs}/task/finetune")),
    ("task BiLSTM", ("stage=task", "task=sst2", "student=bilstm")),
    ("task pruned init", ("stage=task", "task=sst2", "student.init=pruned", "distill.layer_map=kept",
                          "runs.task=${paths.runs}/task/pruned")),
    ("task pruned + MiniLM relations", ("stage=task", "task=sst2", "student.init=pruned", "distill.layer_map=kept",
                                        "distill=minilm", "distill.weights.hidden=1",
                                        "runs.task=${paths.runs}/task/pruned-minilm")),
    ("augment sst2", ("stage=augment", "task=sst2")),
    ("token classification (wnut17)", ("stage=pipeline", "task=wnut17")),
    ("token classification (upos)", ("stage=pipeline", "task=upos")),
    ("augment wnut17", ("stage=augment", "task=wnut17")),
    ("task on augmented sst2", ("stage=task", "task=sst2", "task.augmented=${runs.augment}/data",
                                "runs.task=${paths.runs}/task/augmented-sst2")),
    ("task on augmented wnut17", ("stage=task", "task=wnut17", "task.augmented=${runs.augment}/data",
                                  "runs.task=${paths.runs}/task/augmented-wnut17")),
    ("QA (squad)", ("stage=pipeline", "task=squad")),
    ("your own CSV", ("stage=pipeline", "task=custom", "task.name=own_csv", "task.train={data}/train.csv",
                      "task.dev={data}/dev.csv")),
    ("your own JSON Lines, multi-label", ("stage=pipeline", "task=custom", "task.name=own_multi",
                                          "task.train={data}/train.jsonl", "task.dev={data}/dev.jsonl",
                                          "task.problem_type=multi_label_classification")),
)


def own_files(folder: Path, glue_dir: Path) -> None:
    """A CSV task and a multi-label JSON Lines task from SST-2's first rows, with fixed modification times."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, source, n in (("train", "train.tsv", 300), ("dev", "dev.tsv", 100)):
        rows = [line.split("\t") for line in (glue_dir / "SST-2" / source).read_text().splitlines()[1:n + 1]]
        with open(folder / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows([(text, "positive" if label == "1" else "negative") for text, label in rows])
        with open(folder / f"{split}.jsonl", "w") as f:
            for i, (text, label) in enumerate(rows):
                tags = (["pos"] if label == "1" else ["neg"]) + (["long"] if len(text.split()) > 8 else [])
                f.write(json.dumps({"text": text, "label": tags}) + "\n")
    for p in folder.iterdir():
        os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkout_view(code: Path, work: Path) -> Path:
    """A copy of the checkout's package, stage scripts and configs that runs as itself whatever is installed: its
    stages/ also as tinykd/stages (how they install), so that an editable install of another checkout is not used."""
    view = work / "code"
    shutil.rmtree(view, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("tinykd", "stages", "conf"):
        shutil.copytree(code / part, view / part, ignore=ignore)
    shutil.copytree(code / "stages", view / "tinykd" / "stages", ignore=ignore, dirs_exist_ok=True)
    return view


def record(code: Path, work: Path, cache: Path) -> dict:
    code = checkout_view(code, work)
    runs = work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    data = work / "own"
    shared = Path(os.environ.get("TINYKD_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()
    own_files(data, shared / "glue")
    env = dict(os.environ, TINYKD_DATA=str(shared), TINYKD_RUNS=str(runs), TINYKD_CACHE=str(cache), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(code))
    out: dict = {"code": str(code), "runs": {}, "files": {}}
    for label, overrides in RUNS:
        args = [a.replace("{data}", str(data)) for a in overrides]
        t = time.time()
        proc = subprocess.run([sys.executable, "-m", "tinykd", "debug=smoke", "progress=false", *args], cwd=code,
                              env=env, capture_output=True, text=True)
        print(f"[same_weights] {label}: exit {proc.returncode} in {time.time() - t:.0f} s", flush=True)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            raise SystemExit(f"{label} failed")
        out["runs"][label] = args
    for p in sorted(runs.rglob("*")):
        if p.is_file() and p.suffix in (".safetensors", ".arrow") and not DATASETS_OWN.fullmatch(p.name):
            out["files"][str(p.relative_to(runs))] = sha256(p)
        elif p.name == "results.json":
            res = json.loads(p.read_text())
            out["files"][str(p.relative_to(runs))] = {k: res.get(k) for k in ("dev", "teacher_dev", "test")}
    # every cache entry (featurised splits, teacher outputs, tiny models) by its key, its Arrow files hashed; the
    # raw files' own cache (datasets' load_dataset, under datasets/raw) is datasets' business
    entries = [e for group in sorted(cache.iterdir()) if group.is_dir() for e in sorted(group.iterdir())
               if e.name != "raw"]
    out["cache_entries"] = [str(e.relative_to(cache)) for e in entries]
    for e in entries:
        for p in sorted(e.rglob("*.arrow")):
            out["files"]["cache/" + str(p.relative_to(cache))] = sha256(p)
    return out


def aside_numbered(files: dict) -> dict:
    """A run moved aside is named by the time it was moved (`<dir>.prev-<time>`): named by its order instead."""
    stamps = sorted({m.group(0) for name in files for m in [re.search(r"\.prev-\d{8}-\d{6}", name)] if m})
    order = {stamp: f".prev-{i + 1}" for i, stamp in enumerate(stamps)}
    return {re.sub(r"\.prev-\d{8}-\d{6}", lambda m: order[m.group(0)], name): v for name, v in files.items()}


# datasets' own cache of a `map` over a dataset loaded from disk, written beside it: named by the fingerprint of the
# function that made it (its module's name included), so moving code renames it; its result, the featurised split,
# is compared in paths.cache
DATASETS_OWN = re.compile(r"cache-[0-9a-f]{16}\.arrow")
# cache entries keyed by the files of a model the runs trained (its files' modification times): a new key every run
RUN_KEYED = "teacher_outputs/"


def by_content(files: dict) -> dict:
    """RUN_KEYED entries named by the order of their contents' hashes instead of their keys; datasets' own files
    left out."""
    files = {n: h for n, h in files.items() if not DATASETS_OWN.fullmatch(Path(n).name)}
    keyed = sorted({(h, n.split("/")[2]) for n, h in files.items() if n.startswith("cache/" + RUN_KEYED)})
    order = {key: f"#{i + 1}" for i, (_, key) in enumerate(keyed)}
    return {(n.replace(n.split("/")[2], order[n.split("/")[2]], 1) if n.startswith("cache/" + RUN_KEYED) else n): h
            for n, h in files.items()}


def compare(a: dict, b: dict) -> int:
    a, b = ({**r, "files": by_content(aside_numbered(r["files"]))} for r in (a, b))
    problems = []
    for name in sorted(set(a["files"]) | set(b["files"])):
        x, y = a["files"].get(name), b["files"].get(name)
        if x != y:
            problems.append(f"{name}: {x} != {y}")
    keys_a, keys_b = ({e for e in r["cache_entries"] if not e.startswith(RUN_KEYED)} for r in (a, b))
    if keys_a ^ keys_b:
        problems.append(f"cache entries in one record only (keys changed): {sorted(keys_a ^ keys_b)}")
    weights = sum(n.endswith(".safetensors") for n in a["files"])
    arrows = sum(n.endswith(".arrow") for n in a["files"])
    print(f"[same_weights] {len(a['runs'])} runs; {weights} safetensors, {arrows} arrow files, "
          f"{len(a['files']) - weights - arrows} results; {len(a['cache_entries'])} cache entries")
    for p in problems:
        print("  DIFFERENT", p)
    print("[same_weights] identical" if not problems else f"[same_weights] {len(problems)} differences")
    return 1 if problems else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", type=Path, default=REPO_ROOT, help="the checkout to run (default: this one)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tinykd-same-weights"), help="runs and own data go here")
    ap.add_argument("--cache", type=Path, help="paths.cache (default: <work>/cache-<checkout's commit>)")
    ap.add_argument("--out", type=Path, help="write the record here")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*(json.loads(p.read_text()) for p in args.compare))
    code = args.code.resolve()
    commit = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    cache = args.cache or args.work / f"cache-{commit}"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    rec = record(code, args.work, cache)
    rec["commit"] = commit
    if args.out:
        args.out.write_text(json.dumps(rec, indent=1))
    print(f"[same_weights] {len(rec['files'])} files recorded" + (f" in {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
