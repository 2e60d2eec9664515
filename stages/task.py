"""Stage `task`: task-specific distillation (TinyBERT §3.2, two phases).

A fine-tuned teacher → the student (from the general stage, random, the teacher's layers, the teacher
pruned to the student's shape (`student.init=pruned`, tinykd/prune.py), or a directory):
  phase `intermediate`: embedding, attention and hidden-state losses on the task's data
                        (and/or MiniLMv2's self-attention relation loss, distill.weights.relation);
  phase `prediction`: soft cross-entropy against the teacher's logits at temperature T
                      (or KL·T², or MSE for regression), evaluated on dev as it goes.
Before either, the teacher sanity gate (tinykd/gate.py) refuses a teacher that is not above
chance on dev or labels the classes in another order.
`stage.phases=[finetune]` is the no-distillation baseline instead: the same student trained on the
gold labels alone (train.task_finetune); the teacher never runs.
The best dev checkpoint is exported as `<run_dir>/student`, a plain
`AutoModelForSequenceClassification` directory.

`student=bilstm` runs the BiLSTM recipe on transfer data instead: `stages/task_bilstm.py`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn

from tinykd import build, config, data, gate, latency, metrics, modelcard, models, students, teacher_outputs
from tinykd.distiller import layer_outputs
from tinykd.engine import pick_device
from tinykd.evaluate import evaluate, evaluate_and_keep_best, test_score
from tinykd.loop import StepBudget
from tinykd.losses import gold_label_loss, gold_labels, prediction_loss, prediction_mask, task_loss
from tinykd.run import (MetricsLogger, check_upstream, load_checkpoint, prepare_run_dir, remaining_phases, save_config,
                        write_results)
from tinykd.stages import task_bilstm


def teacher_cache_precision(cfg, examples: int) -> str:
    """What `distill.teacher_cache` means for this run: fp16, fp32 or none. `auto` caches (fp16)
    with transfer data (task.transfer), or when the prediction phase reads every training example at least
    twice: filling the cache is one teacher pass over the whole set, which a short phase would never make."""
    choice = cfg.distill.teacher_cache
    if choice != "auto":
        return choice
    if cfg.task.transfer:  # the teacher labels the transfer rows once: their outputs are what distillation reads
        return "fp16"
    hp = cfg.train.task_prediction
    per_step = hp.batch_size * hp.grad_accum
    steps = hp.max_steps if hp.max_steps > 0 else math.ceil(hp.epochs * examples / per_step)
    return "fp16" if steps * per_step >= 2 * examples else "none"


def run(cfg) -> dict:
    if cfg.student.arch == "bilstm":  # the BiLSTM recipe on transfer data: a stage of its own
        return task_bilstm.run(cfg)
    started = time.perf_counter()
    build.start(cfg)
    spec = build.task_spec(cfg)
    if cfg.task.augmented:  # augmented from other data: refused, both named
        check_upstream(cfg, Path(cfg.task.augmented).parent, "augment")

    # --- build: the fine-tuned teacher (frozen), the student, matches and projections, data
    teacher_dir, teacher = build.finetuned_teacher(cfg, spec)  # classes matched to the task's by name
    tokenizer = models.load_tokenizer(teacher_dir)  # the student keeps the teacher's tokenizer
    train_ds = build.task_split(cfg, spec, tokenizer, "train")
    dev_ds = build.task_split(cfg, spec, tokenizer, "dev")
    # task.transfer: unlabeled inputs the teacher labels; distillation draws from them and the training rows
    transfer_rows = build.transfer_split(cfg, spec, tokenizer) if cfg.task.transfer else None
    transfer_ds, transfer = transfer_rows and transfer_rows.dataset, None
    student, kept = students.task_student(cfg, spec, teacher, tokenizer, train_ds)
    init_dev = None
    if cfg.student.init == "pruned":  # what pruning alone keeps, before any training
        init_dev = evaluate(student, dev_ds, tokenizer, spec, cfg.train.task_prediction.eval_batch_size,
                            pick_device(cfg.engine.device))
        print(f"[tinykd] pruned student before training: dev {spec.main_metric} = {init_dev[spec.main_metric]:.4f}")
    phases = list(cfg.stage.phases)  # checked at start-up (config.check)
    distiller = build.distiller(cfg, student, teacher, capture="intermediate" in phases, kept=kept)
    teacher_gate = None
    if phases != ["finetune"]:
        teacher.to(pick_device(cfg.engine.device))
        gate_examples = config.sample_size(cfg, "distill.gate_examples", data.example_count(dev_ds), "dev examples")
        teacher_gate = gate.check_teacher(
            teacher, teacher_dir, dev_ds, tokenizer, spec, examples=gate_examples,
            margin=cfg.distill.gate_margin, allow_weak=cfg.distill.allow_weak_teacher,
            batch_size=cfg.train.task_prediction.eval_batch_size, device=pick_device(cfg.engine.device))

    run_dir = prepare_run_dir(cfg.runs.task, cfg.resume, cfg.keep_previous)
    save_config(run_dir, cfg)
    print(f"[tinykd] stage=task task={spec.name} teacher={teacher_dir} student.init={cfg.student.init} "
          f"train={data.example_count(train_ds)} dev={data.example_count(dev_ds)} run_dir={run_dir}")
    logger = MetricsLogger(run_dir, cfg.logger, cfg, "task")
    cache = teacher_cache_precision(cfg, len(train_ds)) if "prediction" in phases else "none"
    if cache != "none":
        # The prediction phase reads only the teacher's logits: computed once over the training (and transfer) rows
        # and cached on disk (epochs, resumed runs and sweep trials with the same teacher and data reuse them).
        t0 = time.perf_counter()
        teacher.to(pick_device(cfg.engine.device))

        def labelled(ds):
            return teacher_outputs.with_teacher_outputs(
                teacher, teacher_dir, ds, tokenizer, batch_size=cfg.train.task_prediction.eval_batch_size,
                device=pick_device(cfg.engine.device), cache_dir=str(Path(cfg.paths.cache) / "teacher_outputs"),
                progress=cfg.progress, precision=cache, representations=False)

        train_ds = labelled(train_ds)
        transfer_ds = transfer_ds and labelled(transfer_ds)
        print(f"[tinykd] teacher logits for {len(train_ds)} training"
              + (f" and {len(transfer_ds)} transfer" if transfer_ds else "")
              + f" rows ({cache}, cached): {time.perf_counter() - t0:.1f} s")
    if transfer_ds is not None:
        train_ds = data.mix(train_ds, transfer_ds, cfg.task.transfer_share, cfg.seed)
        drawn = sum(train_ds[data.TRANSFER])
        transfer = {"source": cfg.task.transfer, "read": transfer_rows.notes.get("transfer_rows"),
                    "rows": len(transfer_ds), "examples": data.example_count(transfer_ds),
                    "drawn": drawn, "training_rows": len(train_ds) - drawn, "share": cfg.task.transfer_share,
                    "equal_to_a_scored_example": transfer_rows.notes.get("equal_to_a_scored_example", 0)}
        print(f"[tinykd] distillation rows: {transfer['training_rows']} training + {drawn} transfer "
              f"(task.transfer_share={cfg.task.transfer_share})")

    # --- the phases, in order; a resumed run skips those its checkpoint is past
    ckpt = load_checkpoint(run_dir, cfg.keep_checkpoints) if cfg.resume else None
    best = ckpt["state"]["best"] if ckpt is not None else None
    budget = StepBudget(cfg.interrupt_after)  # interrupt_after: optimiser steps in this process, over all phases
    for index, name, resume_from in remaining_phases(phases, ckpt):
        loop, best = train_phase(name, index, best, resume_from, budget, cfg=cfg, spec=spec, teacher=teacher,
                                 student=student, distiller=distiller, tokenizer=tokenizer, train_ds=train_ds,
                                 dev_ds=dev_ds, run_dir=run_dir, logger=logger)
        if loop.interrupted:
            logger.close()
            return {"run_dir": str(run_dir), "interrupted": True}

    # --- export: the best dev checkpoint was exported as it was found; without a phase that evaluates,
    # the final student
    if best is None:
        best = {"dev": evaluate(student, dev_ds, tokenizer, spec, loop.hp.eval_batch_size, loop.engine.device),
                "step": None, "phase": phases[-1]}
        with loop.engine.gathered():
            models.export(student, tokenizer, run_dir / "student")
    logger.close()
    out = run_dir / "student"
    device, batch_size = pick_device(cfg.engine.device), cfg.train.task_prediction.eval_batch_size
    teacher_dev = (None if phases == ["finetune"] else  # the baseline never runs the teacher
                   evaluate(teacher.to(device), dev_ds, tokenizer, spec, batch_size, device))  # the figure to retain
    exported = models.load_classifier(str(out), spec.num_labels, None, "student", task_type=spec.type).to(device)
    test = None
    if cfg.task.test and spec.glue is None:  # the dev-selected student (as exported) and the teacher on task.test
        datasets_cache = build.data_cache(cfg)
        test = {"student": test_score(exported, spec, tokenizer, cfg.task, datasets_cache, batch_size, device),
                "teacher": teacher_dev and test_score(teacher.to(device), spec, tokenizer, cfg.task, datasets_cache,
                                                      batch_size, device)}
    # timed as a user loads them: the exported student and the teacher's own directory (the baseline never
    # runs the teacher: its card has no speed-up)
    timing = latency.side_by_side(exported, None if phases == ["finetune"] else models.load_classifier(
        teacher_dir, spec.num_labels, None, "teacher", spec.problem_type, spec.type).to(device),
        repeats=cfg.stage.latency_repeats)
    m = spec.main_metric
    result = {"stage": "task", "task": spec.name, "run_dir": str(run_dir), "export": str(out), "dev": best["dev"],
              "teacher_dev": teacher_dev, "retention": metrics.retention(best["dev"], teacher_dev, m),
              "test": test, "main_metric": m, "best_step": best["step"], "phases": phases,
              "teacher": teacher_dir, "teacher_gate": teacher_gate, "latency_seq64": timing, "init_dev": init_dev,
              "transfer": transfer,
              "parameters": {"student": latency.parameters(exported), "teacher": latency.parameters(teacher)},
              "wall_s": round(time.perf_counter() - started, 1)}  # this invocation's (a resumed run: since resuming)
    # --- the model card (README.md) beside the export: its facts, and its speed beside the teacher's
    modelcard.student_card(cfg, spec, run_dir=run_dir, export_dir=out, student=exported, teacher=teacher,
                           teacher_dir=teacher_dir, dev=best["dev"], teacher_dev=teacher_dev,
                           dev_examples=data.example_count(dev_ds), recipe=recipe(cfg, phases), timing=timing)
    write_results(run_dir, result)
    print(f"[tinykd] student dev {m} = {best['dev'][m]:.4f} (best step {best['step']})"
          + (f"; teacher {teacher_dev[m]:.4f}" if teacher_dev else ""))
    print(f"[tinykd] exported student: {out}")
    return result


def recipe(cfg, phases: list[str]) -> str:
    """The model card's one-line account of how the student was trained."""
    def steps(block: str) -> str:
        return modelcard.phase_length(cfg.train[block])

    init = {"general": "the general-distilled student", "random": "random weights",
            "teacher_layers": "the teacher's layers",
            "pruned": "the fine-tuned teacher pruned to the student's shape"}.get(cfg.student.init, cfg.student.init)
    data_ = f"augmented data ({cfg.task.augmented})" if cfg.task.augmented else "the task's training split"
    if cfg.task.transfer and phases != ["finetune"]:
        data_ += f" and teacher-labelled transfer data ({cfg.task.transfer})"
    if phases == ["finetune"]:
        return (f"no distillation (a baseline): from {init}, fine-tuned on the gold labels of {data_}, "
                f"{steps('task_finetune')} x {cfg.train.task_finetune.batch_size}.")
    d = cfg.distill
    parts = []
    if "intermediate" in phases:
        w = d.weights
        named = [name for name, on in (("embeddings", w.embedding), (f"attention {d.attention_target}", w.attention),
                                       ("hidden states", w.hidden)) if on]
        what = [f"{', '.join(named)}; layer map {d.layer_map}"] if named else []
        if w.relation:
            layer = "last" if d.relation_layer is None else str(d.relation_layer)
            what.append(f"MiniLMv2 attention relations {'/'.join(dict.fromkeys(d.relations))}, teacher layer {layer}")
        parts.append(f"intermediate-layer distillation ({'; '.join(what)}), "
                     f"{steps('task_intermediate')} x {cfg.train.task_intermediate.batch_size}")
    if "prediction" in phases:
        hard = f" + {d.weights.hard_label} x gold-label loss" if d.weights.hard_label else ""
        parts.append(f"prediction-layer distillation ({d.pred_loss} at T={d.temperature:g}{hard}), "
                     f"{steps('task_prediction')} x {cfg.train.task_prediction.batch_size}")
    return f"TinyBERT task distillation from {init} on {data_}: " + "; then ".join(parts) + "."


def train_phase(name, index, best, resume_from, budget, *, cfg, spec, teacher, student, distiller, tokenizer,
                train_ds, dev_ds, run_dir, logger):
    """One phase: its loss, then (prediction and finetune) dev evaluation, keeping the best.
    Returns (its loop, the best dev record)."""
    # the student and the projections train together (the projections only in the intermediate phase)
    trainable = nn.ModuleDict({"student": student, "distiller": distiller})
    loop = build.phase_loop(cfg, name, cfg.train[f"task_{name}"], train_ds, tokenizer, trainable, run_dir=run_dir,
                            logger=logger, budget=budget, index=index, resume_from=resume_from)
    engine = loop.engine
    teacher.to(engine.device)
    w = cfg.distill.weights

    trainable.train()
    for batch in loop:
        if name == "intermediate":
            # 1. teacher hidden states and attention maps under no_grad; 2. the student's; 3. matched losses
            with torch.no_grad(), engine.autocast():
                t_out = layer_outputs(teacher, batch, distiller.needs_attentions)
            with engine.autocast():
                s_out = layer_outputs(student, batch, distiller.needs_attentions)
                loss, parts = distiller(s_out, t_out, batch["attention_mask"])
        elif name == "finetune":  # no distillation: the gold labels only
            with engine.autocast():
                s_logits = models.head_logits(student(**models.model_inputs(student, batch)))
                loss = task_loss(s_logits, gold_labels(batch, spec.type), spec.problem_type, spec.type)
                parts = {"task": loss.detach()}
        else:
            # logits per text (B, C), per token (B, L, C) or an answer's start and end per token (B, L, 2)
            if "teacher_logits" in batch:  # cached (distill.teacher_cache): the teacher does not run
                t_logits = batch["teacher_logits"]
            else:  # only logits are needed: no hidden states or attention maps are returned
                with torch.no_grad(), engine.autocast():
                    t_logits = models.head_logits(teacher(**models.model_inputs(teacher, batch)))
            with engine.autocast():
                s_logits = models.head_logits(student(**models.model_inputs(student, batch)))
                # a token task compares its labelled tokens (a word's first sub-token), QA every real token
                pred = prediction_loss(s_logits, t_logits, cfg.distill.pred_loss, cfg.distill.temperature,
                                       spec.problem_type, spec.type, prediction_mask(batch, spec.type))
                parts = {"prediction": pred.detach()}
                loss = w.prediction * pred
                if w.hard_label:  # the rows with gold labels (transfer rows have none)
                    hard = gold_label_loss(s_logits, batch, spec.problem_type, spec.type)
                    parts["hard_label"] = hard.detach()
                    loss = loss + w.hard_label * hard
        if not loop.update(loss, parts, items=batch["input_ids"].size(0)):
            continue
        if name != "intermediate" and loop.eval_due:
            best = evaluate_and_keep_best(loop, student, dev_ds, tokenizer, spec, best, run_dir / "student")
        loop.checkpoint(best=best)
    return loop, best
