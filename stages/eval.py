"""Stage `eval`: evaluate any Hugging Face model directory with the task's head (sequence or token
classification, extractive QA) on the task's dev split."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tinykd import build, data, models
from tinykd.atomic import atomic_write_text
from tinykd.engine import pick_device
from tinykd.evaluate import evaluate
from tinykd.run import save_config, write_results

HISTORY = "evaluations.jsonl"


def run(cfg) -> dict:
    build.start(cfg)
    spec = build.task_spec(cfg)
    source, _ = build.trained_model(cfg.model, spec.type, spec.name, spec.num_labels)
    tokenizer = models.load_tokenizer(source, "model")
    model = models.load_classifier(source, spec.num_labels, None, "model", spec.problem_type, spec.type)
    dev_ds = build.task_split(cfg, spec, tokenizer, "dev")
    device = pick_device(cfg.engine.device)
    metrics = evaluate(model.to(device), dev_ds, tokenizer, spec, cfg.train.task_prediction.eval_batch_size, device)

    run_dir = Path(cfg.runs.eval)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, cfg)  # reuse=true compares it with the next run's
    result = {"stage": "eval", "task": spec.name, "model": str(cfg.model), "dev": metrics,
              "main_metric": spec.main_metric, "examples": data.example_count(dev_ds), "run_dir": str(run_dir),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    # every evaluation made here, one JSON line each (results.json: the latest)
    history = run_dir / HISTORY
    before = history.read_text() if history.is_file() else ""
    atomic_write_text(history, before + json.dumps(result) + "\n")
    write_results(run_dir, result)
    print(f"[tinykd] {cfg.model}: dev " + ", ".join(f"{k} = {v:.4f}" for k, v in metrics.items())
          + f" ({data.example_count(dev_ds)} examples)")
    print(f"[tinykd] run_dir={run_dir} (every evaluation made there: {HISTORY})")
    return result
