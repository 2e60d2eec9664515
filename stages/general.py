"""Stage `general`: general distillation on unlabeled text.

A pretrained teacher → a student (random, or `student.general_init=teacher_layers`: the
teacher's embeddings and one layer in two copied in), with intermediate-layer losses only
(embeddings, attention, hidden states; TinyBERT §3.2). Build → loop → export
`<run_dir>/student`, a plain `BertModel` directory.

`distill=distilbert` runs DistilBERT's triple loss instead: `stages/general_distilbert.py`.
"""

from __future__ import annotations

import json
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from tinykd import build, models
from tinykd.data import Batcher
from tinykd.distiller import features
from tinykd.engine import build_engine
from tinykd.errors import TinyKDError
from tinykd.run import (MetricsLogger, atomic_write_text, check_finite, prepare_run_dir, restore, save_checkpoint,
                        save_config, seed_everything)


def run(cfg) -> dict:
    if cfg.distill.method == "distilbert":
        from stages import general_distilbert

        return general_distilbert.run(cfg)
    if cfg.distill.method != "tinybert":
        raise TinyKDError(f"Unknown distill.method '{cfg.distill.method}'.", "choose one of: tinybert, distilbert.")
    build.set_threads(cfg)
    seed_everything(cfg.seed)

    # --- build: frozen teacher, student with the teacher's vocabulary, matches, corpus
    source = build.teacher_source(cfg)
    tokenizer = models.load_tokenizer(source)
    teacher = models.freeze(models.load_encoder(source))
    student = build.general_student(cfg, teacher, head="none")
    distiller = build.distiller(cfg, student, teacher)
    corpus = build.corpus(cfg, tokenizer)

    run_dir = prepare_run_dir(cfg.runs.general, cfg.resume)
    save_config(run_dir, cfg)
    print(f"[tinykd] stage=general corpus={len(corpus)} blocks of <= {cfg.corpus.max_seq_len} tokens run_dir={run_dir}")
    phase = cfg.train.general
    batcher = Batcher(corpus, tokenizer, phase.batch_size, cfg.seed)
    total = build.total_steps(phase, batcher.batches_per_epoch)
    # Only the student and the projections are trained; the teacher stays outside the optimizer.
    trainable = nn.ModuleDict({"student": student, "distiller": distiller})
    engine = build_engine(cfg.engine, phase, trainable, total, run_dir=run_dir)
    device = engine.device
    teacher.to(device)
    logger = MetricsLogger(run_dir, cfg.logger, cfg, "general")

    step = restore(run_dir, cfg.resume, trainable, engine)

    # --- loop
    trainable.train()
    bar = tqdm(total=total, initial=step, desc="general", disable=not cfg.progress or step >= total)
    tokens, t0, steps_here = 0, time.perf_counter(), 0
    for batch in batcher.iterate(engine.micro) if step < total else []:
        batch = {k: v.to(device) for k, v in batch.items()}
        # 1. teacher features, no graph kept
        with torch.no_grad(), engine.autocast():
            t_out = features(teacher, batch, distiller.needs_attentions)
        # 2. student features and the matched losses (projections applied inside the distiller)
        with engine.autocast():
            s_out = features(student, batch, distiller.needs_attentions)
            loss, parts = distiller(s_out, t_out, batch["attention_mask"])
        check_finite(loss, parts, step + 1, run_dir)
        engine.backward(loss)
        tokens += int(batch["attention_mask"].sum())
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
            save_checkpoint(run_dir, {"phase": "general", "step": step, "model": engine.module_state(),
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

    # --- export the student alone: projections stay behind in the checkpoint
    with engine.gathered():  # ZeRO-3: the full weights, on every rank, for rank 0 to write
        out = models.export(student, tokenizer, run_dir / "student")
    result = {"stage": "general", "run_dir": str(run_dir), "export": str(out), "steps": step}
    atomic_write_text(run_dir / "results.json", json.dumps(result, indent=2))
    print(f"[tinykd] exported general student: {out}")
    return result
