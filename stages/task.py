"""Stage `task`: task-specific distillation (TinyBERT §3.2, two phases).

A fine-tuned teacher → the student (from the general stage, random, or a directory):
  phase `intermediate`: embedding, attention and hidden-state losses on the task's data;
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

import json
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from tinykd import build, gate, models, targets
from tinykd.data import Batcher
from tinykd.distiller import features
from tinykd.engine import build_engine, pick_device
from tinykd.errors import TinyKDError
from tinykd.evaluate import evaluate
from tinykd.losses import prediction_loss, task_loss
from tinykd.run import (MetricsLogger, atomic_write_text, check_finite, load_checkpoint, prepare_run_dir,
                        save_checkpoint, save_config, seed_everything, set_rng_state)

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def build_student(cfg, spec, teacher, teacher_tok):
    """The student classifier, initialised as `student.init` says; its vocabulary must be the teacher's."""
    init = cfg.student.init
    if init in ("random", "teacher_layers"):
        student = models.random_student(build.student_config(cfg, teacher.config, spec), cfg.seed, head="classifier")
        if init == "teacher_layers":  # the fine-tuned teacher's embeddings and layers (its classifier is not copied)
            copied = models.init_from_teacher_layers(student, teacher, cfg.student.init_layers)
            print(f"[tinykd] student initialised from the fine-tuned teacher: embeddings and layers {copied}")
        return student
    path = Path(cfg.stage.general_dir if init == "general" else init)
    if not (path / "config.json").is_file():
        if init == "general":
            raise TinyKDError(
                f"student.init=general, but there is no general-distilled student at {path}.",
                "run `python -m tinykd stage=general` first (same teacher/student/debug options), or set "
                "student.init=random, or student.init=<model directory>.",
            )
        raise TinyKDError(f"student.init path {path} does not exist or has no config.json.",
                          "set student.init=general, random, teacher_layers, or an existing model directory.")
    check_vocab = models.load_tokenizer(str(path), "student")
    models.check_same_vocab(check_vocab, teacher_tok, str(path), "teacher")
    return models.load_classifier(str(path), spec.num_labels, spec.label_names, "student")


def teacher_cache_precision(cfg, examples: int) -> str:
    """What `distill.teacher_cache` means for this run: fp16, fp32 or none. `auto` caches (fp16)
    only when the prediction phase reads every training example at least twice: filling the cache
    is one teacher pass over the whole set, which a short phase would never make."""
    choice = cfg.distill.teacher_cache
    if choice not in ("auto", "none", *targets.PRECISIONS):
        raise TinyKDError(f"Unknown distill.teacher_cache '{choice}'.", "choose one of: auto, fp16, fp32, none.")
    if choice != "auto":
        return choice
    phase = cfg.train.task_prediction
    per_step = phase.batch_size * phase.grad_accum
    steps = phase.max_steps if phase.max_steps > 0 else math.ceil(phase.epochs * examples / per_step)
    return "fp16" if steps * per_step >= 2 * examples else "none"


def run(cfg) -> dict:
    if cfg.student.arch == "bilstm":
        from stages import task_bilstm

        return task_bilstm.run(cfg)
    build.set_threads(cfg)
    seed_everything(cfg.seed)
    spec = build.task_spec(cfg)

    # --- build: the fine-tuned teacher (frozen), the student, matches and projections, data
    teacher_dir = build.finetuned_teacher_dir(cfg)
    tokenizer = models.load_tokenizer(teacher_dir)
    teacher = models.freeze(models.load_classifier(teacher_dir, spec.num_labels, spec.label_names, "teacher"))
    student = build_student(cfg, spec, teacher, tokenizer)
    distiller = build.distiller(cfg, student, teacher)
    train_ds = build.task_split(cfg, tokenizer, "train")
    dev_ds = build.task_split(cfg, tokenizer, "dev")
    phases = list(cfg.stage.phases)
    unknown = set(phases) - {"intermediate", "prediction", "finetune"}
    if unknown or not phases or ("finetune" in phases and len(phases) > 1):
        raise TinyKDError(f"Unknown task phases {sorted(unknown) or phases}.",
                          "set stage.phases to a list of intermediate and/or prediction, or to [finetune] (the "
                          "no-distillation baseline) alone.")
    teacher_gate = None
    if phases != ["finetune"]:
        teacher.to(pick_device(cfg.engine.device))
        teacher_gate = gate.check_teacher(
            teacher, teacher_dir, dev_ds, tokenizer, spec, examples=cfg.distill.gate_examples,
            margin=cfg.distill.gate_margin, allow_weak=cfg.distill.allow_weak_teacher,
            batch_size=cfg.train.task_prediction.eval_batch_size, device=pick_device(cfg.engine.device))

    run_dir = prepare_run_dir(cfg.runs.task, cfg.resume)
    save_config(run_dir, cfg)
    print(f"[tinykd] stage=task task={spec.name} teacher={teacher_dir} student.init={cfg.student.init} "
          f"train={len(train_ds)} dev={len(dev_ds)} run_dir={run_dir}")
    trainable = nn.ModuleDict({"student": student, "distiller": distiller})
    logger = MetricsLogger(run_dir, cfg.logger, cfg, "task")

    ckpt = load_checkpoint(run_dir) if cfg.resume else None
    best = None if ckpt is None else ckpt["best"]
    if ckpt is not None:
        if ckpt["model"]:  # engine=deepspeed: the weights come back with the phase's DeepSpeed checkpoint
            trainable.load_state_dict(ckpt["model"])
        print(f"[tinykd] resuming phase {ckpt['phase']} at step {ckpt['step']}")
    cache = teacher_cache_precision(cfg, len(train_ds)) if "prediction" in phases else "none"
    if cache != "none":
        # The prediction phase reads only the teacher's logits: computed once over the training set and
        # cached on disk (epochs, resumed runs and sweep trials with the same teacher and data reuse them).
        t0 = time.perf_counter()
        teacher.to(pick_device(cfg.engine.device))
        train_ds = targets.with_teacher_outputs(
            teacher, teacher_dir, train_ds, tokenizer, batch_size=cfg.train.task_prediction.eval_batch_size,
            device=pick_device(cfg.engine.device), cache_dir=str(Path(cfg.paths.cache) / "teacher_outputs"),
            progress=cfg.progress, precision=cache, representations=False)
        print(f"[tinykd] teacher logits for {len(train_ds)} training examples ({cache}, cached): "
              f"{time.perf_counter() - t0:.1f} s")

    # `steps_done` counts optimizer steps taken in this process, across phases (interrupt_after)
    ctx = dict(cfg=cfg, spec=spec, teacher=teacher, student=student, distiller=distiller, trainable=trainable,
               tokenizer=tokenizer, train_ds=train_ds, dev_ds=dev_ds, run_dir=run_dir, logger=logger,
               steps_done=[0])
    for index, name in enumerate(phases):
        if ckpt is not None and index < ckpt["phase_index"]:
            continue
        resume_state = ckpt if (ckpt is not None and index == ckpt["phase_index"]) else None
        best, interrupted, engine = train_phase(name, index, best, resume_state, **ctx)
        if interrupted:
            logger.close()
            return {"run_dir": str(run_dir), "interrupted": True}

    if best is None:  # no prediction phase ran: evaluate and export the final student
        best = {"dev": evaluate(student, dev_ds, tokenizer, spec, cfg.train.task_prediction.eval_batch_size,
                                engine.device), "step": None, "phase": phases[-1]}
        with engine.gathered():
            models.export(student, tokenizer, run_dir / "student")
    logger.close()
    out = run_dir / "student"
    result = {"stage": "task", "task": spec.name, "run_dir": str(run_dir), "export": str(out), "dev": best["dev"],
              "main_metric": spec.main_metric, "best_step": best["step"], "phases": phases,
              "teacher": teacher_dir, "teacher_gate": teacher_gate}
    atomic_write_text(run_dir / "results.json", json.dumps(result, indent=2))
    print(f"[tinykd] student dev {spec.main_metric} = {best['dev'][spec.main_metric]:.4f} (best step {best['step']})")
    print(f"[tinykd] exported student: {out}")
    return result


def train_phase(name, index, best, resume_state, *, cfg, spec, teacher, student, distiller, trainable, tokenizer,
                train_ds, dev_ds, run_dir, logger, steps_done):
    """One phase's loop. Returns (best dev record, interrupted?, its engine)."""
    phase = {"intermediate": cfg.train.task_intermediate, "prediction": cfg.train.task_prediction,
             "finetune": cfg.train.task_finetune}[name]
    batcher = Batcher(train_ds, tokenizer, phase.batch_size, cfg.seed)
    total = build.total_steps(phase, batcher.batches_per_epoch)
    engine = build_engine(cfg.engine, phase, trainable, total, run_dir=run_dir, label=name)
    device = engine.device
    teacher.to(device)
    step = 0
    if resume_state is not None:
        engine.load_state_dict(resume_state["engine"])
        step = resume_state["step"]
        set_rng_state(resume_state["rng"])
    w = cfg.distill.weights
    main = spec.main_metric

    def checkpoint():
        save_checkpoint(run_dir, {"phase": name, "phase_index": index, "step": step, "model": engine.module_state(),
                                  "engine": engine.state_dict(), "best": best})

    def evaluate_and_keep_best():
        nonlocal best
        metrics = evaluate(student, dev_ds, tokenizer, spec, phase.eval_batch_size, device)
        logger.log({"phase": name, "step": step, **{f"dev/{k}": v for k, v in metrics.items()}})
        if best is None or metrics[main] > best["dev"][main]:
            best = {"dev": metrics, "step": step, "phase": name}
            with engine.gathered():
                models.export(student, tokenizer, run_dir / "student")

    trainable.train()
    bar = tqdm(total=total, initial=step, desc=f"task/{name}", disable=not cfg.progress or step >= total)
    seen, t0 = 0, time.perf_counter()
    for batch in batcher.iterate(engine.micro) if step < total else []:
        batch = {k: v.to(device) for k, v in batch.items()}
        inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
        if name == "intermediate":
            # 1. teacher features under no_grad; 2. student features; 3. matched losses
            with torch.no_grad(), engine.autocast():
                t_out = features(teacher, inputs, distiller.needs_attentions)
            with engine.autocast():
                s_out = features(student, inputs, distiller.needs_attentions)
                loss, parts = distiller(s_out, t_out, batch["attention_mask"])
        elif name == "finetune":  # no distillation: the gold labels only
            with engine.autocast():
                s_logits = student(**models.model_inputs(student, inputs)).logits
                loss = task_loss(s_logits, batch["labels"], spec.is_regression)
                parts = {"task": loss.detach()}
        else:
            if "teacher_logits" in batch:  # cached (distill.teacher_cache): the teacher does not run
                t_logits = batch["teacher_logits"]
            else:  # only logits are needed: no hidden states or attention maps are returned
                with torch.no_grad(), engine.autocast():
                    t_logits = teacher(**models.model_inputs(teacher, inputs)).logits
            with engine.autocast():
                s_logits = student(**models.model_inputs(student, inputs)).logits
                pred = prediction_loss(s_logits, t_logits, cfg.distill.pred_loss, cfg.distill.temperature,
                                       spec.is_regression)
                parts = {"prediction": pred.detach()}
                loss = w.prediction * pred
                if w.hard_label:
                    hard = task_loss(s_logits, batch["labels"], spec.is_regression)
                    parts["hard_label"] = hard.detach()
                    loss = loss + w.hard_label * hard
        check_finite(loss, parts, step + 1, run_dir)
        engine.backward(loss)
        seen += batch["input_ids"].size(0)
        if not engine.step():
            continue
        step += 1
        steps_done[0] += 1
        rate = seen / (time.perf_counter() - t0)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{engine.lr():.2e}", ex_s=f"{rate:.0f}")
        if step % phase.log_every == 0 or step == total:
            logger.log({"phase": name, "step": step, "loss": loss.item(), "lr": engine.lr(), "examples_per_s": rate,
                        **{f"loss/{k}": v.item() for k, v in parts.items()}})
        if name != "intermediate" and ((phase.eval_every and step % phase.eval_every == 0) or step == total):
            evaluate_and_keep_best()
        interrupted = cfg.interrupt_after is not None and steps_done[0] >= cfg.interrupt_after
        if step % phase.save_every == 0 or step == total or interrupted:
            checkpoint()
        if interrupted and step < total:
            bar.close()
            print(f"[tinykd] interrupted in phase {name} after step {step}/{total}; resume=true continues. "
                  f"run_dir={run_dir}")
            return best, True, engine
        if step >= total:
            break
    bar.close()
    return best, False, engine
