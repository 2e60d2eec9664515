"""ONNX: a Hugging Face model directory exported with `torch.onnx` (its `torch.export`-based exporter;
dynamic batch and sequence axes), checked against PyTorch on real inputs, fused by ONNX Runtime's
transformer optimizer, quantized to dynamic int8 (`onnxruntime.quantization`), and run through
ONNX Runtime like a PyTorch model (`OnnxModel`), so that evaluation, prediction and latency use the
same code for every runtime.

`optimum`'s exporter is not used: its ONNX package pins transformers < 4.58, and tinykd runs on
transformers 5 (README, "Ship the student").
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Sequence

import numpy as np
import torch

from tinykd import models
from tinykd.choices import QA
from tinykd.data.batches import MODEL_INPUTS, length_sorted_batches
from tinykd.errors import TinyKDError

FP32 = "model.onnx"  # <model dir>/onnx/model.onnx
INT8 = "model.int8.onnx"
CANDIDATE = "model.candidate.onnx"  # a new export until it is checked against PyTorch
REJECTED = "model.rejected.onnx"  # one that failed the check, kept for inspection
FILES = {"onnx": FP32, "int8": INT8}  # stage=predict's predict.backend -> the file it runs


def output_names(task_type: str) -> list[str]:
    """What the exported graph returns: a QA model's start and end logits, else `logits`."""
    return ["start_logits", "end_logits"] if task_type == QA else ["logits"]


def input_names(model) -> list[str]:
    """The model inputs `model` takes, in MODEL_INPUTS order (a DistilBERT or BiLSTM has no segments)."""
    probe = {k: None for k in MODEL_INPUTS}
    return [k for k in MODEL_INPUTS if k in models.model_inputs(model, probe)]


# ----------------------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet(logger: str):
    """Only errors from `logger` (and its children) inside the block."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".onnx")
    os.close(fd)
    return Path(tmp)


def _example(batch: dict, names: Sequence[str]) -> dict:
    """An example input for the exporter with at least 2 rows and 2 tokens: torch.export would fix an axis
    of size 1 to 1."""
    out = {}
    for k in names:
        v = batch[k]
        if v.size(0) < 2:
            v = torch.cat([v, v])
        if v.size(1) < 2:
            v = torch.cat([v, v[:, -1:]], dim=1)
        out[k] = v
    return out


def export(model, batch: dict, path: Path, task_type: str, opset: int, attention: str = "eager") -> Path:
    """Write `model` (eval mode, CPU) as ONNX at `path` (atomically: nothing is left half-written), traced
    on `batch` (a real, collated batch), with dynamic batch and sequence axes and the weights inside the
    file; a Transformer's attention written as `attention` says (eager: matrix products and a softmax;
    sdpa: the exporter's lowering of scaled_dot_product_attention). A model the exporter cannot trace is
    refused, saying why."""
    model = model.eval().cpu()
    names = input_names(model)
    impl = getattr(model.config, "_attn_implementation", None)
    switch = getattr(model, "_supports_sdpa", False) and impl != attention
    if switch:
        model.set_attn_implementation(attention)
    batch_dim, seq_dim = torch.export.Dim("batch"), torch.export.Dim("sequence")
    tmp = _atomic_target(path)
    log = io.StringIO()  # the exporter's step-by-step lines: shown only when it fails
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(log), _quiet("torch.onnx"):
            warnings.simplefilter("ignore")  # the exporter's deprecation notes about torch internals
            torch.onnx.export(model, (), str(tmp), kwargs=_example(batch, names), input_names=names,
                              output_names=output_names(task_type), opset_version=opset, dynamo=True,
                              external_data=False, verbose=False,
                              dynamic_shapes={k: {0: batch_dim, 1: seq_dim} for k in names})
    except Exception as e:
        tmp.unlink(missing_ok=True)
        print(log.getvalue(), end="")
        kind = getattr(model.config, "model_type", type(model).__name__)
        cause = e
        while cause.__cause__ is not None:  # torch.onnx wraps what torch.export said
            cause = cause.__cause__
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip()
        first = f"{type(cause).__name__}: {text.splitlines()[0][:300] if text else ''}"
        why = (" The BiLSTM student packs its padded sequences (torch.nn.utils.rnn.pack_padded_sequence, with "
               "lengths read from the data), which torch.export cannot trace." if "bilstm" in kind else "")
        raise TinyKDError(f"torch.onnx could not export this {kind} model ({first}).{why}",
                          "ship it as the PyTorch directory it is (stage=predict predict.backend=pytorch), or "
                          "distil a Transformer student (student=tinybert4, small, distilbert), which exports."
                          ) from None
    finally:
        if switch:
            model.set_attn_implementation(impl)
    os.replace(tmp, path)
    return path


def optimize(path: Path, config) -> dict[str, int]:
    """Fuse `path` in place with ONNX Runtime's transformer optimizer (layer norms with their residual
    adds, GELU with its bias, attention where its pattern is found) for a BERT or DistilBERT model;
    returns the fused operators counted. Other models are left as they are ({})."""
    if getattr(config, "model_type", None) not in ("bert", "distilbert"):
        return {}
    from onnxruntime.transformers.optimizer import optimize_model

    # a line per fusion, from loggers named by their modules (fusion_*, onnx_model*): the root's level rules them
    with _quiet(""), contextlib.redirect_stdout(io.StringIO()):
        fused = optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size)
        tmp = _atomic_target(path)
        fused.save_model_to_file(str(tmp))
    os.replace(tmp, path)
    return {k: v for k, v in fused.get_fused_operator_statistics().items() if v}


def node_modules(path: Path) -> dict[str, str]:
    """Each node of a graph as torch.onnx exported it, and the PyTorch module it came from
    (`bert.encoder.layer.0.attention.self.query`), as the exporter recorded it in the node's metadata;
    '' where none is recorded."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    out = {}
    for node in graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        try:
            # the enclosing modules, outermost first, then the node's own name ('linear'): its module is the one before
            path = ast.literal_eval(scopes) if scopes else []
            out[node.name] = path[-2] if len(path) >= 2 else ""
        except (ValueError, SyntaxError, IndexError):
            out[node.name] = ""
    return out


_LAYER = re.compile(r"\.layer\.(\d+)(\.|$)")


def layer_group(module: str) -> str:
    """A module's group for the int8 sensitivity table: `embeddings`, `layer.<i>` (from 0) or `head`."""
    m = _LAYER.search(module)
    if m:
        return f"layer.{m.group(1)}"
    return "embeddings" if "embeddings" in module else "head"


def nodes_matching(modules: dict[str, str], patterns: Sequence[str]) -> list[str]:
    """The nodes of `modules` (node_modules' map, read before `optimize`, which drops the metadata but
    keeps the names of the nodes it does not fuse) whose module matches one of the regexes `patterns`."""
    compiled = [re.compile(p) for p in patterns]
    return sorted(n for n, m in modules.items() if m and any(c.search(m) for c in compiled))


def quantize(src: Path, dst: Path, *, per_channel: bool = False, reduce_range: bool = False,
             exclude_nodes: Sequence[str] = ()) -> Path:
    """Dynamic int8 quantization of `src` into `dst` (atomically): the weights of matrix products stored
    in int8, activations quantized at run time per tensor; the nodes `exclude_nodes` stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _atomic_target(dst)
    try:
        with _quiet(""):  # the root logger: its advice to pre-process, meant for static quantization
            quantize_dynamic(src, tmp, weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=reduce_range, nodes_to_exclude=list(exclude_nodes) or None)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)
    return dst


# ----------------------------------------------------------------------------- running it


class OnnxModel:
    """An ONNX Runtime session called like a Hugging Face model: `model(**inputs)` takes torch tensors and
    returns an object with `logits` (or `start_logits`/`end_logits`) as torch tensors, so that
    `tinykd.evaluate`, `tinykd.latency` and stage=predict run it with the code they run PyTorch with.
    CPU only; `threads` sets ONNX Runtime's intra-op threads (None: its default)."""

    training = False

    def __init__(self, path: str | os.PathLike, config=None, threads: Optional[int] = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise TinyKDError(f"ONNX Runtime could not load {path}: {type(e).__name__}: {str(e)[:300]}",
                              "export it again: python -m tinykd stage=export model=<the model directory>.") from None
        self.path = Path(path)
        self.config = config
        self.onnx_inputs = frozenset(i.name for i in self.session.get_inputs())
        self.outputs = [o.name for o in self.session.get_outputs()]

    def eval(self) -> "OnnxModel":
        return self

    def train(self, mode: bool = True) -> "OnnxModel":
        return self

    def to(self, device) -> "OnnxModel":
        if torch.device(device).type != "cpu":
            raise TinyKDError("An ONNX model runs here on the CPU only.", "set engine.device=cpu.")
        return self

    def __call__(self, **inputs) -> SimpleNamespace:
        feed = {k: np.ascontiguousarray(v.cpu().numpy(), dtype=np.int64) for k, v in inputs.items()
                if k in self.onnx_inputs}
        outs = self.session.run(self.outputs, feed)
        return SimpleNamespace(**{name: torch.from_numpy(o) for name, o in zip(self.outputs, outs)})


@torch.no_grad()
def max_abs_difference(reference, candidate, ds, tokenizer, batch_size: int) -> float:
    """The largest |candidate - reference| over every output of every example of `ds` (token and span
    outputs at real tokens only: padding's scores are never read)."""
    worst = 0.0
    reference.eval()
    for _, batch in length_sorted_batches(ds, tokenizer, batch_size):
        a = models.head_logits(reference(**models.model_inputs(reference, batch))).float()
        b = models.head_logits(candidate(**models.model_inputs(candidate, batch))).float()
        diff = (a - b).abs()
        if diff.dim() == 3:  # (B, L, K): keep real tokens
            diff = diff[batch["attention_mask"].bool()]
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
    return worst


def file_mb(path: Path) -> float:
    return round(Path(path).stat().st_size / 2**20, 2)
