"""One process or many: the process group, ranks, and who writes.

With `engine=deepspeed` a run is a DeepSpeed job. Under a launcher (`deepspeed`, `torchrun`, a
hostfile) the rendezvous variables come from it; a single process outside a launcher gets them
here (rank 0 of 1, a free local port), so `python -m tinykd ... engine=deepspeed` just works.
On CPU the process group uses gloo and DeepSpeed's CPU accelerator.

Every rank runs the same loop on its own slice of each global batch (`tinykd.data.batches.Batcher`);
only rank 0 writes: run directory, config, metrics, checkpoints' index file, exports, progress.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from datetime import timedelta

import torch
import torch.distributed as dist

RENDEZVOUS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if initialized() else int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if initialized() and world_size() > 1:
        dist.barrier()


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_launcher_args(argv: list[str]) -> list[str]:
    """Remove `--local_rank=N` / `--local-rank N` (added by the `deepspeed` launcher and old
    `torch.distributed.launch`) so Hydra sees only its overrides; N goes to $LOCAL_RANK."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        for flag in ("--local_rank", "--local-rank"):
            if a == flag and i + 1 < len(argv):
                os.environ["LOCAL_RANK"] = argv[i + 1]
                skip = True
                break
            if a.startswith(flag + "="):
                os.environ["LOCAL_RANK"] = a.split("=", 1)[1]
                break
        else:
            out.append(a)
    return out


def init(device_name: str = "auto", timeout_s: float = 600) -> torch.device:
    """Join (or create) the process group for a DeepSpeed job; returns this rank's device. A collective
    waits at most `timeout_s` for the other ranks (`engine.timeout_s`)."""
    cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported
    if not any(k in os.environ for k in ("RANK", "WORLD_SIZE")):  # a single process outside a launcher
        os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": os.environ.get("MASTER_PORT", str(free_port()))})
    os.environ.setdefault("LOCAL_RANK", os.environ.get("RANK", "0"))
    if not initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False,
                                   timeout=timedelta(seconds=timeout_s))
    if cuda:
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


# What the backends say when another rank of the job is gone: gloo's TCP transport (a peer's socket
# closed or reset, a wait that timed out) and NCCL's watchdog.
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out", "timed out",
             "NCCL communicator was aborted", "Watchdog caught collective operation timeout")


def peer_lost(error: BaseException) -> bool:
    """Whether `error`, raised in a job of several ranks, says that another rank died, was killed or stopped
    answering (and not that this rank's own work failed)."""
    if not (initialized() and world_size() > 1):
        return False
    return isinstance(error, getattr(dist, "DistError", ())) or (
        isinstance(error, RuntimeError) and any(s in str(error) for s in PEER_LOST))


def describe(error: BaseException) -> str:
    """A backend's error in one short line: its first sentence, without the source-file prefix gloo adds."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # "[.../gloo/transport/tcp/pair.cc:553] Connection closed ..."
    return text.split(". ")[0].rstrip(".")
