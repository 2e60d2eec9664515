"""Models: where a teacher comes from, the student's shape, tiny random models, export."""

from __future__ import annotations

import collections
import hashlib
import importlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tinykd.errors import TinyKDError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _looks_like_path(s: str) -> bool:
    return s.startswith(("/", ".", "~")) or s.count("/") > 1 or os.sep in s.replace("/", "") or Path(s).suffix != ""


def resolve_source(path: str, package: Optional[str] = None, what: str = "teacher", key: Optional[str] = None) -> str:
    """A local directory to load from, or a hub id.

    Order: an installed package that bundles the weights (offline), a local directory,
    then a hub id (needs internet). Names the problem and the fix when none applies.
    `key` is the config key to name in errors (default `<what>.path`).
    """
    key = key or f"{what}.path"
    if package:
        try:
            mod = importlib.import_module(package)
            pkg_dir = Path(mod.get_model_path())
            if pkg_dir.is_dir():
                return str(pkg_dir)
        except ImportError:
            pass
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise TinyKDError(f"{what} directory {p} has no config.json.",
                              f"point {key} at a Hugging Face model directory (save_pretrained output).")
        return str(p)
    if p.exists() or _looks_like_path(path):
        raise TinyKDError(f"{what} path {path} does not exist.",
                          f"set {key}=<an existing model directory> or a hub id such as bert-base-uncased.")
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", path):
        raise TinyKDError(f"{what} '{path}' is neither a directory nor a hub id.", f"set {key} correctly.")
    if hub_offline():
        hint = f" (or `pip install {package.replace('_', '-')}` for the offline copy)" if package else ""
        raise TinyKDError(
            f"{what} '{path}' is a hub id, but the hub is offline (HF_HUB_OFFLINE=1) and no local copy was found.",
            f"unset HF_HUB_OFFLINE with internet access, or set {key}=<local model directory>{hint}.",
        )
    return path


def _from_pretrained(loader, source: str, what: str, **kwargs):
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as e:
        raise TinyKDError(f"Could not load {what} from '{source}': {e}",
                          "check the path or hub id, and internet access for hub ids.") from e


def load_tokenizer(source: str, what: str = "teacher") -> PreTrainedTokenizerBase:
    return _from_pretrained(AutoTokenizer, source, f"{what} tokenizer")


def load_encoder(source: str, what: str = "teacher") -> PreTrainedModel:
    return _from_pretrained(AutoModel, source, what)


def load_masked_lm(source: str, what: str = "masked LM") -> PreTrainedModel:
    """An `AutoModelForMaskedLM` whose vocabulary head was trained: a checkpoint without one
    (a bare encoder such as the offline MiniLM) would get a random head and random candidates."""
    model, info = _from_pretrained(AutoModelForMaskedLM, source, what, output_loading_info=True)
    head = [k for k in info.get("missing_keys", ()) if k.startswith(("cls.", "lm_head.", "vocab_", "predictions."))]
    if head:
        raise TinyKDError(
            f"{what} '{source}' has no masked-LM head (missing {sorted(head)[:3]}...): its candidates would be random.",
            "point it at an AutoModelForMaskedLM directory or hub id (e.g. bert-base-uncased), or use "
            "augment.source=glove / augment.source=embedding.",
        )
    return model


def load_masked_lm_for_fitting(source: str, what: str = "encoder") -> PreTrainedModel:
    """`AutoModelForMaskedLM` from an encoder checkpoint whose head may be missing (it is then
    initialised from the torch RNG: seed first) — what `stage=mlm_head` trains."""
    return _from_pretrained(AutoModelForMaskedLM, source, what)


def load_classifier(source: str, num_labels: int, label_names, what: str = "model") -> PreTrainedModel:
    """A sequence classifier; a fresh head is added when `source` is a bare encoder."""
    kwargs = {"num_labels": num_labels}
    if label_names:
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    return _from_pretrained(AutoModelForSequenceClassification, source, what, **kwargs)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """The teacher: eval mode (no dropout), no gradients, never in an optimizer."""
    model.eval()
    model.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------- student


def student_config(teacher_config, *, num_layers, hidden_size, num_heads, intermediate_size, dropout,
                   num_labels: int = 2, label_names=None) -> BertConfig:
    """A BERT student sharing the teacher's vocabulary, positions and segment types."""
    if hidden_size % num_heads:
        raise TinyKDError(f"student.hidden_size={hidden_size} is not divisible by student.num_heads={num_heads}.",
                          "choose a hidden size that is a multiple of the head count.")
    kw = {}
    if label_names:
        kw = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    return BertConfig(
        vocab_size=teacher_config.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        max_position_embeddings=teacher_config.max_position_embeddings,
        type_vocab_size=getattr(teacher_config, "type_vocab_size", 2),
        pad_token_id=getattr(teacher_config, "pad_token_id", 0) or 0,
        num_labels=num_labels,
        **kw,
    )


def random_student(config: BertConfig, seed: int, classifier: bool) -> PreTrainedModel:
    torch.manual_seed(seed)
    return BertForSequenceClassification(config) if classifier else BertModel(config)


def check_same_vocab(student_tok: PreTrainedTokenizerBase, teacher_tok: PreTrainedTokenizerBase,
                     student_where: str, teacher_where: str) -> None:
    """Distillation compares token positions, so both models must tokenise identically."""
    sv, tv = student_tok.get_vocab(), teacher_tok.get_vocab()
    if sv != tv:
        diff = sorted(set(sv.items()) ^ set(tv.items()))[:3]
        raise TinyKDError(
            f"Student vocabulary ({len(sv)} tokens, {student_where}) differs from the teacher's "
            f"({len(tv)} tokens, {teacher_where}); e.g. {diff}.",
            "the student must use the teacher's tokenizer: initialise it from a general-distilled student of "
            "this teacher, or use student.init=random.",
        )


# ----------------------------------------------------------------------------- tiny models


def build_wordpiece_vocab(texts: list[str], size: int) -> list[str]:
    """A small WordPiece vocabulary: specials, every character (bare and ##), then frequent words."""
    basic = BertTokenizer(vocab={t: i for i, t in enumerate(SPECIAL_TOKENS)}).backend_tokenizer.pre_tokenizer
    words: collections.Counter = collections.Counter()
    for t in texts:
        words.update(w for w, _ in basic.pre_tokenize_str(t.lower()))
    chars = sorted({c for w in words for c in w})
    vocab = SPECIAL_TOKENS + chars + [f"##{c}" for c in chars]
    seen = set(vocab)
    for w, _ in words.most_common():
        if len(vocab) >= size:
            break
        if w not in seen:
            vocab.append(w)
            seen.add(w)
    return vocab


def build_tiny_model(out_dir: str, *, num_layers, hidden_size, num_heads, intermediate_size, vocab_size,
                     vocab_source: str, seed: int) -> str:
    """A small random BERT masked LM and its tokenizer, saved once under `out_dir` (atomically) and reused."""
    spec = dict(num_layers=num_layers, hidden_size=hidden_size, num_heads=num_heads,
                intermediate_size=intermediate_size, vocab_size=vocab_size, seed=seed, head="mlm")
    src = Path(vocab_source)
    if not src.is_file():
        raise TinyKDError(f"Tiny model vocabulary source {src} not found.", "set teacher.tiny.vocab_source=<text file>.")
    key = hashlib.sha256(json.dumps([spec, str(src.resolve()), src.stat().st_size]).encode()).hexdigest()[:12]
    final = Path(out_dir) / key
    if (final / "config.json").is_file():
        return str(final)
    with open(src, encoding="utf-8") as f:
        texts = [line.split("\t")[0] for _, line in zip(range(20000), f)]
    vocab = build_wordpiece_vocab(texts, vocab_size)
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=512, pad_token_id=0)
    torch.manual_seed(seed)
    # A masked LM: its encoder serves as a teacher, and the whole of it as a tiny masked LM
    # for augmentation (AutoModel / AutoModelForSequenceClassification load the encoder part).
    model = BertForMaskedLM(config)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}-"))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.chmod(tmp, 0o755)
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


# ----------------------------------------------------------------------------- export


def export(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | os.PathLike) -> Path:
    """Save a plain Hugging Face model directory atomically (temp dir + rename).

    The attention implementation is reset to the default so that the saved config holds
    nothing tinykd-specific: `AutoModel*.from_pretrained(out_dir)` needs only transformers.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    impl = model.config._attn_implementation
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        model.set_attn_implementation("sdpa")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    finally:
        model.set_attn_implementation(impl)
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700
    old = out.with_name(f".{out.name}-old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def model_config(source: str):
    return AutoConfig.from_pretrained(source)
