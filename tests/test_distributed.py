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

from xdyna_core.cli import main
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
    assert World(rank=1, size=2, local_rank=1).device("cuda") == "cuda:1"  # each rank its own GPU
    assert World(rank=1, size=2, local_rank=1).device("cpu") == "cpu"
    assert type(rebuild_error(1, "InputError", "bad photo")) is InputError
    assert "rank 1 failed: RuntimeError: boom" in str(rebuild_error(1, "RuntimeError", "boom"))


# ------------------------------------------------------------------------------ the command line

CLI_SETTINGS = ["--preset", "tiny-offline", "--size", "64x128", "--steps", "2", "--seed", "4"]


def _env(cache):
    # torch's CPU results depend on the thread count: one thread per process in both runs
    return dict(os.environ, OMP_NUM_THREADS="1", XDYNA_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1")


def _xdyna(args, cache, processes=1, timeout=240):
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                          str(processes)]
    cmd = [sys.executable, *launcher, "-m", "xdyna_core.cli", "animate", *map(str, args)]
    return subprocess.run(cmd, env=_env(cache), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A real photograph (scikit-image's astronaut), a 40-frame clip made by moving it, and a
    'photo' that is not an image."""
    import cv2
    import skimage.data
    from PIL import Image

    from xdyna_core.io import write_video

    folder = tmp_path_factory.mktemp("media")
    img = cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    Image.fromarray(img).save(folder / "astronaut.png")
    frames = []
    for t in range(40):
        m = cv2.getRotationMatrix2D((128, 128), 6 * np.sin(t / 4), 1 + 0.05 * np.sin(t / 6))
        m[0, 2] += 6 * np.sin(t / 3)
        frames.append(cv2.warpAffine(img, m, (256, 256), borderMode=cv2.BORDER_REFLECT))
    write_video(folder / "dance.mp4", np.stack(frames), 15)
    (folder / "notes.png").write_text("not a picture")
    return folder


@pytest.mark.slow
def test_torchrun_two_processes_write_the_file_of_one(media, tmp_path, monkeypatch):
    args = ["--image", media / "astronaut.png", "--video", media / "dance.mp4", "--max-frames", "40", *CLI_SETTINGS]
    monkeypatch.setenv("XDYNA_CACHE_DIR", str(tmp_path / "cache1"))
    assert main(["animate", *map(str, args), "-o", str(tmp_path / "one.mp4"), "-q"]) == 0  # one process, one thread
    two = _xdyna([*args, "-o", tmp_path / "two.mp4"], tmp_path / "cache2", processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "two.mp4").read_bytes() == (tmp_path / "one.mp4").read_bytes()
    # 40 frames, window 16 / overlap 4: 3 windows, rank 0 takes two
    assert "rank 0/2: denoising windows 1-2 of 3" in two.stderr and "rank 1/2: denoising window 3 of 3" in two.stderr
    assert "rank 0/2: extracted the motion and shared it" in two.stderr
    assert two.stdout.count("wrote ") == 1  # rank 0 writes and reports, alone
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".mp4") == ["one.mp4", "two.mp4"]


@pytest.mark.slow
def test_torchrun_input_error_ends_every_rank_with_the_message(media, tmp_path):
    done = _xdyna(["--image", media / "notes.png", "--video", media / "dance.mp4", *CLI_SETTINGS,
                   "-o", tmp_path / "out.mp4", "-q"], tmp_path / "cache", processes=2, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 2 and lines[0] == lines[1] and "notes.png" in lines[0], done.stderr[-3000:]
    assert not (tmp_path / "out.mp4").exists()


def _jobs(media, folder):
    """Three jobs, the third with a photo that is not an image; paths relative to the CSV."""
    folder.mkdir()
    rows = [["image", "video", "output", "seed", "max_frames"],
            ["../media_link/astronaut.png", "../media_link/dance.mp4", "out/a.mp4", "1", "8"],
            ["../media_link/astronaut.png", "../media_link/dance.mp4", "out/b.mp4", "2", ""],
            ["../media_link/notes.png", "../media_link/dance.mp4", "out/bad.mp4", "3", "8"]]
    link = folder.parent / "media_link"
    if not link.exists():
        link.symlink_to(media)
    with open(folder / "jobs.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return folder / "jobs.csv"


@pytest.mark.slow
def test_batch_in_one_and_two_processes_gives_the_same_files_and_resumes(media, tmp_path, monkeypatch, capsys):
    settings = ["--preset", "tiny-offline", "--size", "64x128", "--steps", "2", "--max-frames", "12", "-q"]
    one = _jobs(media, tmp_path / "one")
    monkeypatch.setenv("XDYNA_CACHE_DIR", str(tmp_path / "cache1"))
    assert main(["animate", "--batch", str(one), *settings]) == 1  # one process; one job failed, the others ran
    out = capsys.readouterr().out
    assert "batch: 3 jobs: 2 ok, 0 skipped, 1 failed" in out
    bad = [line for line in out.splitlines() if "bad.mp4" in line][0]
    assert "failed" in bad and "notes.png" in bad
    files = {name: (tmp_path / "one" / "out" / name).read_bytes() for name in ("a.mp4", "b.mp4")}
    assert files["a.mp4"] != files["b.mp4"]
    assert sorted(p.name for p in (tmp_path / "one" / "out").iterdir()) == ["a.mp4", "b.mp4"]  # nothing else left

    two = _jobs(media, tmp_path / "two")
    (tmp_path / "two" / "out").mkdir()
    (tmp_path / "two" / "out" / "a.mp4").write_bytes(b"from a killed run")
    done = _xdyna(["--batch", two, "--overwrite", *settings[:-1]], tmp_path / "cache2", processes=2)
    assert done.returncode != 0, done.stderr[-3000:]
    assert done.stdout.count("batch: 3 jobs: 2 ok, 0 skipped, 1 failed") == 1  # rank 0 reports for all
    assert "rank 0/2: jobs 1, 3 of 3" in done.stderr and "rank 1/2: jobs 2 of 3" in done.stderr
    for name, data in files.items():
        assert (tmp_path / "two" / "out" / name).read_bytes() == data, name

    monkeypatch.setenv("XDYNA_CACHE_DIR", str(tmp_path / "cache2"))
    assert main(["animate", "--batch", str(two), *settings]) == 1  # a rerun skips what is done
    assert "batch: 3 jobs: 0 ok, 2 skipped, 1 failed" in capsys.readouterr().out


def test_batch_refuses_single_job_flags_and_a_wrong_header(media, tmp_path, capsys):
    jobs = _jobs(media, tmp_path / "jobs")
    assert main(["animate", "--batch", str(jobs), "--image", str(media / "astronaut.png")]) == 2
    assert "leave out --image" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("photo,video,output\na.png,b.mp4,c.mp4\n")
    assert main(["animate", "--batch", str(tmp_path / "bad.csv")]) == 2
    assert "unknown column(s) photo" in capsys.readouterr().err
    assert main(["animate", "--video", str(media / "dance.mp4")]) == 2
    assert "give --image and -o/--output" in capsys.readouterr().err
    (tmp_path / "rows.csv").write_text(f"image,video,output,seed\n{media}/astronaut.png,{media}/dance.mp4,a.mp4,x\n"
                                       f"{media}/astronaut.png,{media}/dance.mp4,a.mp4,1\n")
    assert main(["animate", "--batch", str(tmp_path / "rows.csv"), "-q"]) == 1  # wrong rows fail, one by one
    out = capsys.readouterr().out
    assert "row 1: seed must be a whole number, got 'x'" in out and "row 2: same output as row 1" in out
