"""Several processes (torch.distributed, gloo on the CPU) give the frames of one process, bit for
bit in float32: one long clip with its windows shared out (`XDynaPipeline(world=...)`, and
`torchrun ... xdyna animate`), and many jobs shared out by `xdyna animate --batch`."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from xdyna_core.distributed import World, describe_share, rebuild_error, share
from xdyna_core.errors import InputError
from xdyna_core.pipeline import XDynaPipeline
from xdyna_core.testing import make_tiny_components

ROOT = Path(__file__).resolve().parents[1]
H = W = 64

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# Settings the spawned ranks and the one process run (window 16 / overlap 4: 40 frames = 3 windows).
CASES = {
    "blend": dict(),
    "batched groups": dict(window_batch_size=2),  # groups [0, 1], [2]: rank 0 runs two windows at once
    "official windows": dict(window_schedule="official"),
    "deep cache, dpm++": dict(deep_cache_interval=2, sampler="dpmpp", guidance_truncation=0.5),
    # 7 windows, up to 4 per frame: a sum of 3 or more terms depends on the order of blending
    "dense overlap": dict(window_overlap=12, window_weighting="pyramid"),
}


def _inputs(num_frames=40):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (H + 16, W + 6, 3), dtype=np.uint8)
    pose = np.zeros((num_frames, H, W, 3), np.uint8)
    for t in range(num_frames):
        x = 8 + (t * 2) % (W - 16)
        pose[t, 10: H - 10, x: x + 3] = 200
        pose[t, H // 2: H // 2 + 3, 8: W - 8] = 120
    faces = np.zeros((num_frames, H, W, 6), np.uint8)
    faces[:, 8:24, 20:44, 3:] = rng.integers(0, 256, (num_frames, 16, 24, 3))
    return photo, pose, faces


def _generate(pipe, world=None, num_frames=40, **kw):
    photo, pose, faces = _inputs(num_frames)
    return pipe(photo, pose, faces, height=H, width=W, num_inference_steps=3, guidance_scale=2.0,
                generator=torch.Generator().manual_seed(3), decode_chunk_size=6, world=world, **kw).frames


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, size, port, out_dir):
    """One spawned rank: every case, plus a clip of one window (rank 1 has nothing to denoise)."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        world = World(rank=rank, size=size)
        pipe = XDynaPipeline(**make_tiny_components(seed=0))
        pipe.set_progress_bar_config(disable=True)
        results = {name: _generate(pipe, world, **kw) for name, kw in CASES.items()}
        results["one window"] = _generate(pipe, world, num_frames=12)
        try:  # a bad input on one rank only: every rank raises it, none waits
            _generate(pipe, world, latents=torch.zeros(1) if rank == 1 else None)
        except InputError as err:
            results["error"] = np.array(str(err))
        np.savez(Path(out_dir) / f"rank{rank}.npz", **results)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    mp.start_processes(_rank, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="spawn")
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]


def test_windows_shared_by_two_processes_give_the_frames_of_one(spawned):
    pipe = XDynaPipeline(**make_tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    for name, kw in CASES.items():
        alone = _generate(pipe, **kw)
        for rank, results in enumerate(spawned):
            assert np.array_equal(results[name], alone), f"{name}: rank {rank} differs from one process"
    alone = _generate(pipe, num_frames=12)
    assert all(np.array_equal(r["one window"], alone) for r in spawned)
    assert np.abs(spawned[0]["blend"] - spawned[0]["official windows"]).max() > 0  # the cases differ


def test_an_error_on_one_rank_is_raised_on_every_rank(spawned):
    assert "latents (noise) must have shape" in str(spawned[0]["error"])
    assert str(spawned[0]["error"]) == str(spawned[1]["error"])


def test_shares_are_contiguous_balanced_and_cover_everything():
    for count in range(0, 12):
        for size in range(1, 5):
            parts = [share(count, r, size) for r in range(size)]
            assert [i for p in parts for i in p] == list(range(count))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert describe_share(share(4, 1, 2), 4, "windows") == "windows 3-4 of 4"
    assert describe_share(share(1, 1, 2), 1, "windows") == "no windows (of 1)"
    assert type(rebuild_error(1, "InputError", "bad photo")) is InputError
    assert "rank 1 failed: RuntimeError: boom" in str(rebuild_error(1, "RuntimeError", "boom"))
