"""CPU (or GPU) latency of a classifier, the same code for every student and teacher: the
median of repeated forwards after warm-up, on fixed random inputs of one length (no padding)."""

from __future__ import annotations

import statistics
import time

import torch

from tinykd import models


@torch.inference_mode()
def measure(model, batch_size: int, seq_len: int, repeats: int = 30, warmup: int = 5, seed: int = 0) -> dict:
    """Median seconds of `repeats` forwards of a (batch_size, seq_len) batch, after `warmup`
    forwards; returns milliseconds per batch and examples per second."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    ids = torch.randint(min(1000, vocab - 1), vocab, (batch_size, seq_len), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    inputs = {k: v.to(device) for k, v in models.model_inputs(model, batch).items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(**inputs)
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        model(**inputs)
        sync()
        times.append(time.perf_counter() - t)
    model.train(was_training)
    median = statistics.median(times)
    return {"batch_size": batch_size, "seq_len": seq_len, "median_ms": round(1000 * median, 3),
            "examples_per_s": round(batch_size / median, 1), "repeats": repeats, "threads": torch.get_num_threads()}


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
