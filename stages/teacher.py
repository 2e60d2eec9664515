"""Stage `teacher`: fine-tune the teacher on a task.

TinyBERT's task distillation assumes a fine-tuned teacher; most users start from a
pretrained encoder. Build → loop → evaluate → export `<run_dir>/teacher`.
"""

from __future__ import annotations

import json
import time

from tqdm.auto import tqdm

from tinykd import build, models
from tinykd.data import Batcher
from tinykd.engine import build_engine
from tinykd.evaluate import evaluate
from tinykd.losses import task_loss
from tinykd.run import (MetricsLogger, atomic_write_text, check_finite, prepare_run_dir, restore, save_checkpoint,
                        save_config, seed_everything)


def run(cfg) -> dict:
    build.set_threads(cfg)
    seed_everything(cfg.seed)
    spec = build.task_spec(cfg)

    # --- build: pretrained encoder + a fresh classification head, the task's data
    source = build.teacher_source(cfg)
    tokenizer = models.load_tokenizer(source)
    model = models.load_classifier(source, spec.num_labels, spec.label_names, "teacher")
    train_ds = build.task_split(cfg, tokenizer, "train")
    dev_ds = build.task_split(cfg, tokenizer, "dev")

    run_dir = prepare_run_dir(cfg.runs.teacher, cfg.resume)
    save_config(run_dir, cfg)
    print(f"[tinykd] stage=teacher task={spec.name} run_dir={run_dir}")
    phase = cfg.train.teacher
    batcher = Batcher(train_ds, tokenizer, phase.batch_size, cfg.seed)
    total = build.total_steps(phase, batcher.batches_per_epoch)
    engine = build_engine(cfg.engine, phase, model, total, run_dir=run_dir, label="teacher")
    device = engine.device
    logger = MetricsLogger(run_dir, cfg.logger, cfg, "teacher")

    step = restore(run_dir, cfg.resume, model, engine)

    # --- loop: one optimizer step per `grad_accum` micro-batches, counted in steps
    model.train()
    bar = tqdm(total=total, initial=step, desc="teacher", disable=not cfg.progress or step >= total)
    seen, t0, steps_here = 0, time.perf_counter(), 0
    for batch in batcher.iterate(engine.micro) if step < total else []:
        batch = {k: v.to(device) for k, v in batch.items()}
        with engine.autocast():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            loss = task_loss(logits, batch["labels"], spec.is_regression)
        check_finite(loss, {"task": loss}, step + 1, run_dir)
        engine.backward(loss)
        seen += batch["input_ids"].size(0)
        if not engine.step():
            continue
        step += 1
        steps_here += 1
        rate = seen / (time.perf_counter() - t0)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{engine.lr():.2e}", ex_s=f"{rate:.0f}")
        if step % phase.log_every == 0 or step == total:
            logger.log({"phase": "teacher", "step": step, "loss": loss.item(), "lr": engine.lr(), "examples_per_s": rate})
        if phase.eval_every and step % phase.eval_every == 0 and step < total:
            logger.log({"phase": "teacher", "step": step, **{f"dev/{k}": v for k, v in
                        evaluate(model, dev_ds, tokenizer, spec, phase.eval_batch_size, device).items()}})
        interrupted = cfg.interrupt_after is not None and steps_here >= cfg.interrupt_after
        if step % phase.save_every == 0 or step == total or interrupted:
            save_checkpoint(run_dir, {"phase": "teacher", "step": step, "model": engine.module_state(),
                                      "engine": engine.state_dict()})
        if interrupted and step < total:
            bar.close()
            logger.close()
            print(f"[tinykd] interrupted after step {step}/{total}; resume=true continues. run_dir={run_dir}")
            return {"run_dir": str(run_dir), "interrupted": True, "step": step}
        if step >= total:
            break
    bar.close()

    # --- evaluate and export
    metrics = evaluate(model, dev_ds, tokenizer, spec, phase.eval_batch_size, device)
    logger.log({"phase": "teacher", "step": step, **{f"dev/{k}": v for k, v in metrics.items()}})
    logger.close()
    with engine.gathered():  # ZeRO-3: the full weights for rank 0 to write
        out = models.export(model, tokenizer, run_dir / "teacher")
    result = {"stage": "teacher", "task": spec.name, "run_dir": str(run_dir), "export": str(out), "dev": metrics,
              "main_metric": spec.main_metric, "steps": step}
    atomic_write_text(run_dir / "results.json", json.dumps(result, indent=2))
    print(f"[tinykd] teacher dev {spec.main_metric} = {metrics[spec.main_metric]:.4f}")
    print(f"[tinykd] exported teacher: {out}")
    return result
