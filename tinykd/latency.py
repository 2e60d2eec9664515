"""CPU (or GPU) latency of a model, the same code for every student and teacher and for every runtime
(a PyTorch model, or an ONNX Runtime session wrapped as one: tinykd/onnxexport.OnnxModel): the median
of repeated forwards after warm-up, on fixed random inputs of one length (no padding), or on real
inputs in length-sorted batches (each padded to its own longest example)."""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

from tinykd import models


def median_seconds(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                   sync: Callable[[], None] = lambda: None, rounds: int = 3) -> dict[str, float]:
    """The median wall time of `repeats` calls of each function of `fns` (rounded up to a multiple of
    `rounds`). The functions take turns in `rounds` blocks: each block is `warmup` untimed calls, then
    repeats/rounds timed ones. Taking turns makes a machine whose speed drifts (other work, clocks) slow
    every function alike, so their ratios stay fair; the warm-up of each block lets the thread pools of the
    one before go idle (ONNX Runtime's and OpenMP's threads spin for a while after their work)."""
    per = math.ceil(repeats / rounds)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(per):
                sync()
                t = time.perf_counter()
                fn()
                sync()
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _device(model) -> torch.device:
    params = getattr(model, "parameters", None)
    return next(params()).device if callable(params) else torch.device("cpu")


def _sync(models_: dict) -> Callable[[], None]:
    cuda = any(_device(m).type == "cuda" for m in models_.values())
    return torch.cuda.synchronize if cuda else (lambda: None)


def threads() -> int:
    return torch.get_num_threads()


@torch.inference_mode()
def measure_side_by_side(models_: dict, batch_size: int, seq_len: int, repeats: int = 30, warmup: int = 5,
                         seed: int = 0) -> dict[str, dict]:
    """Each model's median seconds over `repeats` forwards of the same (batch_size, seq_len) batch of random
    token ids (no padding), after `warmup` forwards, the models taking turns; per model: milliseconds per
    batch and examples per second."""
    g = torch.Generator().manual_seed(seed)
    vocab = min(m.config.vocab_size for m in models_.values())
    ids = torch.randint(min(1000, vocab - 1), vocab, (batch_size, seq_len), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    calls = {}
    for name, model in models_.items():
        model.eval()
        inputs = {k: v.to(_device(model)) for k, v in models.model_inputs(model, batch).items()}
        calls[name] = (lambda m, x: lambda: m(**x))(model, inputs)
    medians = median_seconds(calls, repeats, warmup, _sync(models_))
    return {name: {"batch_size": batch_size, "seq_len": seq_len, "median_ms": round(1000 * t, 3),
                   "examples_per_s": round(batch_size / t, 1), "repeats": repeats, "threads": threads()}
            for name, t in medians.items()}


def measure(model, batch_size: int, seq_len: int, repeats: int = 30, warmup: int = 5, seed: int = 0) -> dict:
    """One model's `measure_side_by_side`."""
    was_training = model.training
    out = measure_side_by_side({"model": model}, batch_size, seq_len, repeats, warmup, seed)["model"]
    model.train(was_training)
    return out


@torch.inference_mode()
def measure_dataset_side_by_side(models_: dict, ds, tokenizer, batch_size: int, repeats: int = 3,
                                 warmup: int = 1) -> dict[str, dict]:
    """Each model's median seconds over `repeats` passes over every example of `ds` (tokenised) in
    length-sorted batches of `batch_size`, each padded to its own longest example (as evaluation and
    stage=predict batch), after `warmup` passes, the models taking turns pass by pass; per model:
    milliseconds per example, examples per second and the mean length."""
    from tinykd.data.batches import length_sorted_batches

    collated = [b for _, b in length_sorted_batches(ds, tokenizer, batch_size)]
    n = sum(b["input_ids"].size(0) for b in collated)
    tokens = sum(int(b["attention_mask"].sum()) for b in collated)
    calls = {}
    for name, model in models_.items():
        model.eval()
        batches = [{k: v.to(_device(model)) for k, v in models.model_inputs(model, b).items()} for b in collated]
        calls[name] = (lambda m, bs: lambda: [m(**b) for b in bs])(model, batches)
    medians = median_seconds(calls, repeats, warmup, _sync(models_))
    return {name: {"batch_size": batch_size, "examples": n, "mean_len": round(tokens / n, 1),
                   "ms_per_example": round(1000 * t / n, 3), "examples_per_s": round(n / t, 1),
                   "repeats": repeats, "threads": threads()} for name, t in medians.items()}


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def side_by_side(student, teacher=None, *, repeats: int) -> dict:
    """The student's and (when given) the teacher's CPU latency, timed side by side (taking turns): batch 1
    and 32 x 64 tokens, the median of `repeats` forwards each."""
    timed = {"student": student, **({"teacher": teacher} if teacher is not None else {})}
    by_batch = {b: measure_side_by_side(timed, b, 64, repeats=repeats) for b in (1, 32)}
    return {name: {f"b{b}": by_batch[b][name] for b in by_batch} for name in timed}
