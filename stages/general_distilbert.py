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

import json
import time

import torch
from tqdm.auto import tqdm

from tinykd import build, models
from tinykd.data import Batcher
from tinykd.engine import build_engine
from tinykd.errors import TinyKDError
from tinykd.losses import distilbert_triple
from tinykd.mlm import Masker, head_logits
from tinykd.run import (MetricsLogger, atomic_write_text, check_finite, prepare_run_dir, restore, save_checkpoint,
                        save_config, seed_everything)


def run(cfg) -> dict:
    build.set_threads(cfg)
    seed_everything(cfg.seed)
    d = cfg.distill

    # --- build: the masked-LM teacher (frozen), the student masked LM, the corpus
    source, teacher = build.mlm_teacher(cfg)
    teacher = models.freeze(teacher)
    tokenizer = models.load_tokenizer(source, "masked-LM teacher")
    student = build.general_student(cfg, teacher, head="mlm")
    s_width = student.config.hidden_size  # DistilBertConfig maps it to `dim`
    if d.alpha_cos and s_width != teacher.config.hidden_size:
        raise TinyKDError(
            f"The cosine loss compares last hidden states, but the student is {s_width} wide and the teacher "
            f"{teacher.config.hidden_size}.",
            "use student=distilbert (the teacher's width), or set distill.alpha_cos=0.",
        )
    corpus = build.corpus(cfg, tokenizer)

    run_dir = prepare_run_dir(cfg.runs.general, cfg.resume)
    save_config(run_dir, cfg)
    n_params = sum(p.numel() for p in student.base_model.parameters())
    print(f"[tinykd] stage=general distill=distilbert teacher={source} student={student.config.model_type} "
          f"({n_params / 1e6:.1f}M encoder parameters) corpus={len(corpus)} blocks run_dir={run_dir}")
    phase = cfg.train.general
    batcher = Batcher(corpus, tokenizer, phase.batch_size, cfg.seed)
    total = build.total_steps(phase, batcher.batches_per_epoch)
    engine = build_engine(cfg.engine, phase, student, total)
    device = engine.device
    teacher.to(device)
    masker = Masker(tokenizer, d.mlm_prob, cfg.seed)
    logger = MetricsLogger(run_dir, cfg.logger, cfg, "general")
    step = restore(run_dir, cfg.resume, student, engine)
    alphas = dict(temperature=d.temperature, alpha_ce=d.alpha_ce, alpha_mlm=d.alpha_mlm, alpha_cos=d.alpha_cos)

    # --- loop
    student.train()
    bar = tqdm(total=total, initial=step, desc="general/distilbert", disable=not cfg.progress or step >= total)
    tokens, t0, steps_here = 0, time.perf_counter(), 0
    for micro, batch in enumerate(batcher.iterate(engine.micro) if step < total else [], start=engine.micro):
        # 1. mask (seeded by the micro-batch index); both models read the same masked input
        ids, labels = masker(batch["input_ids"], batch["attention_mask"], micro)
        batch = {k: v.to(device) for k, v in {**batch, "input_ids": ids}.items()}
        labels = labels.to(device)
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
        check_finite(loss, parts, step + 1, run_dir)
        engine.backward(loss)
        tokens += int(mask.sum())
        if not engine.step():
            continue
        step += 1
        steps_here += 1
        rate = tokens / (time.perf_counter() - t0)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{engine.lr():.2e}", tok_s=f"{rate:.0f}")
        if step % phase.log_every == 0 or step == total:
            logger.log({"phase": "general", "step": step, "loss": loss.item(), "lr": engine.lr(),
                        "tokens_per_s": rate, **{f"loss/{k}": v.item() for k, v in parts.items()}})
        interrupted = cfg.interrupt_after is not None and steps_here >= cfg.interrupt_after
        if step % phase.save_every == 0 or step == total or interrupted:
            save_checkpoint(run_dir, {"phase": "general", "step": step, "model": student.state_dict(),
                                      "engine": engine.state_dict()})
        if interrupted and step < total:
            bar.close()
            logger.close()
            print(f"[tinykd] interrupted after step {step}/{total}; resume=true continues. run_dir={run_dir}")
            return {"run_dir": str(run_dir), "interrupted": True, "step": step}
        if step >= total:
            break
    bar.close()
    logger.close()

    out = models.export(student, tokenizer, run_dir / "student")
    result = {"stage": "general", "method": "distilbert", "run_dir": str(run_dir), "export": str(out), "steps": step,
              "teacher": source, "student_type": student.config.model_type,
              "last_loss": {k: float(v) for k, v in parts.items()} if step and steps_here else None}
    atomic_write_text(run_dir / "results.json", json.dumps(result, indent=2))
    print(f"[tinykd] exported general student: {out}")
    return result
