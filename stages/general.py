"""Stage `general`: general distillation on unlabeled text.

A pretrained teacher → a student (random; `student.general_init=teacher_layers`: the teacher's
embeddings and one layer in two copied in; `student.init=pruned`: the teacher pruned to the student's
shape, tinykd/prune.py), with intermediate-layer losses only
(embeddings, attention, hidden states; TinyBERT §3.2), and/or MiniLMv2's self-attention relation
loss (`distill=minilm`, distill.weights.relation). Build → loop → export `<run_dir>/student`, a plain
`BertModel` directory.

`distill=distilbert` runs DistilBERT's triple loss instead: `stages/general_distilbert.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from tinykd import build, models, students
from tinykd.distiller import layer_outputs
from tinykd.loop import StepBudget
from tinykd.run import MetricsLogger, load_checkpoint, prepare_run_dir, save_config, write_results
from tinykd.stages import general_distilbert


def run(cfg) -> dict:
    if cfg.distill.method == "distilbert":  # DistilBERT's triple loss: a recipe of its own
        return general_distilbert.run(cfg)
    build.start(cfg)

    # --- build: frozen teacher, student with the teacher's vocabulary, matches, corpus
    source = build.teacher_source(cfg)
    tokenizer = models.load_tokenizer(source)
    teacher = models.freeze(models.load_encoder(source))
    corpus = build.corpus(cfg, tokenizer)
    student, kept = students.general_student(cfg, teacher, head="none", corpus=corpus, tokenizer=tokenizer)
    distiller = build.distiller(cfg, student, teacher, kept=kept)  # kept: a pruned student's own layers

    run_dir = prepare_run_dir(cfg.runs.general, cfg.resume, cfg.keep_previous)
    save_config(run_dir, cfg)
    print(f"[tinykd] stage=general corpus={len(corpus)} blocks of <= {cfg.corpus.max_seq_len} tokens run_dir={run_dir}")
    logger = MetricsLogger(run_dir, cfg.logger, cfg, "general")
    # Only the student and the projections are trained; the teacher stays outside the optimizer.
    trainable = nn.ModuleDict({"student": student, "distiller": distiller})
    loop = build.phase_loop(cfg, "general", cfg.train.general, corpus, tokenizer, trainable, run_dir=run_dir,
                            logger=logger, budget=StepBudget(cfg.interrupt_after), unit="tokens",
                            resume_from=load_checkpoint(run_dir, cfg.keep_checkpoints) if cfg.resume else None)
    engine = loop.engine
    teacher.to(engine.device)

    # --- loop
    trainable.train()
    for batch in loop:
        # 1. teacher hidden states and attention maps, no graph kept
        with torch.no_grad(), engine.autocast():
            t_out = layer_outputs(teacher, batch, distiller.needs_attentions)
        # 2. the student's, and the matched losses (projections applied inside the distiller)
        with engine.autocast():
            s_out = layer_outputs(student, batch, distiller.needs_attentions)
            loss, parts = distiller(s_out, t_out, batch["attention_mask"])
        if loop.update(loss, parts, items=int(batch["attention_mask"].sum())):
            loop.checkpoint()
    logger.close()
    if loop.interrupted:
        return {"run_dir": str(run_dir), "interrupted": True, "step": loop.step}

    # --- export the student alone: projections stay behind in the checkpoint
    with engine.gathered():  # ZeRO-3: the full weights, on every rank, for rank 0 to write
        out = models.export(student, tokenizer, run_dir / "student")
    result = {"stage": "general", "run_dir": str(run_dir), "export": str(out), "steps": loop.step}
    write_results(run_dir, result)
    print(f"[tinykd] exported general student: {out}")
    return result
