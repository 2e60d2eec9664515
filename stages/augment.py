"""Stage `augment`: TinyBERT data augmentation of a task's training set.

Writes `<run_dir>/data`, a `datasets` directory (columns text_a, text_b, label; a token task's
tokens and tags; a QA task's id, question, context and answers; and source_index): the original
examples first, then each example's augmented rows, each carrying the index of its source example.
A token task replaces only words tagged O; a QA task only words of the question (its context and
answer are the source's). `task.augmented=<run_dir>/data` makes the task
stage train on it; `stage=pipeline stage.augment=true` chains it.

The work is cut into shards of `augment.shard_size` source examples. A shard is written to
a temporary directory and renamed when complete, so an interrupted run leaves only whole
shards, and running the same command again continues after the last one. The output does
not depend on shards or batch sizes: every example draws from its own seeded generator.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import datasets
import pyarrow as pa
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from tinykd import augment, build, data
from tinykd.atomic import atomic_directory, atomic_write_text
from tinykd.choices import QA
from tinykd.data.cache import file_fingerprint
from tinykd.data.files import origin
from tinykd.data.qa import EXAMPLE_FEATURES
from tinykd.data.text import row_features
from tinykd.errors import TinyKDError
from tinykd.run import is_finished, move_aside, read_results, save_config, write_results
from tinykd.system import tune_allocator

SHARDS = "shards"
DATA = "data"
MANIFEST = "augment.json"
# Settings that cannot change the output. (shard_size cannot either, but finished shards are
# reused only with the same boundaries, so it stays in the identity.)
OUTPUT_FREE = ("batch_size", "max_tokens")


def row_schema(spec) -> datasets.Features:
    """The task's rows (tinykd.data.text.row_features; a token task's words and tags) and each row's source example."""
    if spec.is_token:
        rows = {"tokens": datasets.Sequence(datasets.Value("string")), "tags": datasets.Sequence(datasets.Value("int64"))}
    elif spec.type == QA:
        rows = dict(EXAMPLE_FEATURES)
    else:
        rows = row_features(spec)
    return datasets.Features({**rows, "source_index": datasets.Value("int64")})


def outside_tag(spec) -> int:
    """The id of a token task's outside tag O, the one tag whose words augmentation may replace."""
    if "O" not in spec.label_names:
        raise TinyKDError(
            f"Task {spec.name} has no outside tag 'O' among its tags {list(spec.label_names)}: augmentation replaces "
            "only words tagged O, so that no tagged word (an entity, or any tag of a tag set without O) changes.",
            "drop stage.augment=true for this task.")
    return spec.label_names.index("O")


def qa_rows(questions: dict[str, list], rows: dict[str, list], start: int) -> dict[str, list]:
    """A QA shard's augmented rows: each new question with its source's context and answers, untouched, and an id
    of its own (the source's, then #aug and a count)."""
    out: dict[str, list] = {name: [] for name in (*EXAMPLE_FEATURES, "source_index")}
    made: dict[int, int] = {}
    for question, index in zip(questions["question"], questions["source_index"]):
        made[index] = made.get(index, 0) + 1
        i = index - start
        out["id"].append(f"{rows['id'][i]}#aug{made[index]}")
        out["question"].append(question)
        out["context"].append(rows["context"][i])
        out["answers"].append(rows["answers"][i])
        out["source_index"].append(index)
    return out


def identity(cfg, source_file: str) -> dict:
    """Everything the output depends on: a rerun continues only when this is unchanged."""
    a = {k: v for k, v in OmegaConf.to_container(cfg.augment, resolve=True).items() if k not in OUTPUT_FREE}
    teacher = OmegaConf.to_container(cfg.teacher, resolve=True)
    x = cfg.augment
    uses_teacher = x.source == "embedding" or (x.source == "mlm" and (x.mlm == "teacher" or x.fallback == "embedding"))
    t = cfg.task  # your own data: what its rows are read as
    columns = [list(t.text_columns), t.label_column, t.label_columns and list(t.label_columns),
               t.labels and list(t.labels), t.problem_type, t.type, t.tokens_column, t.tags_column,
               t.conll_token_column, t.conll_tag_column]
    if t.type == QA:
        columns += [t.id_column, t.question_column, t.context_column, t.answers_column, t.version_2_with_negative]
    return {"augment": a, "task": cfg.task.name, "source": cfg.task.source, "data": source_file, "columns": columns,
            "train_limit": cfg.task.train_limit, "seed": cfg.seed, "teacher": teacher if uses_teacher else None}


def _source_file(cfg, spec) -> str:
    if spec.glue is None:  # your own data
        return origin(cfg.task, "train")
    if cfg.task.source != "tsv":
        return f"hub:{spec.glue.hub_name}"
    path = Path(cfg.task.data_dir) / spec.glue.train_file
    return file_fingerprint(path) if path.is_file() else str(path)


def write_dataset(columns: dict, feats: datasets.Features, out: Path, extra: dict | None = None) -> None:
    """Save `columns` as a datasets directory at `out`, atomically (temp dir + rename)."""
    table = pa.Table.from_pydict(columns, schema=feats.arrow_schema)
    _save_table(table, feats, out, extra)


def _save_table(table: pa.Table, feats: datasets.Features, out: Path, extra: dict | None = None) -> None:
    # One chunk and a fingerprint made from the content: the same rows give the same bytes,
    # whatever shards they came from.
    table = table.combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    fingerprint = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]
    ds = datasets.Dataset(table, info=datasets.DatasetInfo(features=feats), fingerprint=fingerprint)

    def fill(tmp: Path) -> None:
        ds.save_to_disk(str(tmp))
        if extra is not None:
            (tmp / "stats.json").write_text(json.dumps(extra, indent=2, sort_keys=True))

    atomic_directory(out, fill, kept="; the shards written before it are intact (running the command again "
                                     "continues from them)")


def _prepare(run_dir: Path, ident: dict, keep_previous: int) -> bool:
    """Make `run_dir` ready. Returns True when it holds finished shards of this same setting
    to continue from; a run of another setting is moved aside (`keep_previous` of those are kept)."""
    manifest = run_dir / MANIFEST
    if run_dir.exists() and manifest.is_file():
        if json.loads(manifest.read_text()) == ident:
            return True
        aside = move_aside(run_dir, keep_previous)
        print(f"[tinykd] augment: {run_dir} held a run with other settings; moved to {aside}")
    (run_dir / SHARDS).mkdir(parents=True, exist_ok=True)
    atomic_write_text(manifest, json.dumps(ident, indent=2, sort_keys=True))
    return False


def run(cfg) -> dict:
    tune_allocator()
    build.start(cfg)
    a = cfg.augment
    spec = build.task_spec(cfg)
    run_dir = Path(cfg.runs.augment)
    ident = identity(cfg, _source_file(cfg, spec))
    continuing = _prepare(run_dir, ident, cfg.keep_previous)
    if continuing and is_finished(run_dir) and (run_dir / DATA).is_dir():
        result = read_results(run_dir)
        print(f"[tinykd] augment: already finished with these settings: {run_dir / DATA}")
        return result
    save_config(run_dir, cfg)

    # the training rows: texts and labels, or (a token task) words and tag ids, of which only words tagged O are
    # replaced (augment.augment_tagged)
    raw = data.read(cfg.task, spec, "train", build.data_cache(cfg), cfg.task.train_limit)
    outside = outside_tag(spec) if spec.is_token else None
    sources = build.augment_sources(cfg)
    if sources["note"]:
        print(f"[tinykd] {sources['note']}")
    feats = row_schema(spec)
    count = len(raw)
    n_shards = math.ceil(count / a.shard_size)
    shards_dir = run_dir / SHARDS
    for leftover in shards_dir.glob(".*"):  # a shard that was being written when the run was killed
        shutil.rmtree(leftover, ignore_errors=True)
    done = {int(p.name) for p in shards_dir.iterdir() if p.name.isdigit() and int(p.name) < n_shards}
    done_examples = sum(min(a.shard_size, count - i * a.shard_size) for i in done)
    print(f"[tinykd] stage=augment task={spec.name} source={a.source} mlm={a.mlm} examples={count} "
          f"N={a.n} K={a.k} p={a.p} shards={n_shards} (done: {len(done)}) run_dir={run_dir}")

    bar = tqdm(total=count, initial=done_examples, desc="augment", unit="sent", disable=not cfg.progress)
    t0, written, shards_here = time.perf_counter(), 0, 0
    for i in range(n_shards):
        if i in done:
            continue
        lo, hi = i * a.shard_size, min(count, (i + 1) * a.shard_size)
        rows = raw[lo:hi]
        stats: dict = {}
        common = dict(n=a.n, k=a.k, p=a.p, seed=cfg.seed, vectors=sources["vectors"], model=sources["model"],
                      tokenizer=sources["tokenizer"], batch_size=a.batch_size, max_len=a.max_seq_len,
                      max_tokens=a.max_tokens, lowercase=a.lowercase, start_index=lo, stats=stats, mlm_mode=a.mlm_mode)
        if spec.is_token:
            cols = augment.augment_tagged(rows["tokens"], rows["tags"], outside, **common)
        elif spec.type == QA:
            cols = qa_rows(augment.augment_questions(rows["question"], **common), rows, lo)
        else:
            cols = augment.augment_examples(rows["text_a"], rows["text_b"] if spec.pair else None, rows["label"],
                                            include_originals=False, **common)
        stats["examples"], stats["augmented_rows"] = hi - lo, len(cols["source_index"])
        write_dataset(cols, feats, shards_dir / f"{i:05d}", stats)
        written += hi - lo
        shards_here += 1
        bar.update(hi - lo)
        bar.set_postfix(sent_s=f"{written / (time.perf_counter() - t0):.1f}")
        if cfg.interrupt_after is not None and shards_here >= cfg.interrupt_after and i < n_shards - 1:
            bar.close()
            print(f"[tinykd] augment interrupted after shard {i + 1}/{n_shards}; run it again to continue.")
            return {"run_dir": str(run_dir), "interrupted": True}
    bar.close()
    seconds = time.perf_counter() - t0

    # --- the final dataset: originals first, then the shards in order
    if spec.is_token:
        originals = {"tokens": raw["tokens"], "tags": raw["tags"], "source_index": list(range(count))}
    elif spec.type == QA:
        originals = {name: raw[name] for name in EXAMPLE_FEATURES} | {"source_index": list(range(count))}
    else:
        originals = {"text_a": raw["text_a"], "text_b": raw["text_b"], "label": raw["label"],
                     "source_index": list(range(count))}
    parts = [pa.Table.from_pydict(originals, schema=feats.arrow_schema)]
    totals: dict = {}
    for i in range(n_shards):
        shard = shards_dir / f"{i:05d}"
        parts.append(datasets.load_from_disk(str(shard)).data.table.cast(feats.arrow_schema))
        for key, value in json.loads((shard / "stats.json").read_text()).items():
            totals[key] = totals.get(key, 0) + value
    out = run_dir / DATA
    if out.exists():
        shutil.rmtree(out)
    _save_table(pa.concat_tables(parts), feats, out)
    rows = sum(len(p) for p in parts)
    result = {
        "stage": "augment", "task": spec.name, "run_dir": str(run_dir), "data": str(out),
        "examples": count, "rows": rows, "augmented_rows": rows - count, "source": a.source,
        "mlm": sources.get("mlm_source"), "vectors": a.vectors if (a.source == "glove" or (
            a.source == "mlm" and a.fallback == "glove")) else "teacher input embeddings",
        "stats": totals, "seconds_this_run": round(seconds, 1),
        "sentences_per_s_this_run": round(written / seconds, 2) if written and seconds > 0 else None,
    }
    write_results(run_dir, result)
    if totals.get("truncated_inputs") or totals.get("past_limit_words"):
        print(f"[tinykd] augment: {totals.get('truncated_inputs', 0)} masked-LM inputs were cut at the model's "
              f"limit; {totals.get('past_limit_words', 0)} words past it took word-vector candidates instead")
    print(f"[tinykd] augmented {count} examples -> {rows} rows ({rows - count} new): {out}")
    print(f"[tinykd] train on it: python -m tinykd stage=task task={spec.name} task.augmented={out}")
    return result
