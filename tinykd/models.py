"""Models: where a teacher comes from, the student's shape, tiny random models, export."""

from __future__ import annotations

import collections
import functools
import hashlib
import importlib
import inspect
import json
import os
import re
from pathlib import Path
from typing import Optional

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    DistilBertConfig,
    BertForMaskedLM,
    BertTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tinykd import bilstm  # noqa: F401  (registers the BiLSTM student with the Auto classes)
from tinykd.choices import QA, SEQUENCE, TOKEN
from tinykd.data.batches import MODEL_INPUTS
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


# Run the Python files a model directory or hub repo ships (config.json's auto_map) to load it: never, unless
# the run sets trust_remote_code=true (build.start sets this from the config).
TRUST_REMOTE_CODE = False


def _from_pretrained(loader, source: str, what: str, **kwargs):
    try:
        return loader.from_pretrained(source, trust_remote_code=TRUST_REMOTE_CODE, **kwargs)
    except OSError as e:
        raise TinyKDError(f"Could not load {what} from '{source}': {e}",
                          "check the path or hub id, and internet access for hub ids.") from e
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise TinyKDError(f"{what} '{source}' loads only by running Python code it ships (auto_map in its "
                          "config.json); tinykd runs no code from model files unless told to.",
                          "use a model of an architecture transformers has, or, if you trust that code, add "
                          "trust_remote_code=true.") from None


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


def label_kwargs(num_labels: int, label_names, problem_type: Optional[str] = None) -> dict:
    """A config's label fields: num_labels, id2label/label2id when the classes have names, and the
    problem type (Hugging Face's heads pick their loss by it: multi-label needs it said)."""
    kw: dict = {"num_labels": num_labels}
    if label_names:
        kw |= {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    if problem_type:
        kw["problem_type"] = problem_type
    return kw


# the Auto class of each task type's head (choices.TASK_TYPES)
TASK_HEADS = {SEQUENCE: AutoModelForSequenceClassification, TOKEN: AutoModelForTokenClassification,
              QA: AutoModelForQuestionAnswering}


def load_classifier(source: str, num_labels: int, label_names, what: str = "model",
                    problem_type: Optional[str] = None, task_type: str = SEQUENCE) -> PreTrainedModel:
    """A model with the task type's head (a sequence or token classifier, or a QA span head); a fresh
    head is added when `source` is a bare encoder. With `label_names` None a fine-tuned head keeps
    its own id2label. The problem type is a sequence classifier's only."""
    kw = label_kwargs(num_labels, label_names, problem_type if task_type == SEQUENCE else None)
    return _from_pretrained(TASK_HEADS[task_type], source, what, **kw)


def head_logits(output) -> torch.Tensor:
    """The head's scores from a model output: `logits` ((B, C) per text, (B, L, C) per token), or a QA
    model's start and end logits stacked as (B, L, 2)."""
    if getattr(output, "logits", None) is not None:
        return output.logits
    return torch.stack((output.start_logits, output.end_logits), dim=-1)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """The teacher: eval mode (no dropout), no gradients, never in an optimizer."""
    model.eval()
    model.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------- student


def student_config(teacher_config, *, num_layers, hidden_size, num_heads, intermediate_size, dropout,
                   num_labels: int = 2, label_names=None) -> BertConfig:
    """A BERT student sharing the teacher's vocabulary, positions, padding id and segment types.

    The teacher may be any BERT-like model (RoBERTa, XLM-R, ELECTRA, DeBERTa-v2, MPNet): only fields
    they all have are read, and the student's embeddings are `hidden_size` wide whatever the teacher's
    `embedding_size`. A teacher without segment embeddings (DeBERTa-v2: type_vocab_size=0; MPNet: no
    such field) gives the student 2 segment types, since its tokenizer may still emit segment 1 for
    a pair's second text (DeBERTa-v2's does). RoBERTa's 1 is kept: its tokenizer emits no
    token_type_ids, and BERT then uses segment 0.
    """
    if hidden_size % num_heads:
        raise TinyKDError(f"student.hidden_size={hidden_size} is not divisible by student.num_heads={num_heads}.",
                          "choose a hidden size that is a multiple of the head count.")
    return BertConfig(
        vocab_size=teacher_config.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        max_position_embeddings=teacher_config.max_position_embeddings,
        type_vocab_size=getattr(teacher_config, "type_vocab_size", 0) or 2,
        pad_token_id=getattr(teacher_config, "pad_token_id", 0) or 0,
        **label_kwargs(num_labels, label_names),
    )


def distilbert_config(teacher_config, *, num_layers, dropout, num_labels: int = 2, label_names=None) -> DistilBertConfig:
    """A DistilBERT student (Sanh et al., 2019): the teacher's width, heads, feed-forward size,
    vocabulary and positions, fewer layers, no token-type embeddings. Same width, so that
    teacher layers copy into it and the cosine loss compares hidden states directly."""
    act = getattr(teacher_config, "hidden_act", "gelu")
    if act not in ("gelu", "relu"):
        raise TinyKDError(f"A DistilBERT student supports gelu or relu activations; the teacher uses {act!r}.",
                          "use student=tinybert4 (a BERT student) for this teacher.")
    return DistilBertConfig(
        vocab_size=teacher_config.vocab_size, dim=teacher_config.hidden_size, n_layers=num_layers,
        n_heads=teacher_config.num_attention_heads, hidden_dim=teacher_config.intermediate_size,
        dropout=dropout, attention_dropout=dropout, activation=act,
        max_position_embeddings=teacher_config.max_position_embeddings,
        pad_token_id=getattr(teacher_config, "pad_token_id", 0) or 0, **label_kwargs(num_labels, label_names),
    )


HEADS = {"none": AutoModel, "mlm": AutoModelForMaskedLM, "classifier": AutoModelForSequenceClassification,
         **TASK_HEADS}


def random_student(config, seed: int, head: str = "none") -> PreTrainedModel:
    """A randomly initialised student (seeded) for its config (BERT, DistilBERT, BiLSTM), with no
    head, a masked-LM head (`head="mlm"`), a classifier (`head="classifier"`) or a task type's head."""
    torch.manual_seed(seed)
    return HEADS[head].from_config(config)


@functools.lru_cache(maxsize=None)
def _forward_args(cls) -> frozenset:
    return frozenset(inspect.signature(cls.forward).parameters)


def model_inputs(model, batch: dict) -> dict:
    """The entries of `batch` that `model` takes: input_ids, attention_mask, and token_type_ids
    only for models that have segments (a DistilBERT student has none)."""
    names = getattr(model, "onnx_inputs", None) or _forward_args(type(model))  # an ONNX session: its graph's inputs
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS and k in names}


# ----------------------------------------------------------------------------- students from teacher layers


def check_init_layers(layers, n_teacher: int, n_student: int) -> list[int]:
    """`student.init_layers`, validated; None is DistilBERT's one teacher layer in two: teacher
    layers 1, 3, 5, ... (numbered from 1) for student layers 1..M."""
    from tinykd.layermap import check_layer_list

    if layers is None:
        layers = list(range(1, 2 * n_student, 2))
    return check_layer_list(layers, n_teacher, n_student, "student.init_layers")


_BERT_TO_DISTILBERT = {  # one Transformer layer: DistilBERT name <- BERT name
    "attention.q_lin": "attention.self.query",
    "attention.k_lin": "attention.self.key",
    "attention.v_lin": "attention.self.value",
    "attention.out_lin": "attention.output.dense",
    "sa_layer_norm": "attention.output.LayerNorm",
    "ffn.lin1": "intermediate.dense",
    "ffn.lin2": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}


def _copy(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    for name in ("weight", "bias"):
        a, b = getattr(dst, name, None), getattr(src, name, None)
        if a is not None and b is not None:
            a.data.copy_(b.data)


@torch.no_grad()
def init_from_teacher_layers(student: PreTrainedModel, teacher: PreTrainedModel, layers) -> list[int]:
    """DistilBERT's initialisation: copy the teacher's embeddings, its Transformer layers
    `layers` (numbered from 1; one teacher layer per student layer) and, when both have one,
    its masked-LM head into the student. The student may be a BERT or a DistilBERT model of the
    teacher's width, heads and feed-forward size. Returns the layers copied.

    A DistilBERT student has no token-type embeddings: the teacher's segment-0 vector is
    added to every word embedding, so that on single-segment input the student's embedding
    output equals the teacher's. (With a tied decoder this adds the same number to every
    vocabulary logit at a position: the masked-LM distribution is unchanged.)
    """
    t_enc, s_enc = teacher.base_model, student.base_model
    tc, sc = teacher.config, student.config
    # DistilBertConfig answers hidden_size and num_attention_heads too; its feed-forward is hidden_dim
    s_width, s_heads = sc.hidden_size, sc.num_attention_heads
    s_ff = sc.hidden_dim if sc.model_type == "distilbert" else sc.intermediate_size
    if tc.model_type != "bert":
        raise TinyKDError(f"student.init=teacher_layers copies from a BERT teacher; this teacher is {tc.model_type}.",
                          "use student.init=random (or general) for this teacher.")
    if (s_width, s_heads, s_ff) != (tc.hidden_size, tc.num_attention_heads, tc.intermediate_size):
        raise TinyKDError(
            f"student.init=teacher_layers needs the teacher's shape: student width/heads/feed-forward "
            f"{s_width}/{s_heads}/{s_ff}, teacher {tc.hidden_size}/{tc.num_attention_heads}/{tc.intermediate_size}.",
            "use student=distilbert (the teacher's shape, half its layers), or student.init=random.",
        )
    if sc.vocab_size != tc.vocab_size:
        raise TinyKDError(f"Student vocabulary ({sc.vocab_size}) differs from the teacher's ({tc.vocab_size}).",
                          "build the student from the teacher's config (the same tokenizer).")
    t_layers = t_enc.encoder.layer
    if sc.model_type == "distilbert":
        s_layers = s_enc.transformer.layer
    else:
        s_layers = s_enc.encoder.layer
    layers = check_init_layers(layers, len(t_layers), len(s_layers))

    te, se = t_enc.embeddings, s_enc.embeddings
    if sc.model_type == "distilbert":
        se.word_embeddings.weight.copy_(te.word_embeddings.weight + te.token_type_embeddings.weight[0])
        _copy(se.position_embeddings, te.position_embeddings)
        _copy(se.LayerNorm, te.LayerNorm)
        for s_layer, t in zip(s_layers, layers):
            t_layer = t_layers[t - 1]
            for d_name, b_name in _BERT_TO_DISTILBERT.items():
                _copy(s_layer.get_submodule(d_name), t_layer.get_submodule(b_name))
    else:
        se.load_state_dict(te.state_dict())
        for s_layer, t in zip(s_layers, layers):
            s_layer.load_state_dict(t_layers[t - 1].state_dict())

    t_head = getattr(teacher, "cls", None)
    if t_head is not None and hasattr(t_head, "predictions"):
        p = t_head.predictions
        if hasattr(student, "cls"):
            student.cls.predictions.transform.load_state_dict(p.transform.state_dict())
            student.cls.predictions.bias.copy_(p.bias)
        elif hasattr(student, "vocab_projector"):
            _copy(student.vocab_transform, p.transform.dense)
            _copy(student.vocab_layer_norm, p.transform.LayerNorm)
            student.vocab_projector.bias.copy_(p.bias)
        # the decoder stays tied to the (copied) input embeddings
    return layers


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
    # A masked LM: its encoder serves as a teacher, and the whole of it as a tiny masked LM
    # for augmentation (AutoModel / AutoModelForSequenceClassification load the encoder part).
    # Built from its own seed without touching the run's random state: the first run that builds
    # it draws the same numbers afterwards as every later run that finds it on disk.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    from tinykd.atomic import atomic_directory

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    atomic_directory(final, fill, if_exists="keep")  # another process may have built the same one first
    return str(final)


# ----------------------------------------------------------------------------- export


def export(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | os.PathLike) -> Path:
    """Save a plain Hugging Face model directory atomically (temp dir + rename).

    The attention implementation of a Transformer is reset to the default so that the saved
    config holds nothing tinykd-specific: `AutoModel*.from_pretrained(out_dir)` needs only
    transformers (a model without attention, the BiLSTM, is saved as it is). In a job of several
    ranks only rank 0 writes (under ZeRO-3, inside the engine's `gathered()` block).
    """
    from tinykd import distributed

    out = Path(out_dir)
    if not distributed.is_main():
        return out
    from tinykd.atomic import atomic_directory

    impl = model.config._attn_implementation
    attention = getattr(model, "_supports_sdpa", False)

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    try:
        if attention:
            model.set_attn_implementation("sdpa")
        atomic_directory(out, fill, kept=f"; the previous export, {out}, is intact" if out.exists() else "")
    finally:
        if attention:
            model.set_attn_implementation(impl)
    return out


def model_config(source: str):
    return _from_pretrained(AutoConfig, source, "model config")
