"""CPU (or GPU) latency of a model, the same code for every student and teacher and for every runtime
(a PyTorch model, or an ONNX Runtime session wrapped as one: tinykd/onnxexport.OnnxModel): the median
of repeated forwards after warm-up, on fixed random inputs of one length (no padding), or on real
inputs in length-sorted batches (each padded to its own longest example)."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from tinykd import models


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int, sync: Callable[[], None] = lambda: None) -> float:
    """The median wall time of `repeats` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _device(model) -> torch.device:
    params = getattr(model, "parameters", None)
    return next(params()).device if callable(params) else torch.device("cpu")


def _sync(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def threads() -> int:
    return torch.get_num_threads()


@torch.inference_mode()
def measure(model, batch_size: int, seq_len: int, repeats: int = 30, warmup: int = 5, seed: int = 0) -> dict:
    """Median seconds of `repeats` forwards of a (batch_size, seq_len) batch of random token ids, after
    `warmup` forwards; returns milliseconds per batch and examples per second."""
    was_training = model.training
    model.eval()
    device = _device(model)
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    ids = torch.randint(min(1000, vocab - 1), vocab, (batch_size, seq_len), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    inputs = {k: v.to(device) for k, v in models.model_inputs(model, batch).items()}
    median = median_seconds(lambda: model(**inputs), repeats, warmup, _sync(device))
    model.train(was_training)
    return {"batch_size": batch_size, "seq_len": seq_len, "median_ms": round(1000 * median, 3),
            "examples_per_s": round(batch_size / median, 1), "repeats": repeats, "threads": threads()}


@torch.inference_mode()
def measure_dataset(model, ds, tokenizer, batch_size: int, repeats: int = 3, warmup: int = 1) -> dict:
    """Median seconds of `repeats` passes over every example of `ds` (tokenised) in length-sorted batches
    of `batch_size`, each padded to its own longest example (as evaluation and stage=predict batch),
    after `warmup` passes; returns milliseconds per example, examples per second and the mean length."""
    from tinykd.data import length_sorted_batches

    was_training = model.training
    model.eval()
    device = _device(model)
    batches = [{k: v.to(device) for k, v in models.model_inputs(model, b).items()}
               for _, b in length_sorted_batches(ds, tokenizer, batch_size)]
    n = sum(b["input_ids"].size(0) for b in batches)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    def one_pass():
        for b in batches:
            model(**b)

    median = median_seconds(one_pass, repeats, warmup, _sync(device))
    model.train(was_training)
    return {"batch_size": batch_size, "examples": n, "mean_len": round(tokens / n, 1),
            "ms_per_example": round(1000 * median / n, 3), "examples_per_s": round(n / median, 1),
            "repeats": repeats, "threads": threads()}


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
