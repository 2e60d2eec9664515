"""Stage `teacher`: fine-tune the teacher on a task.

TinyBERT's task distillation assumes a fine-tuned teacher; most users start from a
pretrained encoder. Build → loop → evaluate → export `<run_dir>/teacher`.
"""

from __future__ import annotations

from tinykd import build, models
from tinykd.evaluate import evaluate, test_score
from tinykd.loop import StepBudget
from tinykd.losses import gold_labels, task_loss
from tinykd.run import MetricsLogger, load_checkpoint, prepare_run_dir, save_config, write_results


def run(cfg) -> dict:
    build.start(cfg)
    spec = build.task_spec(cfg)

    # --- build: pretrained encoder + a fresh head (per text, per token or answer span), the task's data
    source = build.teacher_source(cfg)
    tokenizer = models.load_tokenizer(source)
    model = models.load_classifier(source, spec.num_labels, spec.label_names, "teacher", spec.problem_type, spec.type)
    train_ds = build.task_split(cfg, spec, tokenizer, "train")
    dev_ds = build.task_split(cfg, spec, tokenizer, "dev")

    run_dir = prepare_run_dir(cfg.runs.teacher, cfg.resume, cfg.keep_previous)
    save_config(run_dir, cfg)
    print(f"[tinykd] stage=teacher task={spec.name} run_dir={run_dir}")
    logger = MetricsLogger(run_dir, cfg.logger, cfg, "teacher")
    hp = cfg.train.teacher
    loop = build.phase_loop(cfg, "teacher", hp, train_ds, tokenizer, model, run_dir=run_dir, logger=logger,
                            budget=StepBudget(cfg.interrupt_after),
                            resume_from=load_checkpoint(run_dir, cfg.keep_checkpoints) if cfg.resume else None)
    engine, device = loop.engine, loop.engine.device

    # --- loop: the task's loss on the gold labels
    model.train()
    for batch in loop:
        with engine.autocast():
            logits = models.head_logits(model(**models.model_inputs(model, batch)))
            loss = task_loss(logits, gold_labels(batch, spec.type), spec.problem_type, spec.type)
        if loop.update(loss, {"task": loss.detach()}, items=batch["input_ids"].size(0)):
            if loop.eval_due and not loop.finished:  # the last step's evaluation follows the loop
                loop.log_eval("dev", evaluate(model, dev_ds, tokenizer, spec, hp.eval_batch_size, device))
            loop.checkpoint()
    if loop.interrupted:
        logger.close()
        return {"run_dir": str(run_dir), "interrupted": True, "step": loop.step}

    # --- evaluate and export
    metrics = evaluate(model, dev_ds, tokenizer, spec, hp.eval_batch_size, device)
    loop.log_eval("dev", metrics)
    test = test_score(model, spec, tokenizer, cfg.task, build.data_cache(cfg), hp.eval_batch_size, device)
    logger.close()
    with engine.gathered():  # ZeRO-3: the full weights for rank 0 to write
        out = models.export(model, tokenizer, run_dir / "teacher")
    result = {"stage": "teacher", "task": spec.name, "run_dir": str(run_dir), "export": str(out), "dev": metrics,
              "test": test, "main_metric": spec.main_metric, "steps": loop.step}
    write_results(run_dir, result)
    print(f"[tinykd] teacher dev {spec.main_metric} = {metrics[spec.main_metric]:.4f}")
    print(f"[tinykd] exported teacher: {out}")
    return result
