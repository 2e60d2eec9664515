"""Stage `export`: ship a model directory (a student stage=task exported, or any fine-tuned model of the task).

    python -m tinykd stage=export model=<dir> task=<task>

Writes `<dir>/onnx/`:
  - `model.onnx`: exported with torch.onnx (dynamic batch and sequence axes), fused by ONNX Runtime's
    transformer optimizer, and checked against PyTorch on real dev inputs (the largest |logit difference|
    is printed; above `export.atol` the export stops and nothing is installed);
  - `model.int8.onnx`: dynamic int8 quantization (`export.per_channel`, `export.exclude`);
  - `report.json`: the dev scores of PyTorch fp32, ONNX Runtime fp32 and int8, and a latency table
    (batch sizes x fixed length, and the dev set's own lengths), for the model and its teacher, timed in
    this one process with tinykd/latency.py; with `export.sensitivity=true`, int8's score with each layer
    group left in fp32;
and adds the ONNX figures to the directory's model card (README.md).
The teacher (`export.teacher`; by default the one the student's run distilled from) is exported beside,
into its own directory's onnx/, to be scored and timed the same way.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import onnxruntime
import torch
from omegaconf import OmegaConf

from tinykd import build, config, data, latency, modelcard, models, onnxexport
from tinykd.atomic import atomic_write_text
from tinykd.data.batches import batch_view, collator
from tinykd.data.cache import cache_key
from tinykd.errors import TinyKDError
from tinykd.evaluate import evaluate
from tinykd.run import command_line, is_finished, read_results, save_config
from tinykd.system import cpu_name

BACKENDS = {"pytorch": "PyTorch fp32", "onnx": "ONNX Runtime fp32", "int8": "ONNX Runtime int8"}


def teacher_dir(cfg, model_dir: Path) -> Optional[str]:
    """The teacher timed beside the model: `export.teacher`, else the one its card or its run records."""
    given = cfg.export.teacher
    if given == "none":
        return None
    if given:
        return given
    facts = modelcard.load_facts(model_dir)
    if facts and facts.get("teacher", {}).get("dir"):
        return facts["teacher"]["dir"]
    if is_finished(model_dir.parent):  # <run dir>/student: the run's own record
        return read_results(model_dir.parent).get("teacher")
    return None


def to_onnx(model, model_dir: Path, out: Path, spec, tokenizer, check_ds, x, batch_size: int, threads: int) -> dict:
    """Export, fuse and check one model into `out`; then quantize it. Returns what was done, with the
    exported graph's node -> module map (for `export.exclude` and the sensitivity table)."""
    t0 = time.perf_counter()
    fp32, candidate = out / onnxexport.FP32, out / onnxexport.CANDIDATE  # installed only once checked
    first = collator(check_ds, tokenizer)(batch_view(check_ds).select(range(min(8, len(check_ds)))).to_list())
    onnxexport.export(model, first, candidate, spec.type, x.opset, x.attention)
    modules = onnxexport.node_modules(candidate)  # before fusing, which drops the exporter's metadata
    fused = onnxexport.optimize(candidate, model.config) if x.optimize else {}
    diff = onnxexport.max_abs_difference(model, onnxexport.OnnxModel(candidate, model.config, threads), check_ds,
                                         tokenizer, batch_size)
    print(f"[tinykd] {model_dir}: ONNX Runtime vs PyTorch on {len(check_ds)} dev examples: largest |logit "
          f"difference| {diff:.2e} (export.atol {x.atol:g})")
    if not diff <= x.atol:  # NaN fails too
        rejected = out / onnxexport.REJECTED
        os.replace(candidate, rejected)
        raise TinyKDError(
            f"The ONNX export of {model_dir} differs from PyTorch by up to {diff:.3g} in a logit on real dev inputs "
            f"(export.atol={x.atol:g}); it was not installed (kept as {rejected} for inspection; an earlier export there is untouched).",
            "report it with the model's config.json; try export.optimize=false (no fused operators) or another "
            "export.opset, or raise export.atol if that difference is acceptable for you.")
    os.replace(candidate, fp32)
    exclude = onnxexport.nodes_matching(modules, x.exclude)
    if x.exclude and not exclude:
        raise TinyKDError(f"export.exclude={list(x.exclude)} matches no module of the exported graph.",
                          f"use regexes over module names such as {sorted(set(modules.values()) - {''})[:4]}.")
    int8 = None
    if x.quantize:
        int8 = onnxexport.quantize(fp32, out / onnxexport.INT8, per_channel=x.per_channel,
                                   reduce_range=x.reduce_range, exclude_nodes=exclude)
    return {"fp32": str(fp32), "int8": str(int8) if int8 else None, "max_abs_difference": diff,
            "checked_examples": len(check_ds), "fused_operators": fused, "excluded_nodes": len(exclude),
            "mb": {"pytorch": round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 2),
                   "onnx": onnxexport.file_mb(fp32), "int8": onnxexport.file_mb(int8) if int8 else None},
            "seconds": round(time.perf_counter() - t0, 1), "modules": modules}


def sensitivity(fp32: Path, modules: dict, dev_ds, tokenizer, spec, x, batch_size: int, threads: int) -> list[dict]:
    """int8's dev score with one layer group at a time left in fp32 (the rest int8), and with per-channel
    weights: where the int8 loss comes from."""
    nodes: dict[str, list[str]] = {}  # layer group -> its nodes
    for n, m in modules.items():
        if m:
            nodes.setdefault(onnxexport.layer_group(m), []).append(n)
    groups = sorted(nodes, key=lambda g: (g != "embeddings", g == "head", int(g.split(".")[1]) if "." in g else 0))
    trials = [(f"{g} in fp32", {"exclude_nodes": nodes[g]}) for g in groups]
    trials += [("per-channel weights", {"per_channel": True}),
               ("per-channel, head in fp32", {"per_channel": True, "exclude_nodes": nodes.get("head", [])})]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in trials:
            path = onnxexport.quantize(fp32, Path(tmp) / "trial.onnx", reduce_range=x.reduce_range,
                                       **{"per_channel": x.per_channel, **kw})
            scores = evaluate(onnxexport.OnnxModel(path, None, threads), dev_ds, tokenizer, spec, batch_size, "cpu")
            rows.append({"variant": name, "dev": scores, "mb": onnxexport.file_mb(path)})
            print(f"[tinykd] int8 sensitivity: {name:28s} dev {spec.main_metric} {scores[spec.main_metric]:.4f}")
    return rows


def run(cfg) -> dict:
    build.start(cfg)
    x = cfg.export
    if x.threads:
        torch.set_num_threads(x.threads)
    threads = torch.get_num_threads()  # ONNX Runtime gets as many as torch: one setting for both
    spec = build.task_spec(cfg)
    batch_size = cfg.train.task_prediction.eval_batch_size

    # --- build: the model and its teacher (PyTorch), the dev set
    source, _ = build.trained_model(cfg.model, spec.type, spec.name, spec.num_labels)
    model_dir = Path(source)
    tokenizer = models.load_tokenizer(source, "model")
    dev_ds = build.task_split(cfg, spec, tokenizer, "dev")
    check_ds = dev_ds.select(range(config.sample_size(cfg, "export.check_examples", len(dev_ds), "dev rows")))
    real_ds = dev_ds.select(range(config.sample_size(cfg, "export.real_examples", len(dev_ds), "dev rows")))
    loaded = {"student": (model_dir, models.load_classifier(source, spec.num_labels, None, "model", spec.problem_type,
                                                            spec.type).eval())}
    t_dir = teacher_dir(cfg, model_dir)
    if t_dir:
        t_source, _ = build.trained_model(t_dir, spec.type, spec.name, spec.num_labels)
        models.check_same_vocab(models.load_tokenizer(t_source, "teacher"), tokenizer, t_source, source)
        loaded["teacher"] = (Path(t_source), models.load_classifier(t_source, spec.num_labels, None, "teacher",
                                                                    spec.problem_type, spec.type).eval())
    else:
        print("[tinykd] no teacher to time beside the model (export.teacher=<dir> to add one)")
    out = model_dir / "onnx"
    print(f"[tinykd] stage=export model={model_dir} task={spec.name} dev={data.example_count(dev_ds)} "
          f"threads={threads} out={out}")

    # --- export, check and quantize each model; score every runtime on dev
    shipped, runtimes, dev = {}, {}, {}
    for name, (d, model) in loaded.items():
        where = out if name == "student" else onnx_dir(d, cfg)
        shipped[name] = to_onnx(model, d, where, spec, tokenizer, check_ds, x, batch_size, threads)
        runtimes[name] = runtimes_of(model, shipped[name], threads)
        dev[name] = {b: evaluate(m, dev_ds, tokenizer, spec, batch_size, "cpu") for b, m in runtimes[name].items()}
        for b, scores in dev[name].items():
            print(f"[tinykd] {name} {BACKENDS[b]:18s} dev " + ", ".join(f"{k} = {v:.4f}" for k, v in scores.items()))
    sens = (sensitivity(Path(shipped["student"]["fp32"]), shipped["student"]["modules"], dev_ds, tokenizer, spec, x,
                        batch_size, threads) if x.sensitivity and x.quantize else None)

    # --- latency: every model x runtime x batch size, at the fixed length and at the dev set's own lengths;
    # the six take turns, so that their ratios are fair on a machine whose speed drifts
    every = {(name, b): m for name, by_runtime in runtimes.items() for b, m in by_runtime.items()}
    named = {f"{name}/{b}": m for (name, b), m in every.items()}
    timing: dict = {name: {} for name in loaded}
    for bs in x.batch_sizes:
        fixed = latency.measure_side_by_side(named, bs, x.seq_len, repeats=x.repeats, warmup=x.warmup)
        real = latency.measure_dataset_side_by_side(named, real_ds, tokenizer, bs)
        for (name, b) in every:
            timing[name].setdefault(b, {})[f"b{bs}"] = fixed[f"{name}/{b}"]
            timing[name][b][f"real_b{bs}"] = real[f"{name}/{b}"]
    table = latency_table(timing, x.batch_sizes)
    print(table)

    # --- the report, and the model card's ONNX section
    m = spec.main_metric
    student_dev = dev["student"]
    report = {
        "stage": "export", "model": str(model_dir), "task": spec.name, "main_metric": m,
        "teacher": str(loaded["teacher"][0]) if "teacher" in loaded else None,
        "onnx": {k: {kk: vv for kk, vv in v.items() if kk != "modules"} for k, v in shipped.items()},
        "dev": dev, "dev_examples": data.example_count(dev_ds),
        "int8_drop_points": (100 * (student_dev["pytorch"][m] - student_dev["int8"][m]) if "int8" in student_dev
                             else None),
        "latency": timing, "speedups": speedups(timing, x.batch_sizes), "sensitivity": sens,
        "settings": OmegaConf.to_container(x, resolve=True), "threads": threads,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__},
        "command": command_line(),
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    save_config(out, cfg)
    card = update_card(model_dir, report, x)
    for k, v in report["speedups"].items():
        print(f"[tinykd] speed-up {k}: {v:.2f}x")
    if report["int8_drop_points"] is not None:
        print(f"[tinykd] int8 vs fp32 student: {report['int8_drop_points']:+.2f} points of dev {m} lost")
    print(f"[tinykd] wrote {out / onnxexport.FP32}" + (f", {out / onnxexport.INT8}" if x.quantize else "")
          + f", {out / 'report.json'}" + (f"; model card {card}" if card else ""))
    return report


def onnx_dir(model_dir: Path, cfg) -> Path:
    """Where a teacher's ONNX files go: its own directory's onnx/ (as stage=export on it would write), or
    the cache when that directory cannot be written."""
    if os.access(model_dir, os.W_OK):
        return model_dir / "onnx"
    return Path(cfg.paths.cache) / "onnx" / cache_key(str(model_dir.resolve()))


def runtimes_of(model, shipped: dict, threads: int) -> dict:
    """The model under each runtime: PyTorch fp32, ONNX Runtime fp32 and (when written) int8."""
    out = {"pytorch": model, "onnx": onnxexport.OnnxModel(shipped["fp32"], model.config, threads)}
    if shipped["int8"]:
        out["int8"] = onnxexport.OnnxModel(shipped["int8"], model.config, threads)
    return out


def speedups(timing: dict, batch_sizes) -> dict:
    """Each runtime of the model against the teacher's PyTorch fp32, per batch size (fixed length)."""
    if "teacher" not in timing:
        return {}
    base = timing["teacher"]["pytorch"]
    return {f"student_{b}_vs_teacher_pytorch_b{bs}": base[f"b{bs}"]["median_ms"] / r[f"b{bs}"]["median_ms"]
            for b, r in timing["student"].items() for bs in batch_sizes}


def latency_table(timing: dict, batch_sizes) -> str:
    head = " | ".join([f"b{bs} ms (fixed)" for bs in batch_sizes] + [f"b{bs} ms/example (dev lengths)" for bs in batch_sizes])
    lines = [f"| model | runtime | {head} |", "|---|---|" + "---|" * (2 * len(batch_sizes))]
    for name, by_runtime in timing.items():
        for b, r in by_runtime.items():
            cells = [f"{r[f'b{bs}']['median_ms']:.2f}" for bs in batch_sizes]
            cells += [f"{r[f'real_b{bs}']['ms_per_example']:.3f}" for bs in batch_sizes]
            lines.append(f"| {name} | {BACKENDS[b]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def update_card(model_dir: Path, report: dict, x) -> Optional[Path]:
    """Add the ONNX figures to the directory's tinykd model card; None when it has none."""
    facts = modelcard.load_facts(model_dir)
    if facts is None:
        print(f"[tinykd] {model_dir} has no tinykd model card (README.md): the figures are in onnx/report.json")
        return None
    m, s = report["main_metric"], report["onnx"]["student"]
    t = report["latency"]["student"]
    options = ", ".join(o for o, on in (("per-channel weights", x.per_channel), ("7-bit weights", x.reduce_range),
                                        (f"{s['excluded_nodes']} nodes kept in fp32", s["excluded_nodes"])) if on)
    facts["onnx"] = {
        "checked_examples": s["checked_examples"], "max_abs_difference": s["max_abs_difference"],
        "int8": s["int8"] is not None, "int8_options": options, "threads": report["threads"],
        "rows": [{"name": BACKENDS[b], "score": report["dev"]["student"][b][m],
                  "b1": t[b]["b1"]["median_ms"] if "b1" in t[b] else None,
                  "b32": t[b]["b32"]["median_ms"] if "b32" in t[b] else None,
                  "mb": s["mb"][b]} for b in report["dev"]["student"]],
    }
    return modelcard.write(model_dir, facts)
