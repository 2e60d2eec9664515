"""Faults a run survives (README, "What happens when things go wrong"): hostile, truncated, corrupted or
foreign checkpoints; a full disk while writing; durable writes. Checkpoints here are real ones, written by
the one loop (tinykd/loop.py) around a linear model."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from test_loop import make_loop, train

from tinykd.atomic import atomic_write_text
from tinykd.errors import TinyKDError
from tinykd.run import CHECKPOINT, CheckpointError, checkpoint_paths, load_checkpoint, read_checkpoint, restore


def two_checkpoints(tmp_path, parts) -> tuple[Path, Path]:
    """A finished 6-step loop saving every 2 steps, 2 checkpoints kept: last.pt (step 6), last.1.pt (step 4)."""
    loop, module = make_loop(tmp_path, parts, total=6, save_every=2)
    train(loop, module)
    last, before = checkpoint_paths(tmp_path, 2)
    assert read_checkpoint(last)["step"] == 6 and read_checkpoint(before)["step"] == 4
    assert not last.with_name("last.2.pt").exists()
    return last, before


def leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("."))


class RunsCode:
    """Unpickling this calls os.system: a checkpoint that would run a command when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, parts):
    last, before = two_checkpoints(tmp_path, parts)
    marker = tmp_path / "ran"
    torch.save({"format": 1, "step": 99, "model": RunsCode(marker)}, last)
    with pytest.raises(CheckpointError, match="refused, as loading it could run code"):
        read_checkpoint(last)
    ckpt = load_checkpoint(tmp_path)  # resume falls back to the checkpoint before it
    assert ckpt["step"] == 4 and ckpt["path"] == str(before)
    torch.save({"format": 1, "model": RunsCode(marker)}, before)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    assert str(last) in e.value.problem and str(before) in e.value.problem and "drop resume=true" in e.value.fix
    assert not marker.exists(), "loading a checkpoint ran the command inside it"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_checkpoint_falls_back_to_the_one_before(tmp_path, parts, capsys, damage):
    last, before = two_checkpoints(tmp_path, parts)
    data = last.read_bytes()
    last.write_bytes({"truncated": data[: len(data) // 2], "garbage": (b"\x8a\x13not a checkpoint" * len(data))[: len(data)], "empty": b""}[damage])
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["step"] == 4
    err = capsys.readouterr().err
    assert f"{last} is truncated or corrupted" in err and "Trying the checkpoint before it." in err
    # and the loop resumes from it: 2 more steps to the end
    loop, module = make_loop(tmp_path, parts, total=6, save_every=2, resume_from=ckpt)
    assert loop.step == 4
    train(loop, module)
    assert read_checkpoint(last)["step"] == 6


def test_a_checkpoint_of_another_format_or_model_is_named(tmp_path, parts):
    last, before = two_checkpoints(tmp_path, parts)
    ckpt = read_checkpoint(last)
    torch.save({**{k: v for k, v in ckpt.items() if k != "format"}, "format": 0}, before)
    with pytest.raises(CheckpointError, match=rf"{before} is not a tinykd checkpoint of format 1 \(found: 0\)"):
        read_checkpoint(before)
    loop, _ = make_loop(tmp_path / "other", parts)  # the same loop around another model
    loop.engine.module = torch.nn.Linear(5, 2)
    with pytest.raises(CheckpointError, match=rf"{last} does not fit this run's model"):
        restore(loop.engine, {**ckpt, "path": str(last)})


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint(tmp_path, parts, monkeypatch):
    """ENOSPC in the middle of writing the next checkpoint: a clear error, last.pt as it was, no temp file."""
    last, before = two_checkpoints(tmp_path, parts)
    saved = last.read_bytes(), before.read_bytes()
    real_save = torch.save

    def half_then_full(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", half_then_full)
    loop, module = make_loop(tmp_path, parts, total=8, save_every=2, resume_from=load_checkpoint(tmp_path))
    with pytest.raises(TinyKDError, match=rf"No space left to write {last} .*the last checkpoint, {last}, is intact"):
        train(loop, module)
    assert (last.read_bytes(), before.read_bytes()) == saved
    assert leftovers(tmp_path) == []


def test_a_full_disk_while_writing_a_file_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_text(path, '{"done": 1}')
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    import builtins

    real_open = builtins.open

    class FullFile:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            real_write(self.f.fileno(), text[:3].encode())  # some bytes reach the disk, then it is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

    def opener(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return FullFile(f) if "w" in mode and Path(file).name.startswith(".results.json-") else f

    monkeypatch.setattr(builtins, "open", opener)
    with pytest.raises(TinyKDError, match=rf"No space left to write {path}") as e:
        atomic_write_text(path, '{"done": 2}')
    monkeypatch.undo()
    assert "free space on that disk" in e.value.fix
    assert path.read_text() == '{"done": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_atomic_writes_fsync_the_file_and_its_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    assert len(synced) == 2
    assert Path(synced[0]).name.startswith(".config.yaml-")  # the file, before its rename
    assert synced[1] == str(tmp_path)  # then the directory holding the rename
    assert (tmp_path / "config.yaml").read_text() == "a: 1\n"


def test_rotating_checkpoints_never_leaves_the_run_without_last_pt(tmp_path, parts, monkeypatch):
    """Every rename while a new checkpoint is put in place happens while a last.pt exists: a crash between
    any two of them leaves one to resume from."""
    import tinykd.run as run_mod

    last, _ = two_checkpoints(tmp_path, parts)
    moves = []
    real = os.replace

    def watched(src, dst):
        moves.append((Path(src).name, Path(dst).name, last.is_file()))
        return real(src, dst)

    monkeypatch.setattr(run_mod.os, "replace", watched)
    loop, module = make_loop(tmp_path, parts, total=8, save_every=2, resume_from=load_checkpoint(tmp_path))
    train(loop, module)
    assert moves and all(existed for _, _, existed in moves)
    assert [read_checkpoint(p)["step"] for p in checkpoint_paths(tmp_path, 2)] == [8, 6]


def test_keep_checkpoints_sets_how_many_are_kept(tmp_path, parts):
    import tinykd.loop

    loop, module = make_loop(tmp_path, parts, total=8, save_every=2)
    loop.keep_checkpoints = 3
    train(loop, module)
    kept = checkpoint_paths(tmp_path, 3)
    assert [read_checkpoint(p)["step"] for p in kept] == [8, 6, 4]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.1.pt", "last.2.pt", "last.pt"]
    assert tinykd.loop.CHECKPOINT == CHECKPOINT


# ----------------------------------------------------------------------------- two processes, one run directory


def test_a_second_process_on_the_same_run_directory_is_refused_with_the_first_ones_pid(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tinykd.run import lock_path, lock_run_dir

    run_dir = tmp_path / "runs" / "task" / "sst2-tiny-tiny"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from tinykd.run import lock_run_dir; lock_run_dir(Path(sys.argv[1])); "
                               "print('locked', flush=True); time.sleep(600)", str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TinyKDError, match=rf"Another tinykd process \(PID {holder.pid}\) is running in") as e:
            lock_run_dir(run_dir)
        assert f"kill {holder.pid}" in e.value.fix and "name=<a name>" in e.value.fix
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without cleaning up: the kernel drops its lock
        holder.wait()
    deadline = time.time() + 10
    while True:
        try:
            lock_run_dir(run_dir)
            break
        except TinyKDError:
            assert time.time() < deadline, "a dead process still holds the lock"
            time.sleep(0.1)
    assert lock_path(run_dir).read_text().strip() == str(os.getpid())
    lock_run_dir(run_dir)  # this process already holds it: another stage of the same process may start


@pytest.mark.slow  # two stage processes (~20 s)
def test_two_stage_commands_on_one_run_directory(runs_dir):
    """Two `stage=general` commands started on the same run directory: the second is refused at once (status 2,
    the first one's PID named); the first runs on."""
    import subprocess
    import sys
    import time

    from conftest import REPO

    from tinykd.run import lock_path

    command = [sys.executable, "-m", "tinykd", "stage=general", "debug=smoke", "progress=false",
               "train.general.max_steps=100000"]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=os.environ.copy())
    lock = lock_path(runs_dir / "smoke" / "general" / "tiny-tiny")
    try:
        deadline = time.time() + 120
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.time() < deadline, "the first run never took its run directory"
            time.sleep(0.2)
        t0 = time.time()
        second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                                env=os.environ.copy())
        assert second.returncode == 2
        assert f"Another tinykd process (PID {first.pid}) is running in" in second.stderr
        assert "Traceback" not in second.stderr and time.time() - t0 < 60
        assert first.poll() is None  # the first one was not disturbed
    finally:
        first.kill()
        first.wait()


# ----------------------------------------------------------------------------- preemption: SIGTERM, Ctrl-C


def wait_for_steps(metrics: Path, steps: int, proc, timeout: float = 180) -> None:
    import time

    deadline = time.time() + timeout
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= steps):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run never logged its first steps"
        time.sleep(0.2)


@pytest.mark.slow  # a stage process, signalled, then resumed (~40 s)
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_at_the_next_step_and_says_how_to_resume(runs_dir, signum):
    import signal
    import subprocess
    import sys

    from conftest import REPO

    run_dir = runs_dir / "smoke" / "general" / "tiny-tiny"
    command = [sys.executable, "-m", "tinykd", "stage=general", "debug=smoke", "progress=false",
               "train.general.max_steps=100000", "train.general.save_every=100000", "train.general.log_every=1"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    wait_for_steps(run_dir / "metrics.jsonl", 3, proc)
    proc.send_signal(getattr(signal, signum))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + getattr(signal, signum), err
    logged = len((run_dir / "metrics.jsonl").read_text().splitlines())
    ckpt = load_checkpoint(run_dir)
    assert ckpt["step"] == logged >= 3  # written at the step it stopped at, off the save cadence
    assert f"interrupted by {signum} in phase general after step {ckpt['step']}/100000 (checkpoint written)" in out
    assert f"stopped by {signum}; to continue: python -m tinykd" in err and err.rstrip().endswith("resume=true")
    assert "Traceback" not in err
    # the command it printed continues the run (with a shorter budget, which a resume may change)
    done = subprocess.run([*command[:-3], f"train.general.max_steps={ckpt['step'] + 2}", "resume=true"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert f"resumed phase general at step {ckpt['step']}" in done.stdout


@pytest.mark.slow
def test_a_second_signal_stops_at_once(runs_dir):
    import signal
    import subprocess
    import sys

    from conftest import REPO

    run_dir = runs_dir / "smoke" / "general" / "tiny-tiny"
    # large batches: a step lasts long enough for the second signal to arrive inside it
    proc = subprocess.Popen([sys.executable, "-m", "tinykd", "stage=general", "debug=smoke", "progress=false",
                             "train.general.max_steps=100000", "train.general.log_every=1",
                             "train.general.batch_size=512"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    wait_for_steps(run_dir / "metrics.jsonl", 2, proc)
    proc.send_signal(signal.SIGINT)
    seen = []
    for line in proc.stderr:  # the first is being handled: the stop is asked for
        seen.append(line)
        if "send it again to stop at once" in line:
            proc.send_signal(signal.SIGINT)
            break
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT, seen  # ended by the signal itself, not at a step boundary
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------- several ranks: a signal, a rank that dies


def launch_ranks(runs_dir: Path, *overrides: str, world: int = 2) -> list:
    """`world` ranks of one DeepSpeed job (gloo), started as a launcher would (RANK, WORLD_SIZE, ...): rank 0's
    output piped, the others' dropped."""
    import subprocess
    import sys

    from conftest import REPO

    from tinykd import distributed

    env = {k: v for k, v in os.environ.items() if k not in distributed.RENDEZVOUS}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(distributed.free_port()), WORLD_SIZE=str(world))
    command = [sys.executable, "-m", "tinykd", "stage=general", "debug=smoke", "progress=false", "engine=deepspeed",
               "train.general.max_steps=100000", "train.general.log_every=1", *overrides]
    return [subprocess.Popen(command, cwd=REPO, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, text=True,
                             stdout=subprocess.PIPE if r == 0 else subprocess.DEVNULL,
                             stderr=subprocess.PIPE if r == 0 else subprocess.DEVNULL) for r in range(world)]


@pytest.mark.slow  # two DeepSpeed ranks (~1 min)
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(runs_dir):
    import signal

    run_dir = runs_dir / "smoke" / "general" / "tiny-tiny"
    ranks = launch_ranks(runs_dir, "train.general.save_every=100000")
    try:
        wait_for_steps(run_dir / "metrics.jsonl", 3, ranks[0])
        ranks[1].send_signal(signal.SIGTERM)  # rank 0 is not signalled: it stops because rank 1 was
        out, err = ranks[0].communicate(timeout=120)
        assert ranks[1].wait(timeout=60) == ranks[0].returncode == 128 + signal.SIGTERM, err
    finally:
        for p in ranks:
            p.kill()
    ckpt = load_checkpoint(run_dir)
    assert ckpt["step"] == len((run_dir / "metrics.jsonl").read_text().splitlines()) >= 3
    assert f"interrupted by SIGTERM in phase general after step {ckpt['step']}/100000 (checkpoint written)" in out
    assert "Traceback" not in err


@pytest.mark.slow  # two DeepSpeed ranks, one killed (~1 min)
def test_a_rank_that_dies_stops_the_others_with_a_clear_error(runs_dir):
    import signal
    import time

    run_dir = runs_dir / "smoke" / "general" / "tiny-tiny"
    ranks = launch_ranks(runs_dir, "train.general.save_every=2")
    try:
        wait_for_steps(run_dir / "metrics.jsonl", 5, ranks[0])
        ranks[1].send_signal(signal.SIGKILL)
        t0 = time.time()
        out, err = ranks[0].communicate(timeout=120)  # not a hang: gloo sees the closed connection
        elapsed = time.time() - t0
    finally:
        for p in ranks:
            p.kill()
    assert ranks[0].returncode == 1, err[-3000:]
    assert "error: rank 0 of 2 lost the other ranks of this job in stage=general" in err
    assert "Connection closed by peer" in err or "Connection reset by peer" in err
    assert "relaunch all 2 ranks" in err and err.rstrip().endswith("resume=true")
    assert "Traceback" not in err and elapsed < 60
    assert load_checkpoint(run_dir)["step"] >= 4  # what was finished is intact


# ----------------------------------------------------------------------------- model files that carry code


def test_a_model_that_ships_code_is_not_run(tmp_path):
    """A model directory whose config.json names Python code it ships (auto_map): loading it runs none of
    it. With an architecture transformers has, that architecture loads; with one only the shipped code
    defines, it is refused with the option that would allow it."""
    import json

    from test_errors import save_tiny_classifier
    from transformers import BertForSequenceClassification

    from tinykd import models

    model = save_tiny_classifier(tmp_path / "model", ["good", "bad"], num_labels=2)
    marker = tmp_path / "ran"
    (model / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                            "from transformers import BertForSequenceClassification as EvilModel\n"
                                            "from transformers import BertConfig as EvilConfig\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel",
                          "AutoConfig": "modeling_evil.EvilConfig"}
    (model / "config.json").write_text(json.dumps(config))
    loaded = models.load_classifier(str(model), 2, None, "teacher")
    assert type(loaded) is BertForSequenceClassification
    (model / "config.json").write_text(json.dumps({**config, "model_type": "evil"}))
    with pytest.raises(TinyKDError, match="loads only by running Python code it ships") as e:
        models.load_classifier(str(model), 2, None, "teacher")
    assert "trust_remote_code=true" in e.value.fix
    assert not marker.exists(), "loading the model ran the code it ships"


def test_a_full_disk_while_exporting_keeps_the_previous_export(tmp_path, monkeypatch):
    from test_errors import save_tiny_classifier
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tinykd import models

    source = save_tiny_classifier(tmp_path / "model", ["good", "bad"], num_labels=2)
    model, tok = AutoModelForSequenceClassification.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    out = models.export(model, tok, tmp_path / "run" / "student")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = type(model).save_pretrained

    def half_then_full(self, directory, *args, **kwargs):
        real(self, directory, *args, **kwargs)
        weights = Path(directory) / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(type(model), "save_pretrained", half_then_full)
    with pytest.raises(TinyKDError, match=rf"No space left to write {out} .*the previous export, {out}, is intact"):
        models.export(model, tok, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["student"]  # no temp directory left


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_writing_an_augmentation_shard_or_a_cache_entry(tmp_path, monkeypatch):
    """The datasets directories (augmentation shards, the tokenised and teacher-output caches) are written
    whole or not at all: a full disk is one clear error, what was there stays, no temp directory is left."""
    import datasets
    import pyarrow as pa

    from tinykd.stages.augment import write_dataset
    from tinykd.data.cache import cached_dataset

    feats = datasets.Features({"text": datasets.Value("string")})
    shard = tmp_path / "augment" / "shard-00000"
    write_dataset({"text": ["a", "b"]}, feats, shard)
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", full_disk)
    with pytest.raises(TinyKDError, match=r"No space left to write .*shard-00001.*the shards written before it"):
        write_dataset({"text": ["c"]}, feats, tmp_path / "augment" / "shard-00001")
    with pytest.raises(TinyKDError, match=r"No space left to write .*teacher_outputs"):
        cached_dataset(tmp_path / "cache", "teacher_outputs", lambda: datasets.Dataset(pa.table({"x": [1]})))
    monkeypatch.undo()
    assert datasets.load_from_disk(str(shard))["text"] == ["a", "b"]
    assert sorted(p.name for p in (tmp_path / "augment").iterdir()) == ["shard-00000"]
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_full_disk_while_writing_a_sweep_summary_leaves_the_old_one(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from tinykd import sweep

    for i, lr in enumerate((1e-4, 3e-4)):
        sweep.write_trial(tmp_path / f"lr={lr}", {"num": i, "overrides": [f"train.task_prediction.lr={lr}"],
                                                   "status": "finished", "metric_name": "accuracy",
                                                   "metric": 0.8 + i / 100, "seconds": 1.0, "error": None})
    sweep.summarize(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("summary.*")}
    assert set(before) == {"summary.csv", "summary.md", "summary.png"}
    monkeypatch.setattr(Figure, "savefig", full_disk)
    with pytest.raises(TinyKDError, match=r"No space left to write .*summary.png"):
        sweep.summarize(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "summary.png").read_bytes() == before["summary.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- make gpu-check without a GPU


def test_gpu_check_on_a_cpu_machine_says_so_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: make gpu-check measures it")
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, "-m", "tinykd.bench.gpu", "--out", str(out)], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0
    assert "no CUDA device on this machine" in r.stdout and "nothing was checked or measured" in r.stdout
    assert not out.exists()


def test_bf16_peaks_are_looked_up_by_device_name():
    from tinykd.bench.gpu import bf16_peak

    assert bf16_peak("NVIDIA H200") == 989.0
    assert bf16_peak("NVIDIA H100 PCIe") == 756.0 and bf16_peak("NVIDIA H100 80GB HBM3") == 989.0
    assert bf16_peak("NVIDIA A100-SXM4-80GB") == 312.0 and bf16_peak("NVIDIA L40S") == 362.0
    assert bf16_peak("NVIDIA L4") == 121.0 and bf16_peak("NVIDIA A10G") == 125.0
    assert bf16_peak("Tesla T4") is None  # no bf16 tensor cores: no fraction is made up
