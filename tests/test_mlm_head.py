"""`stage=mlm_head` (a masked-LM head fitted on a frozen encoder) and its masking helpers."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import run_stage
from transformers import AutoModel, BertTokenizer

from tinykd import models
from tinykd.mlm import Masker, masked_positions, topk_correct

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]


def test_masker_is_bert_masking_seeded_per_batch():
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB)})
    ids = torch.randint(5, 100, (64, 128))
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    mask = torch.ones_like(ids)
    mask[:8, 100:] = 0  # padding is never masked
    masker = Masker(tok, 0.15, seed=3)
    a_ids, a_labels = masker(ids, mask, 7)
    b_ids, b_labels = masker(ids, mask, 7)
    assert torch.equal(a_ids, b_ids) and torch.equal(a_labels, b_labels)  # same batch index, same masks
    assert not torch.equal(masker(ids, mask, 8)[1], a_labels)
    chosen = a_labels != -100
    assert 0.13 < chosen.float().mean() < 0.17
    assert not chosen[:, 0].any() and not chosen[:, -1].any() and not chosen[:8, 100:].any()
    assert torch.equal(a_labels[chosen], ids[chosen])
    replaced = a_ids[chosen]
    as_mask = (replaced == tok.mask_token_id).float().mean()
    kept = (replaced == ids[chosen]).float().mean()
    assert 0.76 < as_mask < 0.84 and 0.07 < kept < 0.14  # 80% [MASK], 10% kept (+ random hits on itself)
    assert torch.equal(a_ids[~chosen], ids[~chosen])


def test_masked_positions_and_topk_by_hand():
    hidden = torch.arange(12.0).view(1, 4, 3)
    labels = torch.tensor([[-100, 5, -100, 7]])
    rows, targets = masked_positions(hidden, labels)
    assert torch.equal(rows, hidden[0, [1, 3]]) and targets.tolist() == [5, 7]
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0, 0.5, 0.1, 0.2],   # target 2: rank 2
                           [9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],   # target 0: rank 1
                           [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])  # target 0: rank 7
    assert topk_correct(logits, torch.tensor([2, 0, 0]), ks=(1, 2, 5)) == {1: 1, 2: 2, 5: 2}


def test_mlm_head_stage_trains_the_head_only_and_exports_a_masked_lm(make_cfg):
    cfg = make_cfg("stage=mlm_head", "debug=smoke")
    res = run_stage(cfg)
    out = Path(res["export"])
    h = res["heldout"]
    assert 0 <= h["top1"] <= h["top5"] <= 1 and h["masked_tokens"] > 100
    # a masked LM with a head, loadable as such
    mlm = models.load_masked_lm(str(out))
    # the encoder is the teacher's, unchanged
    from tinykd import build
    teacher = AutoModel.from_pretrained(build.teacher_source(cfg))
    t_state = teacher.state_dict()
    for k, v in mlm.bert.state_dict().items():
        if k in t_state:
            assert torch.equal(v, t_state[k]), k
    assert torch.equal(mlm.cls.predictions.decoder.weight, teacher.get_input_embeddings().weight)  # tied, frozen
    # and it serves the augmentation stage as its masked LM
    aug = run_stage(make_cfg("stage=augment", "task=sst2", "debug=smoke", f"augment.mlm={out}",
                             "task.train_limit=16", "augment.n=3"))
    assert aug["stats"]["mlm_words"] > 0


def test_mlm_head_resume_equals_uninterrupted(make_cfg):
    whole = run_stage(make_cfg("stage=mlm_head", "debug=smoke", "runs.mlm_head=${paths.runs}/mlm_head/whole"))
    part = run_stage(make_cfg("stage=mlm_head", "debug=smoke", "runs.mlm_head=${paths.runs}/mlm_head/part",
                              "interrupt_after=4"))
    assert part["interrupted"]
    done = run_stage(make_cfg("stage=mlm_head", "debug=smoke", "runs.mlm_head=${paths.runs}/mlm_head/part",
                              "resume=true"))
    assert done["heldout"] == whole["heldout"]


def test_mlm_head_untied_decoder_is_trained_and_saved(make_cfg):
    """stage.tie_decoder=false: the decoder is a matrix of its own, initialised from the input
    embeddings and trained with the head; the encoder (embeddings included) stays frozen."""
    cfg = make_cfg("stage=mlm_head", "debug=smoke", "stage.tie_decoder=false")
    res = run_stage(cfg)
    from tinykd import build

    teacher = AutoModel.from_pretrained(build.teacher_source(cfg))
    mlm = models.load_masked_lm(res["export"])
    assert mlm.config.tie_word_embeddings is False
    embeddings = teacher.get_input_embeddings().weight
    assert torch.equal(mlm.bert.get_input_embeddings().weight, embeddings)  # frozen
    decoder = mlm.cls.predictions.decoder.weight
    assert decoder.data_ptr() != mlm.bert.get_input_embeddings().weight.data_ptr()
    assert decoder.shape == embeddings.shape and not torch.equal(decoder, embeddings)  # trained away from its init
    assert mlm.cls.predictions.decoder.bias.abs().sum() > 0  # the trained bias was saved and loaded (init: zeros)
