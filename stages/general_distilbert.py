"""Stage `general` with `distill=distilbert`: DistilBERT's general distillation.

A masked-LM teacher (frozen) → a student masked LM, usually a DistilBERT of the teacher's width
with half its layers, initialised from one teacher layer in two (`student=distilbert`). Every
batch of corpus blocks is masked as in BERT (15% of tokens: 80% [MASK], 10% random, 10% kept;
seeded per batch, so a resumed run masks as an uninterrupted one); both models read the same
masked input; the loss is the triple loss (`losses.distilbert_triple`):

  alpha_ce · T²·KL over the vocabulary  +  alpha_mlm · masked-LM cross-entropy  +  alpha_cos · (1 − cos)

Build → loop → export `<run_dir>/student`, a plain `*ForMaskedLM` directory (a DistilBERT
student loads as `DistilBertForMaskedLM`) that the task stage takes as `student.init=general`.
"""

from __future__ import annotations

import torch

from tinykd import build, models, students
from tinykd.errors import TinyKDError
from tinykd.loop import StepBudget
from tinykd.losses import distilbert_triple
from tinykd.mlm import Masker, head_logits
from tinykd.run import MetricsLogger, load_checkpoint, prepare_run_dir, save_config, write_results


def run(cfg) -> dict:
    build.start(cfg)
    d = cfg.distill

    # --- build: the masked-LM teacher (frozen), the student masked LM, the corpus
    source, teacher = build.mlm_teacher(cfg)
    teacher = models.freeze(teacher)
    tokenizer = models.load_tokenizer(source, "masked-LM teacher")
    student, _ = students.general_student(cfg, teacher, head="mlm")  # never pruned (config.check refuses it)
    s_width = student.config.hidden_size  # DistilBertConfig maps it to `dim`
    if d.alpha_cos and s_width != teacher.config.hidden_size:
        raise TinyKDError(
            f"The cosine loss compares last hidden states, but the student is {s_width} wide and the teacher "
            f"{teacher.config.hidden_size}.",
            "use student=distilbert (the teacher's width), or set distill.alpha_cos=0.",
        )
    corpus = build.corpus(cfg, tokenizer)

    run_dir = prepare_run_dir(cfg.runs.general, cfg.resume, cfg.keep_previous)
    save_config(run_dir, cfg)
    n_params = sum(p.numel() for p in student.base_model.parameters())
    print(f"[tinykd] stage=general distill=distilbert teacher={source} student={student.config.model_type} "
          f"({n_params / 1e6:.1f}M encoder parameters) corpus={len(corpus)} blocks run_dir={run_dir}")
    logger = MetricsLogger(run_dir, cfg.logger, cfg, "general")
    loop = build.phase_loop(cfg, "general", cfg.train.general, corpus, tokenizer, student, run_dir=run_dir,
                            logger=logger, budget=StepBudget(cfg.interrupt_after), unit="tokens",
                            resume_from=load_checkpoint(run_dir, cfg.keep_checkpoints) if cfg.resume else None)
    engine = loop.engine
    teacher.to(engine.device)
    masker = Masker(tokenizer, d.mlm_prob, cfg.seed)
    alphas = dict(temperature=d.temperature, alpha_ce=d.alpha_ce, alpha_mlm=d.alpha_mlm, alpha_cos=d.alpha_cos)

    # --- loop
    student.train()
    parts = {}
    for batch in loop:
        # 1. mask (seeded by the micro-batch's index, so a resumed run masks as an uninterrupted one);
        #    both models read the same masked input
        ids, labels = masker(batch["input_ids"].cpu(), batch["attention_mask"].cpu(), engine.micro)
        batch["input_ids"], labels = ids.to(engine.device), labels.to(engine.device)
        mask = batch["attention_mask"]
        # the KL term's tokens: every real token, or only the masked ones
        rows = (labels != -100) if d.restrict_ce_to_mask else mask.bool()
        # 2. teacher: last hidden states, and vocabulary logits at those tokens only; no graph
        with torch.no_grad(), engine.autocast():
            t_hidden = teacher.base_model(**models.model_inputs(teacher.base_model, batch))[0]
            t_logits = head_logits(teacher, t_hidden[rows])
        # 3. student: the same, with gradients; then the three losses
        with engine.autocast():
            s_hidden = student.base_model(**models.model_inputs(student.base_model, batch))[0]
            s_logits = head_logits(student, s_hidden[rows])
            loss, parts = distilbert_triple(s_logits, t_logits, labels[rows], s_hidden, t_hidden, mask, **alphas)
        if loop.update(loss, parts, items=int(mask.sum())):
            loop.checkpoint()
    logger.close()
    if loop.interrupted:
        return {"run_dir": str(run_dir), "interrupted": True, "step": loop.step}

    with engine.gathered():  # ZeRO-3: the full weights for rank 0 to write
        out = models.export(student, tokenizer, run_dir / "student")
    result = {"stage": "general", "method": "distilbert", "run_dir": str(run_dir), "export": str(out), "steps": loop.step,
              "teacher": source, "student_type": student.config.model_type,
              "last_loss": {k: float(v) for k, v in parts.items()} or None}
    write_results(run_dir, result)
    print(f"[tinykd] exported general student: {out}")
    return result
