"""Data-parallel training: N spawned processes joined by torch.distributed.

One process per GPU with NCCL on CUDA, gloo on the CPU. The training loop itself is the
same in one process and in N (`radflow.segmentation.train`); this module only starts the
processes, joins them in a process group and brings a failure back to the caller.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import traceback
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import (
    ProcessExitedException,
    ProcessRaisedException,
    start_processes,
)

T = TypeVar("T")

# Rank 0 validates while the others wait in the next collective; a large validation set on
# a CPU can take minutes, so the default of 30 min (gloo) / 10 min (NCCL) is too tight.
TIMEOUT = timedelta(minutes=60)


class DistributedTrainingError(RuntimeError):
    """A process of a data-parallel training failed; the others were stopped."""


def check_processes(processes: int, batch_size: int, device: str) -> None:
    """Raise ValueError when `processes` cannot share a global batch of `batch_size` on
    `device` ("cpu" or "cuda")."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if batch_size % processes:
        raise ValueError(
            f"batch_size {batch_size} must be divisible by processes {processes}: "
            "each process trains on an equal share of the global batch"
        )
    if device == "cuda" and processes > torch.cuda.device_count():
        raise ValueError(
            f"processes {processes} > {torch.cuda.device_count()} visible GPUs "
            "(one process per GPU)"
        )


def rank_device(device: str, rank: int) -> torch.device:
    return torch.device(f"cuda:{rank}") if device == "cuda" else torch.device("cpu")


def launch(fn: Callable[[int, int, T], None], processes: int, arg: T, device: str) -> None:
    """Run `fn(rank, processes, arg)` in `processes` spawned processes that share a process
    group (MASTER_ADDR 127.0.0.1 on a free port). `fn` and `arg` must be picklable by
    reference to an importable module, and `fn` must close what it writes: a process whose
    `fn` returned ends without the interpreter's finalisation. A failure in any process stops
    the others and raises DistributedTrainingError here, naming the process that failed
    first; its cause carries the traceback torch reported (the first process to end)."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="radflow-ddp-") as scratch:
        first_failure = os.path.join(scratch, "first-failure")
        with _bare_main():
            context = start_processes(
                _entry,
                args=(processes, port, device, fn, arg, first_failure),
                nprocs=processes,
                join=False,
                start_method="spawn",
            )
        assert context is not None
        try:
            while not context.join():
                pass
        except (ProcessRaisedException, ProcessExitedException) as e:
            raise DistributedTrainingError(
                _failure_message(e, processes, _read_first_failure(first_failure))
            ) from e


def _failure_message(
    e: ProcessRaisedException | ProcessExitedException,
    processes: int,
    first: tuple[int, str] | None,
) -> str:
    """The recorded first failure when there is one: torch names the process it found ended
    first, which may be a peer that failed on the closed connection, or one that died of a
    signal (gloo may abort a process whose peer went away, rather than raise in it)."""
    if first is not None:
        index, last = first
    elif isinstance(e, ProcessRaisedException):
        index, last = e.error_index, str(e).strip().splitlines()[-1]
    else:
        how = f"signal {e.signal_name}" if e.signal_name else f"exit code {e.exit_code}"
        return f"data-parallel training process {e.error_index} of {processes} died ({how})"
    return f"data-parallel training failed in process {index} of {processes}: {last}"


def all_mean(value: float, device: torch.device) -> float:
    """The mean of `value` over all processes (every process gets it)."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's `flag`, in every process."""
    t = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def _entry(
    rank: int,
    world: int,
    port: int,
    device: str,
    fn: Callable[[int, int, T], None],
    arg: T,
    first_failure: str,
) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    if device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        "nccl" if device == "cuda" else "gloo", rank=rank, world_size=world, timeout=TIMEOUT
    )
    try:
        fn(rank, world, arg)
    except Exception as err:  # what torch reports as raised (an interrupt is the parent's)
        _record_first_failure(first_failure, rank, err)
        raise
    finally:
        dist.destroy_process_group()
    _end_without_finalising()


def _end_without_finalising() -> None:
    """End a process whose work is done without the interpreter's finalisation.

    DistributedDataParallel leaves the gloo process group's C++ threads running after
    destroy_process_group (torch 2.13: `gloo_tcp_loop`, `pt_gloo_runloop`); tearing them down
    at interpreter exit now and then aborts the process ("terminate called without an active
    exception", SIGABRT): one run in 12 to 60 on two loaded cores, and once in CI. Once `fn`
    has returned and the group is closed, a process has nothing left to finalise."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)


def _record_first_failure(path: str, rank: int, err: BaseException) -> None:
    """The first process to fail says so before its process group closes.

    The others then fail in their next collective ("Connection closed by peer"), and torch
    reports whichever process it finds ended first: with two processes on two cores, now and
    then the peer's error, not the cause."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # another process failed first (or the folder is gone): theirs stands
        return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{rank}\n{traceback.format_exception_only(err)[-1].strip()}")


def _read_first_failure(path: str) -> tuple[int, str] | None:
    try:
        with open(path, encoding="utf-8") as f:
            rank, last = f.read().split("\n", 1)
        return int(rank), last
    except (OSError, ValueError):  # no process recorded one (a signal, or the write failed)
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def _bare_main() -> Iterator[None]:
    """Hide the caller's `__main__` while the processes start.

    A spawned process first re-imports the parent's main module (multiprocessing's
    preparation step): under `radflow` or a Prefect worker that is the whole CLI with Prefect,
    seconds of imports per process before any training. With an empty `__main__` a process
    imports only what unpickling `fn` and `arg` needs (torch, MONAI, this package)."""
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = saved
