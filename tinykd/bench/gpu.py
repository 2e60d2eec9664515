"""`make gpu-check`: the GPU path, checked and timed on one GPU, in one script (under 8 minutes).

1. The test tier marked `gpu` (tests/test_gpu.py): CUDA placement, bf16 autocast for teacher and student,
   DeepSpeed ZeRO-2 and ZeRO-3 on one GPU with the teacher never partitioned, and an export from a ZeRO-3
   run that reloads on the CPU with the same dev score.
2. One distillation step (tinykd/bench/throughput.py's: the teacher's forward, the student's forward and
   backward, TinyBERT's embedding, attention, hidden-state and logit losses, clipping, AdamW) for a
   BERT-base-shaped teacher into TinyBERT4's shape, batch 32 x 128, bf16 autocast: its median time, its
   FLOPs (`torch.utils.flop_counter`), the achieved TFLOP/s and their fraction of the device's dense bf16
   peak (`PEAK_BF16_TFLOPS`, looked up by the device's name; an unknown device gets no fraction).
3. `make bench-augment` on the GPU: tinykd's augmenter against the per-word reference procedure.

It prints a table and writes `reports/gpu.json`. On a machine without a CUDA device it says so, measures
nothing, writes nothing, and exits 0.

    python -m tinykd.bench.gpu [--steps 20] [--warmup 5] [--sentences 200] [--out reports/gpu.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from tinykd.config import REPO_ROOT

TARGETS = {"fraction_of_bf16_peak": 0.45, "augment_speedup": 30.0}
# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets; matched against
# torch.cuda.get_device_name in this order (the first name it contains).
PEAK_BF16_TFLOPS = (
    ("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0),
    ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0),
)


def bf16_peak(name: str) -> float | None:
    for key, peak in PEAK_BF16_TFLOPS:
        if key in name:
            return peak
    return None


def gpu_tests() -> dict:
    """Run the `gpu` test tier in a subprocess; each test's outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                               f"--junitxml={report}", "tests/test_gpu.py"], cwd=REPO_ROOT, capture_output=True,
                              text=True)
        seconds = time.perf_counter() - t
        cases = []
        if report.is_file():
            for case in ET.parse(report).getroot().iter("testcase"):
                outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
                           else "skipped" if case.find("skipped") is not None else "passed")
                cases.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0))})
    return {"returncode": proc.returncode, "seconds": round(seconds, 1), "tests": cases,
            "tail": (proc.stdout + proc.stderr)[-3000:] if proc.returncode else ""}


def distillation_step(steps: int, warmup: int, batch_size: int = 32, seq_len: int = 128) -> dict:
    from tinykd.bench.throughput import BERT_BASE, TinyKDStep, corpus_batches, step_flops

    step = TinyKDStep("scores", teacher=BERT_BASE, device="cuda", precision="bf16")
    batches = corpus_batches(warmup + steps, batch_size, seq_len)
    flops = step_flops(step, batches[0])
    times = []
    for i, batch in enumerate(batches):
        torch.cuda.synchronize()
        t = time.perf_counter()
        step(batch)  # float(loss) inside: the step has finished on the device
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    median = statistics.median(times)
    achieved = flops / median / 1e12
    name = torch.cuda.get_device_name()
    peak = bf16_peak(name)
    return {"teacher": BERT_BASE, "student": "TinyBERT4 (4 x 312, 12 heads, 1200 feed-forward)",
            "batch_size": batch_size, "seq_len": seq_len, "precision": "bf16 autocast", "steps_timed": steps,
            "step_seconds_median": round(median, 5), "tflop_per_step": round(flops / 1e12, 4),
            "achieved_tflops": round(achieved, 2), "bf16_peak_tflops": peak,
            "fraction_of_bf16_peak": round(achieved / peak, 4) if peak else None,
            "tokens_per_s": round(batch_size * seq_len / median, 1)}


def augmentation(sentences: int) -> dict:
    from tinykd.bench import augment

    with tempfile.TemporaryDirectory() as tmp:
        r = augment.main(["--device", "cuda", "--sentences", str(sentences), "--out", str(Path(tmp) / "a.json")])
    return {"sentences": sentences, "tinykd_seconds": r["tinykd"]["seconds"],
            "reference_seconds": r["reference"]["seconds"], "speedup": r["speedup"],
            "candidate_lists_identical": r["candidate_lists_identical"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--out", default=str(REPO_ROOT / "reports" / "gpu.json"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"[gpu-check] no CUDA device on this machine (torch {torch.__version__}, "
              f"torch.cuda.is_available() is False): nothing was checked or measured, and {args.out} was not "
              "written. Run it on a machine with a GPU.")
        return 0
    start = time.perf_counter()
    name = torch.cuda.get_device_name()
    print(f"[gpu-check] {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    tests = gpu_tests()
    passed = sum(c["outcome"] == "passed" for c in tests["tests"])
    print(f"[gpu-check] gpu tests: {passed}/{len(tests['tests'])} passed in {tests['seconds']} s")
    step = distillation_step(args.steps, args.warmup)
    aug = augmentation(args.sentences)
    result = {
        "device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "tests": tests,
        "distillation_step": step, "augmentation": aug, "seconds": round(time.perf_counter() - start, 1),
        "targets": {
            "gpu_tests_pass": {"value": f"{passed}/{len(tests['tests'])}",
                               "met": tests["returncode"] == 0 and passed == len(tests["tests"]) > 0},
            "fraction_of_bf16_peak": {"target": TARGETS["fraction_of_bf16_peak"],
                                      "value": step["fraction_of_bf16_peak"],
                                      "met": (step["fraction_of_bf16_peak"] or 0) >= TARGETS["fraction_of_bf16_peak"]},
            "augment_speedup": {"target": TARGETS["augment_speedup"], "value": aug["speedup"],
                                "met": aug["speedup"] >= TARGETS["augment_speedup"]}},
        "command": "make gpu-check",
    }
    rows = [("gpu tests", f"{passed}/{len(tests['tests'])} passed", "all"),
            ("distillation step, BERT-base -> TinyBERT4, 32 x 128, bf16",
             f"{step['step_seconds_median'] * 1e3:.1f} ms, {step['achieved_tflops']} TFLOP/s"
             + (f" = {100 * step['fraction_of_bf16_peak']:.1f}% of {step['bf16_peak_tflops']:.0f}"
                if step["bf16_peak_tflops"] else " (peak unknown for this device)"),
             f">= {100 * TARGETS['fraction_of_bf16_peak']:.0f}% of peak"),
            ("augmentation vs the per-word reference", f"{aug['speedup']:.1f}x", f">= {TARGETS['augment_speedup']:.0f}x")]
    print(f"\n| check ({name}) | measured | target |\n|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")
    for c in tests["tests"]:
        print(f"[gpu-check]   {c['outcome']:7s} {c['test']} ({c['seconds']:.1f} s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"[gpu-check] wrote {out} ({result['seconds'] / 60:.1f} min)")
    return 0 if result["targets"]["gpu_tests_pass"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
