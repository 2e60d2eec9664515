"""Stage `mlm_head`: fit a masked-LM head on a frozen encoder, and save a masked LM.

No English masked-LM weights install offline, but the offline MiniLM teacher is a BERT
encoder: this stage puts BERT's standard vocabulary head on it (dense + GELU + LayerNorm,
then the decoder tied to the input embeddings, plus a bias), keeps the whole encoder and the
embeddings frozen, and trains the head on masked tokens of the unlabeled corpus (15%: 80%
[MASK], 10% random, 10% kept). The encoder runs under `no_grad` and the head only at the masked
positions. It reports masked-token top-1/top-5 accuracy on held-out corpus blocks (the last
`stage.heldout` blocks, never trained on) and exports `<run_dir>/mlm`, a plain
`AutoModelForMaskedLM` directory: the augmentation stage's masked LM (`augment.mlm=<dir>`).
"""

from __future__ import annotations

import torch

from tinykd import build, models
from tinykd.data.batches import eval_batches
from tinykd.errors import TinyKDError
from tinykd.loop import StepBudget
from tinykd.mlm import Masker, masked_positions, mlm_loss, topk_correct
from tinykd.run import MetricsLogger, load_checkpoint, prepare_run_dir, save_config, write_results

EVAL_OFFSET = 1 << 40  # masking indices of held-out batches: never those of a training batch


def head_only(model, tie_decoder: bool = True) -> torch.nn.Module:
    """Freeze everything but the vocabulary head: its transform and bias, and with
    `tie_decoder=false` its own decoder matrix (initialised from the input embeddings);
    tied, the decoder is the input embedding matrix, frozen with the encoder.
    Returns the trainable head."""
    model.requires_grad_(False)
    head = model.cls.predictions
    if not tie_decoder:
        # Untied, transformers ties nothing when loading, not even the decoder's bias to the head's
        # `bias` (saved once while they are one tensor): each gets a tensor of its own, so both are saved.
        model.config.tie_word_embeddings = False
        head.decoder.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
        head.decoder.bias = torch.nn.Parameter(head.bias.detach().clone())
    head.requires_grad_(True)
    if tie_decoder:
        head.decoder.weight.requires_grad_(False)
    return head


@torch.no_grad()
def evaluate_mlm(model, batches, masker, device) -> dict:
    model.eval()
    hits, total, loss_sum = {1: 0, 5: 0}, 0, 0.0
    for i, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        ids, labels = masker(batch["input_ids"].cpu(), batch["attention_mask"].cpu(), EVAL_OFFSET + i)
        hidden = model.bert(input_ids=ids.to(device), attention_mask=batch["attention_mask"],
                            token_type_ids=batch.get("token_type_ids"))[0]
        rows, targets = masked_positions(hidden, labels.to(device))
        logits = model.cls(rows)
        loss_sum += float(mlm_loss(logits, targets)) * len(targets)
        for k, v in topk_correct(logits, targets).items():
            hits[k] += v
        total += len(targets)
    return {"top1": hits[1] / max(total, 1), "top5": hits[5] / max(total, 1), "loss": loss_sum / max(total, 1),
            "masked_tokens": total}


def run(cfg) -> dict:
    build.start(cfg)
    source = build.teacher_source(cfg)
    tokenizer = models.load_tokenizer(source)
    torch.manual_seed(cfg.seed)  # the head's initialisation
    model = models.load_masked_lm_for_fitting(source)
    head = head_only(model, cfg.stage.tie_decoder)
    corpus = build.corpus(cfg, tokenizer)
    heldout = cfg.stage.heldout
    if heldout < 1 or heldout >= len(corpus):
        raise TinyKDError(f"stage.heldout={heldout} blocks, but the corpus has {len(corpus)}.",
                          "hold out at least 1 block and fewer than the corpus holds (stage.heldout=N).")
    train_ds = corpus.select(range(len(corpus) - heldout))
    eval_ds = corpus.select(range(len(corpus) - heldout, len(corpus)))

    run_dir = prepare_run_dir(cfg.runs.mlm_head, cfg.resume, cfg.keep_previous)
    save_config(run_dir, cfg)
    print(f"[tinykd] stage=mlm_head encoder={source} train={len(train_ds)} held-out={len(eval_ds)} blocks "
          f"of <= {cfg.corpus.max_seq_len} tokens run_dir={run_dir}")
    logger = MetricsLogger(run_dir, cfg.logger, cfg, "mlm_head")
    hp = cfg.train.mlm_head
    loop = build.phase_loop(cfg, "mlm_head", hp, train_ds, tokenizer, head, run_dir=run_dir, logger=logger,
                            budget=StepBudget(cfg.interrupt_after), unit="masked_tokens",
                            resume_from=load_checkpoint(run_dir, cfg.keep_checkpoints) if cfg.resume else None)
    engine, device = loop.engine, loop.engine.device
    model.to(device)
    masker = Masker(tokenizer, cfg.stage.mask_prob, cfg.seed)

    # --- loop: the frozen encoder under no_grad, the head at the masked positions only
    model.eval()  # no dropout anywhere: the encoder is frozen and the head has none
    for batch in loop:
        # masked by the micro-batch's index: a resumed run masks as an uninterrupted one
        ids, labels = masker(batch["input_ids"].cpu(), batch["attention_mask"].cpu(), engine.micro)
        with torch.no_grad(), engine.autocast():
            hidden = model.bert(input_ids=ids.to(device), attention_mask=batch["attention_mask"],
                                token_type_ids=batch["token_type_ids"])[0]
        rows, targets = masked_positions(hidden, labels.to(device))
        with engine.autocast():
            loss = mlm_loss(head(rows), targets)
        if loop.update(loss, {"mlm": loss.detach()}, items=len(targets)):
            loop.checkpoint()
    if loop.interrupted:
        logger.close()
        return {"run_dir": str(run_dir), "interrupted": True, "step": loop.step}

    # --- held-out accuracy, export
    metrics = evaluate_mlm(model, eval_batches(eval_ds, tokenizer, hp.eval_batch_size), masker, device)
    loop.log_eval("heldout", metrics)
    logger.close()
    with engine.gathered():
        out = models.export(model, tokenizer, run_dir / "mlm")
    result = {"stage": "mlm_head", "run_dir": str(run_dir), "export": str(out), "steps": loop.step, "encoder": source,
              "heldout": metrics, "heldout_blocks": len(eval_ds)}
    write_results(run_dir, result)
    print(f"[tinykd] held-out masked tokens: top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f} "
          f"({metrics['masked_tokens']} tokens)")
    print(f"[tinykd] exported masked LM: {out}  (augment with: augment.mlm={out})")
    return result
