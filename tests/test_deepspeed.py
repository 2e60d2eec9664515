"""engine=deepspeed: ZeRO 0-3 on CPU (gloo), one process and two, resume, the teacher kept out of ZeRO.

Every test that starts a DeepSpeed engine is in the slow tier (make test-slow).

The first DeepSpeed job on a machine JIT-compiles DeepSpeed's CPU comm op (~1 min; cached under
$TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions); every later one loads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_stage
from safetensors.torch import load_file
from torch import nn

from tinykd import distributed
from tinykd.data.batches import Batcher
from tinykd.engine import DeepSpeedEngine, deepspeed_config
from tinykd.errors import TinyKDError

SMOKE = ("stage=general", "debug=smoke")


def weights(res: dict) -> dict[str, torch.Tensor]:
    return load_file(Path(res["export"]) / "model.safetensors")


def assert_same_weights(a: dict, b: dict, atol: float = 2e-5):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4,
                                   msg=lambda m, k=k: f"{k}: {m}")


def assert_same_model_up_to_adam_noise(a: dict, b: dict, lr: float, steps: int, atol: float = 1e-4):
    """Two exports of a token or QA model: every weight within `steps` Adam steps of the other's, and the
    log-probabilities they give (per token over tags; over positions for an answer's start and end) within atol.

    Adam divides a gradient by its own running magnitude, so where the true gradient is ~0 an update is
    rounding noise scaled up to ~lr, and gloo's ZeRO-2 reduction rounds otherwise than one process. A QA
    head's bias and the last LayerNorm's bias are such parameters: each shifts every position's start
    (end) logit by the same amount, which a softmax over positions ignores, so their gradients are zero
    in exact arithmetic. Weights alone then differ by up to ~lr a step; what the model computes does not."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForTokenClassification

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        far = float((wa[k] - wb[k]).abs().max())
        assert far <= lr * steps, f"{k}: differs by {far:.3g}, more than {steps} steps of {lr}"
    qa = "qa_outputs.weight" in wa
    auto = AutoModelForQuestionAnswering if qa else AutoModelForTokenClassification
    ma, mb = (auto.from_pretrained(r["export"]).eval() for r in (a, b))
    ids = torch.randint(1000, (8, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        oa, ob = ma(input_ids=ids), mb(input_ids=ids)
    for name in ("start_logits", "end_logits") if qa else ("logits",):
        torch.testing.assert_close(oa[name].log_softmax(-1), ob[name].log_softmax(-1), atol=atol, rtol=0,
                                   msg=lambda m, n=name: f"{n} log-probabilities: {m}")


def test_deepspeed_config_comes_from_the_hydra_config(tmp_path):
    cfg = deepspeed_config(batch_size=8, grad_accum=4, max_grad_norm=0.5, precision="bf16", zero_stage=3,
                           world_size=2)
    assert cfg["train_micro_batch_size_per_gpu"] == 8 and cfg["gradient_accumulation_steps"] == 4
    assert cfg["train_batch_size"] == 64 and cfg["gradient_clipping"] == 0.5
    assert cfg["zero_optimization"] == {"stage": 3} and cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"reduce_bucket_size": 1000}, "steps_per_print": 5}))
    merged = deepspeed_config(batch_size=8, grad_accum=1, max_grad_norm=1.0, precision="fp32", zero_stage=2,
                              world_size=1, user_json=str(user))
    assert merged["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 1000} and merged["steps_per_print"] == 5
    with pytest.raises(TinyKDError, match="not a ZeRO stage"):
        deepspeed_config(batch_size=8, grad_accum=1, max_grad_norm=1.0, precision="fp32", zero_stage=4, world_size=1)
    with pytest.raises(TinyKDError, match="does not exist"):
        deepspeed_config(batch_size=8, grad_accum=1, max_grad_norm=1.0, precision="fp32", zero_stage=2,
                         world_size=1, user_json=str(tmp_path / "missing.json"))


def test_launcher_local_rank_is_taken_out_of_hydras_arguments(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert distributed.strip_launcher_args(["--local_rank=1", "stage=general", "debug=smoke"]) == [
        "stage=general", "debug=smoke"]
    assert os.environ["LOCAL_RANK"] == "1"
    assert distributed.strip_launcher_args(["stage=task", "--local-rank", "3"]) == ["stage=task"]
    assert os.environ["LOCAL_RANK"] == "3"


def test_ranks_split_each_global_batch_without_overlap_or_loss(tmp_path):
    import datasets
    from transformers import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]) + "\n")
    tok = BertTokenizer(str(vocab))
    ds = datasets.Dataset.from_dict({"input_ids": [[2, 5, 3] + [5] * (i % 4) for i in range(37)],
                                     "labels": list(range(37))})
    one = Batcher(ds, tok, 8, seed=3, rank=0, world_size=1)
    ranks = [Batcher(ds, tok, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == one.batches_per_epoch == 5
    its = [b.iterate(0) for b in ranks]
    single = one.iterate(0)
    seen = []
    for _ in range(4):  # the first four (full) batches: the two ranks' halves are the single process's batch
        halves = [next(it)["labels"].tolist() for it in its]
        assert halves[0] + halves[1] == next(single)["labels"].tolist()
        seen += halves[0] + halves[1]
    last = [next(it)["labels"].tolist() for it in its]  # 5 left: filled to 8 from the epoch's first examples
    assert len(last[0]) == len(last[1]) == 4
    assert sorted(set(seen + last[0] + last[1])) == list(range(37)), "every example seen in the epoch"
    assert len(seen) == len(set(seen)) == 32


@pytest.mark.slow
def test_zero3_partitions_the_student_never_the_teacher(tmp_path):
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)).requires_grad_(False)
    student = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2))
    engine = DeepSpeedEngine(student, lr=1e-2, weight_decay=0.0, warmup_ratio=0.0, scheduler="constant",
                             total_steps=4, grad_accum=1, max_grad_norm=1.0, batch_size=4, zero_stage=3,
                             device_name="cpu", run_dir=tmp_path)
    assert all(hasattr(p, "ds_id") for p in student.parameters())
    assert not any(hasattr(p, "ds_id") for p in teacher.parameters())
    assert [tuple(p.shape) for p in teacher.parameters()] == [(8, 8), (8,), (2, 8), (2,)]
    x = torch.randn(4, 8)
    with engine.gathered():
        before = student[0].weight.detach().clone()
        assert before.shape == (4, 8)
    loss = (student(x) - teacher(x)).pow(2).mean()
    engine.backward(loss)
    assert engine.step() is True
    with engine.gathered():
        assert not torch.equal(before, student[0].weight)


@pytest.fixture
def torch_run(make_cfg):
    return weights(run_stage(make_cfg(*SMOKE, "engine=torch")))


@pytest.mark.slow
@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_zero_stage_trains_smoke_and_matches_the_torch_engine(make_cfg, torch_run, zero):
    res = run_stage(make_cfg(*SMOKE, "engine=deepspeed", f"engine.zero_stage={zero}",
                             "runs.general=${paths.runs}/general/ds"))
    run_dir = Path(res["run_dir"])
    assert (run_dir / "checkpoints" / "deepspeed").is_dir()
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["engine"]["zero_stage"] == zero and (run_dir / "checkpoints" / "deepspeed" / ckpt["engine"]["deepspeed_tag"]).is_dir()
    got = weights(res)
    # the same AdamW, schedule, clipping, batches and dropout masks: the same weights as engine=torch
    assert_same_weights(got, torch_run)
    from transformers import AutoModel

    assert AutoModel.from_pretrained(res["export"]).config.hidden_size == 32


@pytest.mark.slow
@pytest.mark.parametrize("zero", [2, 3])
def test_resume_through_deepspeed_equals_an_uninterrupted_run(make_cfg, zero):
    base = (*SMOKE, "engine=deepspeed", f"engine.zero_stage={zero}")
    full = run_stage(make_cfg(*base, "runs.general=${paths.runs}/general/full"))
    cut = run_stage(make_cfg(*base, "runs.general=${paths.runs}/general/cut", "interrupt_after=4"))
    assert cut["interrupted"] and cut["step"] == 4
    resumed = run_stage(make_cfg(*base, "runs.general=${paths.runs}/general/cut", "resume=true"))
    assert resumed["steps"] == full["steps"] == 6
    assert_same_weights(weights(resumed), weights(full), atol=0)


@pytest.mark.slow
def test_two_processes_give_the_weights_of_one_with_the_same_global_batch(make_cfg, runs_dir):
    """torchrun, 2 ranks of 8 (gloo, ZeRO-2) against 1 process of 16; dropout off (masks differ by rank)."""
    common = (*SMOKE, "engine=deepspeed", "engine.zero_stage=2", "student.dropout=0", "logger=none")
    single = run_stage(make_cfg(*common, "train.general.batch_size=16", "runs.general=${paths.runs}/general/one"))
    env = {k: v for k, v in os.environ.items() if k not in distributed.RENDEZVOUS}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29617",
         "-m", "tinykd", "progress=false", *common, "train.general.batch_size=8",
         "runs.general=${paths.runs}/general/two"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two = runs_dir / "smoke" / "general" / "two"
    assert proc.stdout.count("exported general student") == 1, "only rank 0 prints"
    assert len((two / "metrics.jsonl").read_text().splitlines()) == len(
        (Path(single["run_dir"]) / "metrics.jsonl").read_text().splitlines())
    assert_same_weights(load_file(two / "student" / "model.safetensors"), weights(single), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("zero", [2, 3])
def test_teacher_and_task_stages_run_through_deepspeed_as_through_torch(make_cfg, zero):
    """Fine-tuning and both task-distillation phases (one engine a phase) give engine=torch's weights."""
    ds = ("engine=deepspeed", f"engine.zero_stage={zero}")
    t_torch = run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke", "runs.teacher=${paths.runs}/teacher/t"))
    t_ds = run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke", *ds, "runs.teacher=${paths.runs}/teacher/d"))
    assert_same_weights(weights(t_ds), weights(t_torch))
    task = ("stage=task", "task=sst2", "debug=smoke", "student.init=random",
            f"stage.teacher_dir={t_torch['export']}")
    a = run_stage(make_cfg(*task, "runs.task=${paths.runs}/task/t"))
    b = run_stage(make_cfg(*task, *ds, "runs.task=${paths.runs}/task/d"))
    assert a["best_step"] == b["best_step"] and a["dev"] == pytest.approx(b["dev"])
    assert_same_weights(weights(b), weights(a))
    # interrupted in the prediction phase and resumed: the same export as the uninterrupted run
    cut = run_stage(make_cfg(*task, *ds, "runs.task=${paths.runs}/task/cut", "interrupt_after=8"))
    assert cut["interrupted"]
    resumed = run_stage(make_cfg(*task, *ds, "runs.task=${paths.runs}/task/cut", "resume=true"))
    assert_same_weights(weights(resumed), weights(b), atol=0)


@pytest.mark.parametrize("stage", [("stage=mlm_head",), ("stage=general", "distill=distilbert", "student=distilbert")],
                         ids=["mlm_head", "general_distilbert"])
@pytest.mark.slow
def test_every_training_stage_runs_through_deepspeed_as_through_torch(make_cfg, stage):
    """The masked-LM head and DistilBERT's general distillation (ZeRO-2, one process): engine=torch's
    weights, and a run interrupted and resumed through DeepSpeed's checkpoint gives the same."""
    key = "mlm_head" if "stage=mlm_head" in stage else "general"
    ds = ("engine=deepspeed", "engine.zero_stage=2")
    a = run_stage(make_cfg(*stage, "debug=smoke", f"runs.{key}=${{paths.runs}}/{key}/t"))
    b = run_stage(make_cfg(*stage, "debug=smoke", *ds, f"runs.{key}=${{paths.runs}}/{key}/d"))
    assert_same_weights(weights(b), weights(a))
    cut = run_stage(make_cfg(*stage, "debug=smoke", *ds, f"runs.{key}=${{paths.runs}}/{key}/cut", "interrupt_after=4"))
    assert cut["interrupted"] and cut["step"] == 4
    resumed = run_stage(make_cfg(*stage, "debug=smoke", *ds, f"runs.{key}=${{paths.runs}}/{key}/cut", "resume=true"))
    assert_same_weights(weights(resumed), weights(b), atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["wnut17", "squad"])
def test_token_and_qa_tasks_run_through_deepspeed_as_through_torch(make_cfg, task):
    """A token classifier and a QA model, fine-tuned and distilled through ZeRO-2: engine=torch's model (up to Adam noise);
    interrupted in the prediction phase and resumed, the uninterrupted run's."""
    ds = ("engine=deepspeed", "engine.zero_stage=2")
    t_torch = run_stage(make_cfg("stage=teacher", f"task={task}", "debug=smoke", "runs.teacher=${paths.runs}/teacher/t"))
    t_ds = run_stage(make_cfg("stage=teacher", f"task={task}", "debug=smoke", *ds,
                              "runs.teacher=${paths.runs}/teacher/d"))
    assert_same_model_up_to_adam_noise(t_ds, t_torch, lr=1e-3, steps=6)  # debug=smoke's lr and steps
    distil = ("stage=task", f"task={task}", "debug=smoke", "student.init=random", f"stage.teacher_dir={t_torch['export']}")
    a = run_stage(make_cfg(*distil, "runs.task=${paths.runs}/task/t"))
    b = run_stage(make_cfg(*distil, *ds, "runs.task=${paths.runs}/task/d"))
    assert a["best_step"] == b["best_step"] and a["dev"] == pytest.approx(b["dev"])
    assert_same_model_up_to_adam_noise(b, a, lr=1e-3, steps=12)  # intermediate, then prediction
    cut = run_stage(make_cfg(*distil, *ds, "runs.task=${paths.runs}/task/cut", "interrupt_after=8"))
    assert cut["interrupted"]
    resumed = run_stage(make_cfg(*distil, *ds, "runs.task=${paths.runs}/task/cut", "resume=true"))
    assert_same_weights(weights(resumed), weights(b), atol=0)
