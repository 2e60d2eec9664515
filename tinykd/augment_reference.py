"""The reference oracles: slow, literal re-implementations of TinyBERT's reference procedure
(`data_augmentation.py`: one sentence, one word and one full masked-LM forward at a time),
kept as the ground truth for the tests of `tinykd.augment` and as the baseline of
`make bench-augment`. Nothing in the pipeline runs them.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from tinykd.augment import (WordVectors, augment_sentence, check_vocab, eval_mode, is_eligible, pick, position_limit,
                            sentence_rng, split_words, uses_segments)


def reference_mlm_candidates(model, tokenizer, sentences_words: Sequence[Sequence[str]],
                             positions: Sequence[Sequence[int]], k: int,
                             max_len: Optional[int] = None) -> list[dict[int, list[str]]]:
    """The reference procedure, written straightforwardly: the ground truth for
    `augment.mlm_candidates` (same return value) and the baseline of the benchmark.

    For each requested word: tokenize the whole sentence, find the word's pieces by counting
    pieces that do not start with ``##``, and if there is one, run the full masked LM (the
    vocabulary head at every position) on ``[CLS] masked [SEP] sentence [SEP]`` at batch
    size 1, and take the top k at the masked position. It runs under `no_grad` (the
    original script does not), which makes it a slightly faster, fairer baseline.
    """
    check_vocab(model, tokenizer)
    limit = position_limit(model, max_len)
    device = next(model.parameters()).device
    segments = uses_segments(model)
    results: list[dict[int, list[str]]] = [{} for _ in sentences_words]
    with eval_mode(model), torch.no_grad():
        for s, (words, wanted) in enumerate(zip(sentences_words, positions)):
            pieces = tokenizer.tokenize(" ".join(words))
            for pos in wanted:
                word_pieces = [tokenizer.cls_token, *pieces]
                found, count = [], -1
                for i in range(1, len(word_pieces)):
                    if not word_pieces[i].startswith("##"):
                        count += 1
                        if count > pos:
                            break
                        found = [i] if count == pos else []
                    elif count == pos:
                        found.append(i)
                if len(found) != 1 or found[0] >= limit:
                    continue
                word_pieces[found[0]] = tokenizer.mask_token
                tokens = ([*word_pieces, tokenizer.sep_token, *pieces, tokenizer.sep_token])[:limit]
                token_types = ([0] * (len(pieces) + 2) + [1] * (len(pieces) + 1))[:limit]
                inputs = {"input_ids": torch.tensor([tokenizer.convert_tokens_to_ids(tokens)], device=device)}
                if segments:
                    inputs["token_type_ids"] = torch.tensor([token_types], device=device)
                logits = model(**inputs).logits  # (1, length, vocab): the head at every position
                results[s][pos] = pick(logits[0, found[0]][None].float(), tokenizer, k)[0]
    return results


def reference_augment(texts: Sequence[str], *, n: int, k: int, p: float, seed: int, vectors: Optional[WordVectors],
                      model=None, tokenizer=None, max_len: Optional[int] = None, lowercase: bool = True,
                      tables_out: Optional[list] = None) -> list[list[str]]:
    """The reference procedure for single sentences, one sentence and one word at a time:
    the baseline of `make bench-augment`. Per sentence: split words; per eligible word, the
    masked LM at batch size 1 (`reference_mlm_candidates`) when it is one WordPiece, else
    its nearest neighbours, searched again for every occurrence; then N draws.

    Returns, per sentence, its augmented texts, which `augment.augment_examples` must reproduce
    (same seed, same generators, same de-duplication).
    """
    out = []
    for e, text in enumerate(texts):
        words = split_words(text, lowercase)
        eligible = [i for i, w in enumerate(words) if is_eligible(w)]
        found = (reference_mlm_candidates(model, tokenizer, [words], [eligible], k, max_len)[0]
                 if model is not None else {})
        table = {}
        for i in eligible:
            if i in found:
                table[i] = found[i]
            elif vectors is not None:
                table[i] = vectors.neighbours([words[i]], k)[words[i]]
        table = {i: c for i, c in table.items() if c}
        if tables_out is not None:
            tables_out.append(table)
        seen, rows = {" ".join(words)}, []
        for new in augment_sentence(words, table, n, p, sentence_rng(seed, e, 0)):
            joined = " ".join(new)
            if joined not in seen:
                seen.add(joined)
                rows.append(joined)
        out.append(rows)
    return out
