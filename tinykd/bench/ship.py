"""Ship the SST-2 student (`make bench-ship`): the teacher and one student of `make bench-sst2` (seed 42; the
same commands, so a finished bench-sst2 is reused as it is), then `stage=export` on the student with its
teacher beside it, and the table that judges them:
  - dev accuracy of teacher and student in PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime int8;
  - latency of all six, batch 1 and 32 x 64 tokens and SST-2 dev's own lengths, timed in one process;
  - int8's sensitivity per layer group and with per-channel weights;
  - `<out>/results.json`, `<out>/REPORT.md`, `<out>/runtimes.png` and `<out>/commands.log`.

    python -m tinykd.bench.ship [--seed 42] [--runs runs/bench_sst2] [--out reports/ship] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tinykd.bench.runner import Runner
from tinykd.bench.sst2 import EXPERIMENT, distil, shared_runs
from tinykd.config import REPO_ROOT

# the int8 student against the PyTorch fp32 teacher at batch 32; int8's loss against the fp32 student
TARGETS = {"speedup_b32": 10.0, "int8_drop_points": 0.5}
RUNTIMES = {"pytorch": "PyTorch fp32", "onnx": "ONNX Runtime fp32", "int8": "ONNX Runtime int8"}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--runs", default=str(Path(os.environ.get("TINYKD_RUNS", REPO_ROOT / "runs")) / "bench_sst2"))
    ap.add_argument("--out", default=str(REPO_ROOT / "reports" / "ship"))
    ap.add_argument("--notes", default=None, help="a file of remarks to add to REPORT.md (what was tried)")
    ap.add_argument("overrides", nargs="*", help="extra tinykd overrides for every step (e.g. debug=smoke)")
    args = ap.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)  # the report names the command that made it
    root, out_dir = Path(args.runs).resolve(), Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tinykd = Runner("bench-ship", out_dir / "commands.log", (f"experiment={EXPERIMENT}", "task=sst2"))
    start = time.perf_counter()

    # --- 1-4: bench-sst2's teacher and student (one seed), reused when they are finished
    seconds, runs = distil(tinykd, root, [args.seed], [*shared_runs(root), *args.overrides], baselines=False)
    student = runs["student"][args.seed] / "student"

    # --- 5: the export, its check, int8, scores and latency, with the teacher beside (from the student's card)
    seconds["export"] = tinykd("stage=export", f"model={student}", "export.sensitivity=true", *args.overrides)
    report = json.loads((student / "onnx" / "report.json").read_text())

    m = report["main_metric"]
    dev, lat = report["dev"], report["latency"]
    speedup = lat["teacher"]["pytorch"]["b32"]["median_ms"] / lat["student"]["int8"]["b32"]["median_ms"]
    drop = 100 * (dev["student"]["pytorch"][m] - dev["student"]["int8"][m])
    result = {
        "task": report["task"], "metric": m, "dev": dev, "dev_examples": report["dev_examples"], "latency": lat,
        "onnx": report["onnx"], "sensitivity": report["sensitivity"], "settings": report["settings"],
        "threads": report["threads"], "machine": report["machine"],
        "student_dir": os.path.relpath(student, REPO_ROOT), "teacher_dir": os.path.relpath(report["teacher"], REPO_ROOT),
        "seed": args.seed, "seconds": time.perf_counter() - start, "step_seconds": seconds,
        "reused_steps": tinykd.reused,
        "command": " ".join(["python -m tinykd.bench.ship", *given]) if given else "make bench-ship",
        "targets": {
            "speedup_b32": {"target": TARGETS["speedup_b32"], "value": speedup,
                            "met": speedup >= TARGETS["speedup_b32"]},
            "int8_drop_points": {"target": TARGETS["int8_drop_points"], "value": drop,
                                 "met": drop <= TARGETS["int8_drop_points"]},
        },
        "notes": Path(args.notes).read_text().strip() if args.notes else None,
    }
    (out_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out_dir / "runtimes.png")
    (out_dir / "REPORT.md").write_text(report_md(result))
    print(f"[bench-ship] int8 student vs PyTorch teacher at batch 32: {speedup:.2f}x (target >= 10); int8 loses "
          f"{drop:+.2f} points of dev {m} against the fp32 student (target <= 0.5); {result['seconds'] / 60:.1f} min")
    print(f"[bench-ship] wrote {out_dir / 'results.json'}, {out_dir / 'REPORT.md'}, {out_dir / 'runtimes.png'}")
    return result


def plot(r: dict, path: Path) -> None:
    """Batch-32 latency of each model x runtime (bars), labelled with its dev score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{name} · {RUNTIMES[b]}", r["latency"][name][b]["b32"]["median_ms"], r["dev"][name][b][r["metric"]])
            for name in ("teacher", "student") for b in RUNTIMES if b in r["latency"][name]]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    colors = ["#9e9e9e" if label.startswith("teacher") else "#1f77b4" for label, _, _ in rows]
    ax.barh([x[0] for x in rows][::-1], [x[1] for x in rows][::-1], color=colors[::-1])
    for i, (_, ms, score) in enumerate(rows[::-1]):
        ax.text(ms, i, f" {ms:.1f} ms · {100 * score:.2f}%", va="center", fontsize=8)
    ax.set_xlabel(f"CPU latency, batch 32 x 64 tokens (ms; {r['threads']} threads)")
    ax.set_title(f"SST-2 dev {r['metric']} and speed by runtime ({r['machine']['cpu']})", fontsize=9)
    ax.set_xlim(0, max(x[1] for x in rows) * 1.4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_md(r: dict) -> str:
    m, dev, lat, mach = r["metric"], r["dev"], r["latency"], r["machine"]
    t, d = r["targets"], r["dev_examples"]
    lines = [
        "# Ship the SST-2 student: ONNX, int8, latency (`" + r["command"] + "`)", "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']}, ONNX Runtime {mach['onnxruntime']}, "
        f"{r['threads']} threads for both runtimes, no GPU. Whole benchmark: {r['seconds'] / 60:.1f} min"
        + (f" (reused finished runs: {len(r['reused_steps'])})" if r["reused_steps"] else "") + ".", "",
        f"Student: `{r['student_dir']}` (bench-sst2's 4 x 192 BERT, seed {r['seed']}); teacher: `{r['teacher_dir']}` "
        "(MiniLM-L6 fine-tuned on SST-2). Both exported by `stage=export` (torch.onnx, ONNX Runtime's transformer "
        "optimizer, dynamic int8 with `onnxruntime.quantization`).", "",
        "![latency and accuracy by runtime](runtimes.png)", "",
        f"| model | runtime | SST-2 dev {m} (%) | b1 ms | b32 ms | b1 ms/ex (dev lengths) | b32 ms/ex (dev lengths) | file MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("teacher", "student"):
        for b, label in RUNTIMES.items():
            if b not in lat[name]:
                continue
            x = lat[name][b]
            lines.append(f"| {name} | {label} | {100 * dev[name][b][m]:.2f} | {x['b1']['median_ms']:.2f} | "
                         f"{x['b32']['median_ms']:.2f} | {x['real_b1']['ms_per_example']:.3f} | "
                         f"{x['real_b32']['ms_per_example']:.3f} | {r['onnx'][name]['mb'][b]} |")
    s = r["settings"]
    lines += [
        "", f"Dev: all {d} SST-2 dev sentences, scored by each runtime through the same evaluation code. Latency: "
        f"the median of {s['repeats']} runs at a fixed {s['seq_len']} tokens (random ids, no padding), and of 3 passes "
        f"over the first {s['real_examples']} dev sentences in length-sorted batches (mean length {lat['student']['pytorch']['real_b32']['mean_len']} tokens); the six model/runtime pairs take turns in 3 "
        f"blocks, each block after {s['warmup']} warm-up runs (`tinykd.latency.median_seconds`). The ONNX "
        f"graphs were checked against PyTorch on {r['onnx']['student']['checked_examples']} dev sentences: largest "
        f"logit difference {r['onnx']['student']['max_abs_difference']:.1e} (student), "
        f"{r['onnx']['teacher']['max_abs_difference']:.1e} (teacher).", "",
        "## Targets", "",
        "| target | wanted | measured | met |", "|---|---|---|---|",
        f"| int8 student vs PyTorch fp32 teacher, batch 32 | >= {t['speedup_b32']['target']:.0f}x | "
        f"{t['speedup_b32']['value']:.2f}x | {verdict(t['speedup_b32'], 'x', lower=False)} |",
        f"| int8 student's dev {m} lost against the fp32 student | <= {t['int8_drop_points']['target']} points | "
        f"{t['int8_drop_points']['value']:+.2f} points | {verdict(t['int8_drop_points'], ' points', lower=True)} |",
        f"| (teacher, for reference) int8 vs fp32 | | {100 * (dev['teacher']['pytorch'][m] - dev['teacher']['int8'][m]):+.2f} points | |",
    ]
    if r["sensitivity"]:
        base = dev["student"]["int8"][m]
        lines += ["", "## int8 sensitivity of the student", "",
                  f"All of the student's matrix products in int8 score {100 * base:.2f}; each row changes one thing "
                  f"(fp32 student: {100 * dev['student']['pytorch'][m]:.2f}).", "",
                  f"| variant | dev {m} (%) | change vs all-int8 (points) | file MB |", "|---|---|---|---|"]
        for row in r["sensitivity"]:
            lines.append(f"| {row['variant']} | {100 * row['dev'][m]:.2f} | {100 * (row['dev'][m] - base):+.2f} | "
                         f"{row['mb']} |")
    if r["notes"]:
        lines += ["", "## Notes", "", r["notes"]]
    lines += ["", "## Commands", "", "Every command this benchmark ran is in `commands.log` with its output.", ""]
    return "\n".join(lines)


def verdict(t: dict, unit: str, lower: bool) -> str:
    if t["met"]:
        return "yes"
    gap = t["value"] - t["target"] if lower else t["target"] - t["value"]
    return f"no, by {gap:.2f}{unit}"


if __name__ == "__main__":
    main()
