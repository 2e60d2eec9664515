"""Stage `eval`: evaluate any Hugging Face model directory with the task's head (sequence or token
classification, extractive QA) on the task's dev split."""

from __future__ import annotations

import json
from pathlib import Path

from tinykd import build, data, models, teachers
from tinykd.engine import pick_device
from tinykd.errors import TinyKDError
from tinykd.evaluate import evaluate
from tinykd.run import atomic_write_text, save_config


def run(cfg) -> dict:
    build.start(cfg)
    spec = build.task_spec(cfg)
    if not cfg.model:
        raise TinyKDError("stage=eval needs a model directory.", "add model=<path to a model directory>.")
    source = models.resolve_source(cfg.model, None, "model", "model")
    config = models.model_config(source)
    if not teachers.is_finetuned_classifier(config, config.num_labels, spec.type):
        raise TinyKDError(
            f"Model {cfg.model} has no trained {spec.type.replace('_', ' ')} head (its architectures: "
            f"{getattr(config, 'architectures', None)}): task {spec.name} would be scored with a random head.",
            f"evaluate a model trained for this task (an AutoModelFor{teachers.HEAD_SUFFIXES[spec.type][3:]} "
            "directory), or choose the task it was trained for (task=<name>).")
    if config.num_labels != spec.num_labels:
        raise TinyKDError(
            f"Model {cfg.model} has {config.num_labels} output labels; task {spec.name} has {spec.num_labels}.",
            "evaluate a model trained for this task (task=<name>).",
        )
    tokenizer = models.load_tokenizer(source, "model")
    model = models.load_classifier(source, spec.num_labels, None, "model", spec.problem_type, spec.type)
    dev_ds = build.task_split(cfg, spec, tokenizer, "dev")
    device = pick_device(cfg.engine.device)
    metrics = evaluate(model.to(device), dev_ds, tokenizer, spec, cfg.train.task_prediction.eval_batch_size, device)

    run_dir = Path(cfg.runs.eval)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, cfg)  # reuse=true compares it with the next run's
    result = {"stage": "eval", "task": spec.name, "model": str(cfg.model), "dev": metrics,
              "main_metric": spec.main_metric, "examples": data.example_count(dev_ds), "run_dir": str(run_dir)}
    atomic_write_text(run_dir / "results.json", json.dumps(result, indent=2))
    print(f"[tinykd] {cfg.model}: dev " + ", ".join(f"{k} = {v:.4f}" for k, v in metrics.items())
          + f" ({data.example_count(dev_ds)} examples)")
    print(f"[tinykd] run_dir={run_dir}")
    return result
