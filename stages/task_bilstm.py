"""Stage `task` with `student=bilstm`: a BiLSTM student from a fine-tuned teacher and unlabeled
transfer data (Mukherjee & Hassan Awadallah, 2019).

The teacher labels the transfer data once (`tinykd.teacher_outputs`: its logits and its [CLS]
representation, cached). Then the staged schedule of the paper, one phase each, in
`stage.bilstm_phases` order:

  representation  on the transfer data: MSE between the student's sentence representation,
                  projected to the teacher's width (a linear map beside the student, never
                  exported), and the teacher's representation;
  logits          on the transfer data: the teacher's hard labels (cross-entropy on its argmax)
                  or soft targets (its logits, through `distill.pred_loss`): `distill.transfer_targets`;
  finetune        on the labelled set: cross-entropy on the gold labels, releasing one layer group
                  every `stage.unfreeze_every` steps from the top (classifier, representation,
                  LSTM, embeddings): gradual unfreezing.

The labelled set is the task's training set (`task.train_limit` rows); the transfer data is
`stage.transfer`: the training sentences with their labels withheld, the rows after the labelled
ones (the low-resource setting), or a datasets directory such as `stage=augment`'s output.
The student is evaluated on dev as it goes; the best is exported as `<run_dir>/student`
(config.json + model.safetensors + the teacher's tokenizer), which
`AutoModelForSequenceClassification.from_pretrained` loads once `tinykd` is imported.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import nn

from tinykd import build, config, data, gate, latency, modelcard, models, students, teacher_outputs
from tinykd.choices import SINGLE_LABEL
from tinykd.engine import pick_device
from tinykd.errors import TinyKDError
from tinykd.evaluate import evaluate, evaluate_and_keep_best
from tinykd.loop import StepBudget
from tinykd.losses import prediction_loss, task_loss
from tinykd.run import MetricsLogger, load_checkpoint, prepare_run_dir, remaining_phases, save_config, write_results


def transfer_set(cfg, spec, tokenizer, labelled_count: int):
    """The unlabeled transfer data, tokenised (its labels are never read)."""
    where, limit = cfg.stage.transfer, cfg.stage.transfer_limit
    # the whole training set (no task.train_limit), or the datasets directory `where`
    ds = data.load_split(spec, "train", tokenizer, cfg.task, build.data_cache(cfg),
                         augmented=None if where in ("train", "rest") else where).dataset
    if where == "rest":
        ds = ds.select(range(labelled_count, len(ds)))
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise TinyKDError(f"The transfer data (stage.transfer={where}) is empty.",
                          "use stage.transfer=train, or a task.train_limit smaller than the training set.")
    return ds


def run(cfg) -> dict:
    build.start(cfg)
    spec = build.task_spec(cfg)
    phases = list(cfg.stage.bilstm_phases)  # checked at start-up (config.check), with distill.transfer_targets

    # --- build: the fine-tuned teacher (frozen), the student and its projection, the data
    teacher_dir, teacher = build.finetuned_teacher(cfg, spec)  # classes matched to the task's by name
    tokenizer = models.load_tokenizer(teacher_dir)
    student = students.bilstm_student(cfg, teacher, tokenizer, spec)
    # the representation's projection to the teacher's width: beside the student, never exported
    projection = nn.Linear(student.config.representation_size, teacher.config.hidden_size)
    trainable = nn.ModuleDict({"student": student, "projection": projection})
    labelled = build.task_split(cfg, spec, tokenizer, "train")
    dev = build.task_split(cfg, spec, tokenizer, "dev")
    device = pick_device(cfg.engine.device)
    teacher.to(device)
    gate_examples = config.sample_size(cfg, "distill.gate_examples", data.example_count(dev), "dev examples")
    teacher_gate = gate.check_teacher(
        teacher, teacher_dir, dev, tokenizer, spec, examples=gate_examples, margin=cfg.distill.gate_margin,
        allow_weak=cfg.distill.allow_weak_teacher, batch_size=cfg.train.bilstm_logits.eval_batch_size, device=device)
    run_dir = prepare_run_dir(cfg.runs.task, cfg.resume, cfg.keep_previous)
    save_config(run_dir, cfg)
    transfer = teacher_outputs.with_teacher_outputs(
        teacher, teacher_dir, transfer_set(cfg, spec, tokenizer, len(labelled)), tokenizer,
        batch_size=cfg.train.bilstm_logits.eval_batch_size, device=device,
        cache_dir=str(Path(cfg.paths.cache) / "teacher_outputs"), progress=cfg.progress, precision="fp32")
    print(f"[tinykd] stage=task student=bilstm task={spec.name} teacher={teacher_dir} labelled={len(labelled)} "
          f"transfer={len(transfer)} ({cfg.stage.transfer}, {cfg.distill.transfer_targets} targets) dev={len(dev)} "
          f"phases={phases} run_dir={run_dir}")
    logger = MetricsLogger(run_dir, cfg.logger, cfg, "task")

    # --- the phases, in order; a resumed run skips those its checkpoint is past
    ckpt = load_checkpoint(run_dir, cfg.keep_checkpoints) if cfg.resume else None
    best = ckpt["state"]["best"] if ckpt is not None else None
    budget = StepBudget(cfg.interrupt_after)  # interrupt_after: optimiser steps in this process, over all phases
    for index, name, resume_from in remaining_phases(phases, ckpt):
        loop, best = train_phase(
            name, index, best, resume_from, budget, cfg=cfg, spec=spec, student=student, projection=projection,
            trainable=trainable, tokenizer=tokenizer, dev=dev, run_dir=run_dir, logger=logger,
            ds={"representation": transfer, "logits": transfer, "finetune": labelled}[name])
        if loop.interrupted:
            logger.close()
            return {"run_dir": str(run_dir), "interrupted": True}
    if best is None:  # only the representation phase ran: export what there is
        best = {"dev": evaluate(student, dev, tokenizer, spec, loop.hp.eval_batch_size, device), "step": None,
                "phase": phases[-1]}
        models.export(student, tokenizer, run_dir / "student")
    logger.close()

    # --- the exported student: its size and CPU latency beside the teacher's (same code, same inputs)
    out = run_dir / "student"
    exported = models.load_classifier(str(out), spec.num_labels, spec.label_names, "student",
                                      spec.problem_type).to(device)
    timing = latency.side_by_side(exported, teacher, repeats=cfg.stage.latency_repeats)
    teacher_dev = evaluate(teacher.to(device), dev, tokenizer, spec, cfg.train.bilstm_finetune.eval_batch_size, device)
    result = {"stage": "task", "student": "bilstm", "task": spec.name, "run_dir": str(run_dir), "export": str(out),
              "dev": best["dev"], "teacher_dev": teacher_dev, "main_metric": spec.main_metric, "best_step": best["step"],
              "best_phase": best["phase"], "teacher": teacher_dir, "teacher_gate": teacher_gate, "transfer": cfg.stage.transfer,
              "transfer_examples": len(transfer), "labelled_examples": len(labelled),
              "transfer_targets": cfg.distill.transfer_targets,
              "student_params": latency.parameters(exported), "teacher_params": latency.parameters(teacher),
              "latency_seq64": timing}
    modelcard.student_card(cfg, spec, run_dir=run_dir, export_dir=out, student=exported, teacher=teacher,
                           teacher_dir=teacher_dir, dev=best["dev"], teacher_dev=teacher_dev,
                           dev_examples=data.example_count(dev), recipe=recipe(cfg, phases), timing=timing)
    write_results(run_dir, result)
    print(f"[tinykd] BiLSTM student dev {spec.main_metric} = {best['dev'][spec.main_metric]:.4f} "
          f"(best: {best['phase']} step {best['step']}); {result['student_params'] / 1e6:.2f}M parameters vs the "
          f"teacher's {result['teacher_params'] / 1e6:.2f}M; batch 32 x 64 tokens: "
          f"{timing['student']['b32']['median_ms']:.1f} ms vs {timing['teacher']['b32']['median_ms']:.1f} ms")
    print(f"[tinykd] exported student: {out}")
    return result


def recipe(cfg, phases: list[str]) -> str:
    """The model card's one-line account of how the BiLSTM student was trained."""
    def steps(block: str) -> str:
        return modelcard.phase_length(cfg.train[block])

    what = {"representation": "its sentence representation matched to the teacher's (MSE through a projection)",
            "logits": f"the teacher's {cfg.distill.transfer_targets} targets on the transfer data "
                      f"({cfg.stage.transfer})",
            "finetune": "fine-tuned on the gold labels"}
    return ("BiLSTM student (embeddings: " + cfg.student.embeddings + "): "
            + "; then ".join(f"{what[p]}, {steps('bilstm_' + p)}" for p in phases) + ".")


def trainable_groups(student, step: int, every: int) -> int:
    """How many layer groups train at `step` under gradual unfreezing (all when every=0)."""
    total = len(student.groups())
    return total if every <= 0 else min(total, 1 + step // every)


def train_phase(name, index, best, resume_from, budget, *, cfg, spec, student, projection, trainable, tokenizer, ds,
                dev, run_dir, logger):
    """One phase: its loss, then (logits and finetune) dev evaluation, keeping the best.
    Returns (its loop, the best dev record)."""
    # The projection trains only in the representation phase; the student in every phase.
    module = trainable if name == "representation" else student
    for p in trainable.parameters():
        p.requires_grad_(True)
    loop = build.phase_loop(cfg, name, cfg.train[f"bilstm_{name}"], ds, tokenizer, module, run_dir=run_dir,
                            logger=logger, budget=budget, index=index, resume_from=resume_from)
    hard = cfg.distill.transfer_targets == "hard"

    trainable.train()
    for batch in loop:
        if name == "finetune":  # gradual unfreezing: the top groups train, the others wait
            released = trainable_groups(student, loop.step, cfg.stage.unfreeze_every)
            for i, group in enumerate(student.groups()):
                group.requires_grad_(i < released)
        out = student(**models.model_inputs(student, batch), output_hidden_states=name == "representation")
        if name == "representation":
            loss = F.mse_loss(projection(out.hidden_states[0]), batch["teacher_rep"])
        elif name == "logits":
            t_logits = batch["teacher_logits"]
            loss = (task_loss(out.logits, t_logits.argmax(-1), SINGLE_LABEL) if hard else
                    prediction_loss(out.logits, t_logits, cfg.distill.pred_loss, cfg.distill.temperature,
                                    spec.problem_type))
        else:
            loss = task_loss(out.logits, batch["labels"], spec.problem_type)
        if not loop.update(loss, {name: loss.detach()}, items=batch["input_ids"].size(0)):
            continue
        if name != "representation" and loop.eval_due:
            best = evaluate_and_keep_best(loop, student, dev, tokenizer, spec, best, run_dir / "student")
        loop.checkpoint(best=best)
    return loop, best
