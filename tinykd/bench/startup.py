"""How fast a bad command line is refused: each one the options issue names, through the real CLI.

Every command runs as `python -m tinykd ...` in a fresh process (the default config, nothing
cached), with its runs directory in a temporary folder. Each must exit with status 2 in under
5 seconds, having written nothing; the table gives its status, the wall seconds from launch to
exit and the first line of its error. Writes `reports/startup.json`. The machine's load average
is recorded beside the figures: a process start is mostly imports, which a busy machine slows.

    python -m tinykd.bench.startup [--out reports/startup.json] [--limit 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tinykd.atomic import atomic_write_text
from tinykd.config import REPO_ROOT

CASES = (  # (what is wrong, the command line's arguments)
    ("typo in distill.pred_loss", ("stage=task", "task=sst2", "distill.pred_loss=softce")),
    ("typo in distill.attention_heads", ("stage=task", "task=sst2", "distill.attention_heads=meen")),
    ("typo in distill.attention_target", ("stage=task", "task=sst2", "distill.attention_target=score")),
    ("typo in distill.layer_map", ("stage=general", "distill.layer_map=unifrom")),
    ("typo in distill.teacher_cache", ("stage=task", "task=sst2", "distill.teacher_cache=disk")),
    ("typo in distill.transfer_targets", ("stage=task", "task=sst2", "student=bilstm", "distill.transfer_targets=sof")),
    ("typo in engine.precision", ("stage=teacher", "task=sst2", "engine.precision=fp61")),
    ("typo in augment.mlm_mode", ("stage=augment", "task=sst2", "augment.mlm_mode=exactly")),
    ("typo in augment.source", ("stage=augment", "task=sst2", "augment.source=wordnet")),
    ("fp16 on the torch engine", ("stage=teacher", "task=sst2", "engine=torch", "engine.precision=fp16")),
    ("bf16 on the CPU", ("stage=teacher", "task=sst2", "engine.device=cpu", "engine.precision=bf16")),
    ("deepspeed with the BiLSTM recipe", ("stage=task", "task=sst2", "student=bilstm", "engine=deepspeed")),
    ("ZeRO-3 with stage=mlm_head", ("stage=mlm_head", "engine=deepspeed", "engine.zero_stage=3")),
    ("a key stage=general never reads", ("stage=general", "train.task_prediction.lr=0.1")),
    ("a key stage=teacher never reads", ("stage=teacher", "distill.temperature=2")),
    ("a key stage=general never reads", ("stage=general", "model=x")),
    ("a negative step budget", ("stage=general", "train.general.max_steps=-5")),
    ("an empty batch", ("stage=general", "train.general.batch_size=0")),
    ("a hub id the preset's package would replace", ("stage=teacher", "teacher.path=google-bert/bert-base-uncased")),
)


def refuse(args: tuple[str, ...], runs: Path) -> dict:
    env = {**os.environ, "TINYKD_RUNS": str(runs), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "tinykd", "progress=false", *args], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t0
    lines = r.stderr.strip().splitlines()
    return {"command": "python -m tinykd " + " ".join(args), "status": r.returncode, "seconds": round(seconds, 2),
            "error": lines[0] if lines else "", "wrote": sorted(str(p.relative_to(runs)) for p in runs.rglob("*"))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="reports/startup.json")
    ap.add_argument("--limit", type=float, default=5.0, help="seconds a refusal may take")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinykd-startup-") as tmp:
        for i, (what, case) in enumerate(CASES):
            row = {"what": what, **refuse(case, Path(tmp) / f"runs{i}")}
            row["ok"] = row["status"] == 2 and row["seconds"] < args.limit and not row["wrote"]
            rows.append(row)
            print(f"{'ok  ' if row['ok'] else 'FAIL'} {row['status']:>3} {row['seconds']:5.2f} s  {row['command']}\n"
                  f"{'':15}{row['error']}", flush=True)
    seconds = sorted(r["seconds"] for r in rows)
    result = {"limit_s": args.limit, "all_ok": all(r["ok"] for r in rows), "max_s": seconds[-1],
              "median_s": seconds[len(seconds) // 2], "cpus": os.cpu_count(),
              "load_average_1m_after": round(os.getloadavg()[0], 2), "cases": rows, "command": "make bench-startup"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"[bench-startup] {sum(r['ok'] for r in rows)}/{len(rows)} refused with status 2 in under {args.limit:g} s "
          f"(median {result['median_s']:.2f} s, slowest {result['max_s']:.2f} s; load average "
          f"{result['load_average_1m_after']} on {result['cpus']} CPUs); wrote {out}")
    if not result["all_ok"]:
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
