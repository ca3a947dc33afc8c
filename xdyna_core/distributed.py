"""Several processes on one job or on many jobs (torch.distributed, started by `torchrun` or
`accelerate launch`): the process group, each rank's share of the work, and the few collectives
the engine needs.

    torchrun --standalone --nproc_per_node 2 -m xdyna_core.cli animate --image P --video V -o out.mp4

One long clip: at every denoising step each rank predicts the noise of its contiguous share of
the windows, all ranks gather every window's prediction and blend them in the one-process order,
so the frames equal those of one process (bit for bit on the CPU in float32). The extraction runs
on rank 0 and is broadcast; only rank 0 writes files. Many jobs (`xdyna animate --batch`): job i
runs on rank i % world size.

A failure on one rank must not leave the others waiting in a collective: the engine runs each
stretch of per-rank work inside `World.together()`, which shares every rank's error (or None)
and raises the same error on all of them. The process group has a timeout (`XDYNA_DIST_TIMEOUT`
seconds, default 1800; `--batch`: 30 days, its ranks meet only at the end) for what remains (a
rank killed outright; `torchrun` then stops the rest).
"""

from __future__ import annotations

import atexit
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from xdyna_core.errors import Cancelled, InputError, MissingWeightsError, ModelUnavailable, XDynaError

DEFAULT_TIMEOUT_S = 1800  # rank 0 may extract a long clip while the others wait
# Errors rebuilt with their own class on the ranks that did not raise them (same message everywhere).
_SHARED_ERRORS = {cls.__name__: cls for cls in (InputError, MissingWeightsError, ModelUnavailable, Cancelled)}


class RankFailed(XDynaError):
    """Another rank failed with an error that is not one of ours (its type and message are named)."""


def env_world_size() -> int:
    """WORLD_SIZE as set by torchrun / accelerate launch (1 when unset)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def share(count: int, rank: int, size: int) -> range:
    """The contiguous share of `count` items (windows, chunks, ...) that `rank` of `size` works on:
    sizes differ by at most one, the first ranks take the extra ones (as numpy.array_split)."""
    base, extra = divmod(count, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def describe_share(items: range, count: int, noun: str) -> str:
    """A share in words, 1-based as people count: 'windows 3-4 of 4', 'frame 5 of 8',
    'no windows (of 1)' (`noun` plural)."""
    if len(items) == 0:
        return f"no {noun} (of {count})"
    first, last = items.start + 1, items.stop
    return f"{noun} {first}-{last} of {count}" if last > first else f"{noun[:-1]} {first} of {count}"


@dataclass(frozen=True)
class World:
    """This process's place among `size` processes (rank 0 is the main one). Built by
    `init_from_env` or `current_world`; every collective here goes through the default group."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    quiet: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, count: int) -> range:
        """This rank's contiguous share of `count` items (`share`)."""
        return share(count, self.rank, self.size)

    def shares(self, count: int) -> List[range]:
        """Every rank's share of `count` items, in rank order."""
        return [share(count, r, self.size) for r in range(self.size)]

    def log(self, message: str) -> None:
        """One line on stderr prefixed 'rank r/N:' (unless quiet)."""
        if not self.quiet:
            print(f"rank {self.rank}/{self.size}: {message}", file=sys.stderr, flush=True)

    def device(self, requested: str = "auto") -> str:
        """The device this rank runs on: with CUDA, "auto"/"cuda" mean this rank's own GPU
        (cuda:LOCAL_RANK); an explicit "cuda:N" or "cpu" is kept."""
        want = (requested or "auto").strip().lower()
        if want == "auto":
            want = os.environ.get("XDYNA_DEVICE", "").strip().lower() or "auto"
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        return f"cuda:{self.local_rank}" if want == "cuda" else want

    # -- collectives (every rank must call them, in the same order) ---------------------------

    def check(self, error: Optional[BaseException]) -> None:
        """Share every rank's error (or None); if any rank had one, raise on every rank: the own
        error where there is one, else the first failing rank's (same class and message for the
        engine's errors, `RankFailed` naming it otherwise)."""
        mine = None if error is None else (self.rank, type(error).__name__, str(error))
        everyone: List[Any] = [None] * self.size
        dist.all_gather_object(everyone, mine)
        if error is not None:
            raise error
        failed = [e for e in everyone if e is not None]
        if failed:
            raise rebuild_error(*failed[0])

    @contextmanager
    def together(self):
        """Run a stretch of per-rank work; afterwards all ranks learn whether any of them failed
        and, if so, all raise (`check`). So a bad input or an out-of-memory error on one rank
        ends every rank with the message instead of leaving the others waiting."""
        error = None
        try:
            yield
        except Exception as err:  # noqa: BLE001 - shared, then raised again on this rank
            error = err
        self.check(error)

    def from_main(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on rank 0 only and return its result on every rank (pickled and broadcast);
        an error there is raised on every rank."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as err:  # noqa: BLE001 - shared, then raised again on rank 0
                error = err
        payload = [(result, None if error is None else (0, type(error).__name__, str(error)))]
        dist.broadcast_object_list(payload, src=0)
        if error is not None:
            raise error
        result, described = payload[0]
        if described is not None:
            raise rebuild_error(*described)
        return result

    def all_gather_object(self, obj: Any) -> List[Any]:
        out: List[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def gather_rows(self, local: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """Concatenate along dim 0 the rows every rank holds (rank r holds counts[r] rows of the
        same shape and dtype as `local`'s), in rank order, on every rank. Ranks with fewer rows
        pad; the padding is dropped."""
        pad = max(counts)
        buf = local.new_zeros((pad, *local.shape[1:]))
        buf[: local.shape[0]] = local
        out = [torch.empty_like(buf) for _ in range(self.size)]
        dist.all_gather(out, buf.contiguous())
        return torch.cat([o[:c] for o, c in zip(out, counts)])

    def barrier(self) -> None:
        dist.barrier()


def rebuild_error(rank: int, kind: str, message: str) -> XDynaError:
    """Another rank's error, raised here: our own error classes keep their class and message."""
    cls = _SHARED_ERRORS.get(kind)
    if cls is not None:
        return cls(message)
    return RankFailed(f"rank {rank} failed: {kind}: {message}")


def current_world(quiet: bool = False) -> Optional[World]:
    """The `World` of an initialised process group of two or more processes, else None (one
    process: nothing to share)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank() % max(1, torch.cuda.device_count() or 1)))
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local, quiet=quiet)


def backend() -> str:
    """gloo on CPU-only machines; on GPUs NCCL for CUDA tensors and gloo for CPU ones (objects,
    a run forced onto the CPU)."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def timeout() -> timedelta:
    seconds = os.environ.get("XDYNA_DIST_TIMEOUT", "")
    try:
        return timedelta(seconds=float(seconds)) if seconds.strip() else timedelta(seconds=DEFAULT_TIMEOUT_S)
    except ValueError:
        raise InputError(f"XDYNA_DIST_TIMEOUT must be a number of seconds, got {seconds!r}") from None


def init_from_env(quiet: bool = False, wait: Optional[timedelta] = None) -> Tuple[Optional[World], bool]:
    """Join the process group that torchrun / accelerate launch describe in the environment
    (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) when WORLD_SIZE > 1; `wait`: how long
    a collective may wait for the other ranks (default `timeout()`). Returns (world or None,
    whether this call created the group, so the caller destroys it)."""
    if dist.is_available() and dist.is_initialized():
        return current_world(quiet), False
    if env_world_size() < 2:
        return None, False
    if not dist.is_available():
        raise ModelUnavailable("this PyTorch build has no torch.distributed; run one process")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise ModelUnavailable(f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} GPU(s): "
                                   f"start at most that many processes per node (--nproc_per_node)")
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend(), init_method="env://", timeout=wait or timeout())
    return current_world(quiet), True


def auto_world() -> Optional[World]:
    """For `animate(world="auto")`: the initialised group's world; under torchrun / accelerate
    launch without one (WORLD_SIZE > 1), join the group (left at exit); else None."""
    world, created = init_from_env()
    if created:
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return world


@contextmanager
def session(quiet: bool = False, wait: Optional[timedelta] = None):
    """`with session() as world:` the world of a torchrun / accelerate launch start (None for one
    process); the group is destroyed on leaving if this session created it. `wait` as in
    `init_from_env`."""
    world, created = init_from_env(quiet, wait)
    try:
        yield world
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()
