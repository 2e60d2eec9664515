"""The GPU path (`make gpu-check` runs this tier on a GPU; `make test-slow` too, where one is present): CUDA
placement, bf16 autocast for teacher and student, DeepSpeed ZeRO-2 and ZeRO-3 on one GPU with the teacher
never partitioned, and an export from a ZeRO-3 run that reloads on the CPU with the same dev score.

Every test is marked `gpu` and skipped without a CUDA device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_stage
from torch import nn

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SMOKE = ("task=sst2", "debug=smoke")
CUDA = ("engine.device=cuda",)


def test_task_distillation_runs_on_cuda_in_bf16_for_teacher_and_student(make_cfg, monkeypatch):
    """Both models' layer outputs come out of bf16 autocast on the GPU, in a real smoke run."""
    import tinykd.stages.task as task_stage

    run_stage(make_cfg("stage=teacher", *SMOKE, *CUDA, "engine.precision=bf16"))
    seen = []
    real = task_stage.layer_outputs

    def spy(model, batch, attentions):  # what each model's forward runs under
        seen.append((next(model.parameters()).device.type, torch.is_autocast_enabled("cuda"),
                     torch.get_autocast_dtype("cuda")))
        return real(model, batch, attentions)

    monkeypatch.setattr(task_stage, "layer_outputs", spy)
    torch.cuda.reset_peak_memory_stats()
    res = run_stage(make_cfg("stage=task", *SMOKE, *CUDA, "engine.precision=bf16", "student.init=pruned",
                             "distill.allow_weak_teacher=true"))
    assert torch.cuda.max_memory_allocated() > 0
    assert seen and set(seen) == {("cuda", True, torch.bfloat16)}  # teacher and student calls alike
    assert 0.0 <= res["dev"]["accuracy"] <= 1.0
    # the export is a plain fp32 model that the CPU scores as the GPU did (bf16 may flip a close call)
    ev = run_stage(make_cfg("stage=eval", *SMOKE, "engine.device=cpu", f"model={res['export']}"))
    assert abs(ev["dev"]["accuracy"] - res["dev"]["accuracy"]) <= 0.03


@pytest.mark.parametrize("zero", [2, 3])
def test_deepspeed_on_one_gpu(make_cfg, zero):
    from transformers import AutoModel

    res = run_stage(make_cfg("stage=general", "debug=smoke", *CUDA, "engine=deepspeed", f"engine.zero_stage={zero}",
                             "engine.precision=bf16"))
    assert res["steps"] == 6
    model = AutoModel.from_pretrained(res["export"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model.config.hidden_size == 32


def test_zero3_on_gpu_partitions_the_student_never_the_teacher(tmp_path):
    from tinykd.engine import DeepSpeedEngine

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)).requires_grad_(False).cuda()
    student = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2))
    engine = DeepSpeedEngine(student, lr=1e-2, weight_decay=0.0, warmup_ratio=0.0, scheduler="constant",
                             total_steps=4, grad_accum=1, max_grad_norm=1.0, batch_size=4, zero_stage=3,
                             precision="bf16", device_name="cuda", run_dir=tmp_path)
    assert all(hasattr(p, "ds_id") for p in student.parameters())
    assert not any(hasattr(p, "ds_id") for p in teacher.parameters())
    x = torch.randn(4, 8, device="cuda")
    with engine.autocast():
        loss = (student(x).float() - teacher(x).float()).pow(2).mean()
    engine.backward(loss)
    assert engine.step() is True


def test_an_export_from_zero3_reloads_on_cpu_with_the_same_dev_score(make_cfg):
    run_stage(make_cfg("stage=teacher", *SMOKE, *CUDA))
    res = run_stage(make_cfg("stage=task", *SMOKE, *CUDA, "engine=deepspeed", "engine.zero_stage=3",
                             "student.init=pruned", "distill.allow_weak_teacher=true"))
    from safetensors.torch import load_file

    weights = load_file(Path(res["export"]) / "model.safetensors")
    assert all(t.numel() > 0 for t in weights.values())  # gathered whole, not ZeRO-3's empty partitions
    ev = run_stage(make_cfg("stage=eval", *SMOKE, "engine.device=cpu", f"model={res['export']}"))
    dev_examples = ev["examples"]
    assert abs(ev["dev"]["accuracy"] - res["dev"]["accuracy"]) <= 1 / dev_examples  # fp32: at most one close call
