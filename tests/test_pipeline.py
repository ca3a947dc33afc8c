"""XDynaPipeline end to end on tiny random-weight components (CPU, seconds each)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from xdyna_core.errors import Cancelled, InputError
from xdyna_core.pipeline import (
    XDynaPipeline,
    control_range,
    gaussian_blur,
    normalize_control,
    official_scheduler,
    reference_mixed_latents,
)
from xdyna_core.testing import make_tiny_components

H = W = 64  # tiny frames -> 8x8 latents
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def clip(num_frames, seed=0, face=True, size=(H, W)):
    """A photo (not at the output size: the pipeline crops it) and control frames:
    skeleton-like sparse bright strokes on black, face patches mostly black."""
    rng = np.random.default_rng(seed)
    h, w = size
    photo = rng.integers(0, 256, (h + 16, w + 6, 3), dtype=np.uint8)
    pose = np.zeros((num_frames, h, w, 3), np.uint8)
    for t in range(num_frames):
        x = 8 + (t * 2) % (w - 16)
        pose[t, 10 : h - 10, x : x + 3] = rng.integers(100, 256, 3)
        pose[t, h // 2 : h // 2 + 3, 8 : w - 8] = rng.integers(100, 256, 3)
    faces = None
    if face:
        faces = np.zeros((num_frames, h, w, 6), np.uint8)
        faces[:, 8:24, 20:44, 3:] = rng.integers(0, 256, (num_frames, 16, 24, 3))
        faces[:, 12:16, 24:40, :3] = rng.integers(0, 256, (num_frames, 4, 16, 3))
    return photo, pose, faces


def gen(pipe, num_frames=20, seed=0, steps=2, **kw):
    photo, pose, faces = clip(num_frames)
    kw.setdefault("face_images", faces)
    return pipe(photo, pose, height=H, width=W, num_inference_steps=steps,
                generator=torch.Generator().manual_seed(seed), **kw).frames


# --------------------------------------------------------------------------- speed, seeds


def test_40_frame_clip_with_several_windows_under_a_minute(pipe):
    photo, pose, faces = clip(40)
    seen = []
    start = time.perf_counter()
    frames = pipe(photo, pose, faces, height=H, width=W, num_inference_steps=8,
                  generator=torch.Generator().manual_seed(0), progress=seen.append).frames
    elapsed = time.perf_counter() - start
    print(f"\n40-frame tiny clip, 8 steps, 3 windows/step: {elapsed:.1f} s")
    assert elapsed < 60
    assert frames.shape == (40, H, W, 3) and frames.dtype == np.float32
    assert np.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    denoise = [i for i in seen if i.stage == "denoise"]
    assert len(denoise) == 8 * 3 and {i.num_windows for i in denoise} == {3}
    assert [i.step for i in denoise[:4]] == [0, 0, 0, 1] and denoise[-1].fraction == 1.0
    assert frames.std(axis=0).mean() > 1e-3  # frames differ: the pose drives them


def test_same_seed_same_video_different_seed_differs(pipe):
    a = gen(pipe, seed=1)
    b = gen(pipe, seed=1)
    c = gen(pipe, seed=2)
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    # the official schedule's per-step offsets come from the generator too
    d = gen(pipe, seed=3, window_schedule="official")
    e = gen(pipe, seed=3, window_schedule="official")
    assert np.array_equal(d, e)


def test_blend_and_official_schedules_run_and_differ(pipe):
    infos = {}
    out = {}
    for schedule in ("blend", "official"):
        seen = []
        out[schedule] = gen(pipe, num_frames=20, window_schedule=schedule, progress=seen.append)
        infos[schedule] = {i.num_windows for i in seen if i.stage == "denoise"}
    assert infos == {"blend": {2}, "official": {2}}
    assert np.abs(out["blend"] - out["official"]).max() > 1e-4
    with pytest.raises(InputError, match="window_schedule"):
        gen(pipe, window_schedule="loop")


# --------------------------------------------------------------------------- official numerics


def _blur_reference(x: torch.Tensor) -> torch.Tensor:
    """Independent Gaussian blur (9x9, sigma 18, reflect padding) via scipy, float64."""
    from scipy.ndimage import correlate

    r = np.arange(9) - 4.0
    k = np.exp(-0.5 * (r / 18.0) ** 2)
    k /= k.sum()
    k2 = np.outer(k, k)
    arr = x.double().numpy()
    out = np.empty_like(arr)
    for i in np.ndindex(arr.shape[:2]):
        out[i] = correlate(arr[i], k2, mode="mirror")  # scipy "mirror" == torch "reflect"
    return torch.from_numpy(out).to(x.dtype)


def test_gaussian_blur_matches_independent_reference():
    x = torch.randn(3, 4, 12, 10)
    assert torch.allclose(gaussian_blur(x), _blur_reference(x), atol=1e-6)
    const = torch.full((1, 2, 9, 9), 0.37)
    assert torch.allclose(gaussian_blur(const), const, atol=1e-6)
    tiny = torch.randn(1, 1, 3, 3)  # smaller than the kernel: replicate fallback, no error
    assert gaussian_blur(tiny).shape == tiny.shape


def test_reference_mixed_latents_official_order():
    ref = torch.randn(1, 4, 8, 8)
    g = torch.Generator().manual_seed(5)
    mixed = reference_mixed_latents(ref, 6, g)
    assert mixed.shape == (1, 4, 7, 8, 8)
    assert torch.equal(mixed[:, :, 0], ref)
    # one mask draw over [1, 4, 1+T, h, w] from the generator, then latent*m + blur*(1-m)
    mask = torch.rand(1, 4, 7, 8, 8, generator=torch.Generator().manual_seed(5)) >= 0.5
    blurred = _blur_reference(ref)[:, :, None].expand_as(mixed)
    expect = torch.where(mask, ref[:, :, None].expand_as(mixed), blurred)
    assert torch.allclose(mixed[:, :, 1:], expect[:, :, 1:], atol=1e-6)


def test_control_normalisation_equals_whole_clip_min_max():
    rng = np.random.default_rng(0)
    frames = rng.integers(3, 200, (10, 8, 8, 3), dtype=np.uint8)
    # official: x/255*2-1 on the whole clip, then (x - min) / (max - min)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0 * 2 - 1
    whole = (x - x.min()) / (x.max() - x.min())
    lo, hi = control_range(frames)
    per_window = torch.cat([normalize_control(torch.from_numpy(frames[s : s + 4]), lo, hi) for s in range(0, 10, 4)])
    assert torch.equal(per_window, whole)
    black = np.zeros((4, 8, 8, 3), np.uint8)  # official: 0/0 = NaN (§42); ours: zeros
    assert torch.equal(normalize_control(torch.from_numpy(black), *control_range(black)), torch.zeros(4, 3, 8, 8))


def _official_windows_literal(n, offset):
    if n <= 16:
        return [list(range(n))]
    return [[(e + offset) % n for e in range(j, j + 16)] for j in range(0, n, 12)]


def _official_reference(pipe, photo, pose, faces, steps, offsets, noise, seed, blur, cfg=7.5):
    """The official sampling loop written out literally from docs/official-behaviour.md
    (§17-§30): whole-clip control normalisation, ControlNets on both CFG halves,
    sum/count window averaging, DDIM on frames 1.. . `photo` is already H×W."""
    g = torch.Generator().manual_seed(seed)
    ids = pipe.tokenizer("", padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    text = pipe.text_encoder(ids)[0]
    px = pipe.feature_extractor(images=PIL.Image.fromarray(photo), return_tensors="pt").pixel_values
    ip_c = pipe.image_proj(pipe.image_encoder(px, output_hidden_states=True).hidden_states[-2])
    ip_u = pipe.image_proj(pipe.image_encoder(torch.zeros_like(px), output_hidden_states=True).hidden_states[-2])
    mixed_emb = torch.cat([torch.cat([text, ip_u], 1), torch.cat([text, ip_c], 1)])

    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 127.5 - 1
    ref = pipe.vae.encode(x).latent_dist.sample(g) * 0.18215

    def prep(u8):
        c = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0 * 2 - 1
        return (c - c.min()) / (c.max() - c.min())

    pose_c = prep(pose)
    face_c = torch.cat([prep(faces[..., :3]), prep(faces[..., 3:])], dim=1)

    sched = official_scheduler()
    sched.set_timesteps(steps)
    ts = sched.timesteps
    T = pose.shape[0]
    rep = ref[:, :, None].repeat(1, 1, T + 1, 1, 1)
    mask = (torch.rand(*rep.shape, generator=g) >= 0.5).float()
    init = rep * mask + blur(rep[0].permute(1, 0, 2, 3)).permute(1, 0, 2, 3)[None] * (1 - mask)
    init[:, :, :1] = ref[:, :, None]
    full_noise = torch.cat([torch.zeros_like(noise[:, :, :1]), noise], dim=2)
    lat = torch.cat([sched.add_noise(init[:, :, i : i + 1], full_noise[:, :, i : i + 1], ts[:1]) for i in range(T + 1)], 2)
    lat[:, :, :1] = ref[:, :, None]

    def pad(r, n):
        r = r.reshape(2, n, *r.shape[1:]).permute(0, 2, 1, 3, 4)
        return torch.cat([torch.zeros_like(r[:, :, :1]), r], dim=2)

    for i, t in enumerate(ts):
        acc = torch.zeros(2, *lat.shape[1:])
        counter = torch.zeros(1, 1, T + 1, 1, 1)
        for ctx in _official_windows_literal(T, offsets[i]):
            n = len(ctx)
            inp = torch.cat([lat[:, :, :1], lat[:, :, 1:][:, :, ctx]], 2).repeat(2, 1, 1, 1, 1)
            cn_in = inp[:, :, 1:].permute(0, 2, 1, 3, 4).reshape(2 * n, 4, *inp.shape[-2:])
            txt = text.repeat(2 * n, 1, 1)
            d1, m1 = pipe.controlnet(cn_in, t, encoder_hidden_states=txt, controlnet_cond=torch.cat([pose_c[ctx]] * 2), return_dict=False)
            d2, m2 = pipe.controlnet_face(cn_in, t, encoder_hidden_states=txt, controlnet_cond=torch.cat([face_c[ctx]] * 2), return_dict=False)
            down = [pad(a, n) + pad(b, n) for a, b in zip(d1, d2)]
            mid = pad(m1, n) + pad(m2, n)
            pred = pipe.unet(inp, t, encoder_hidden_states=mixed_emb, down_block_additional_residuals=down,
                             mid_block_additional_residual=mid).sample
            idx = [c + 1 for c in ctx]
            acc[:, :, idx] = acc[:, :, idx] + pred[:, :, 1:]
            counter[:, :, idx] += 1
            counter[:, :, 0] += 1
        u, c = (acc / counter).chunk(2)
        eps = u + cfg * (c - u)
        lat[:, :, 1:] = sched.step(eps[:, :, 1:], t, lat[:, :, 1:]).prev_sample
    return lat[:, :, 1:]


def test_official_schedule_reproduces_the_official_sampling_loop(pipe):
    T, steps, offsets, seed = 20, 2, [3, 13], 11
    photo, pose, faces = clip(T)
    photo = photo[:H, :W].copy()  # already at the output size: crop/resize are identities
    noise = torch.randn(1, 4, T, H // 8, W // 8, generator=torch.Generator().manual_seed(99))
    got = pipe(photo, pose, faces, height=H, width=W, num_inference_steps=steps, window_schedule="official",
               window_offsets=offsets, latents=noise, generator=torch.Generator().manual_seed(seed),
               output_type="latent").frames
    with torch.no_grad():
        # with the same float32 blur the efficient loop (shared ControlNet pass,
        # per-window normalisation, index_add accumulation) is bit-identical ...
        same_blur = _official_reference(pipe, photo, pose, faces, steps, offsets, noise, seed, gaussian_blur)
        # ... and with the independent float64 scipy blur it agrees to float32 precision
        scipy_blur = _official_reference(pipe, photo, pose, faces, steps, offsets, noise, seed, _blur_reference)
    assert got.shape == same_blur.shape == (1, 4, T, H // 8, W // 8)
    assert torch.equal(got, same_blur)
    rel = ((got - scipy_blur).abs().max() / scipy_blur.abs().max()).item()
    assert rel < 1e-5, rel


# --------------------------------------------------------------------------- efficiency


def test_controlnets_run_once_per_window_on_shared_inputs(pipe):
    calls = {"controlnet": [], "controlnet_face": [], "unet": []}
    hooks = [getattr(pipe, name).register_forward_pre_hook(
        lambda m, args, kw, name=name: calls[name].append(args[0].shape[0] if args else kw["sample"].shape[0]),
        with_kwargs=True) for name in calls]
    try:
        gen(pipe, num_frames=20, steps=2)  # default empty prompts: identical CFG halves
        assert calls["controlnet"] == [16] * 4 and calls["controlnet_face"] == [16] * 4  # 2 steps x 2 windows
        assert calls["unet"] == [2] * 4  # CFG batch
        for v in calls.values():
            v.clear()
        gen(pipe, num_frames=20, steps=1, prompt="a dancer", negative_prompt="")  # halves differ
        assert calls["controlnet"] == [32] * 2 and calls["unet"] == [2] * 2
        for v in calls.values():
            v.clear()
        gen(pipe, num_frames=20, steps=1, guidance_scale=0.5)  # CFG off below 1 (§30)
        assert calls["controlnet"] == [16] * 2 and calls["unet"] == [1] * 2
        for v in calls.values():
            v.clear()
        gen(pipe, num_frames=20, steps=1, pose_conditioning_scale=0.0, face_conditioning_scale=0.0)
        assert calls["controlnet"] == [] and calls["controlnet_face"] == []
    finally:
        for h in hooks:
            h.remove()


def test_guidance_exactly_one_still_uses_cfg(pipe):
    batches = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, a: batches.append(a[0].shape[0]))
    try:
        gen(pipe, num_frames=8, steps=1, guidance_scale=1.0)
    finally:
        hook.remove()
    assert batches == [2]


# --------------------------------------------------------------------------- cancel, progress


def test_cancel_from_step_callback_returns_promptly(pipe):
    unet_calls = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, a: unet_calls.append(1))

    def stop(p, step, timestep, kwargs):
        assert kwargs["latents"].shape == (1, 4, 21, 8, 8)
        p._interrupt = True
        return kwargs

    try:
        with pytest.raises(Cancelled):
            gen(pipe, num_frames=20, steps=25, callback_on_step_end=stop)
        assert len(unet_calls) == 2  # one step of two windows, not 25
        unet_calls.clear()
        with pytest.raises(Cancelled):
            gen(pipe, num_frames=20, steps=25, progress=lambda info: False)
        assert len(unet_calls) == 1  # stopped after the first window

        def raise_cancel(info):
            raise Cancelled("user pressed stop")

        with pytest.raises(Cancelled, match="user pressed stop"):
            gen(pipe, num_frames=20, steps=25, progress=raise_cancel)
    finally:
        hook.remove()
    gen(pipe, num_frames=8, steps=1)  # the pipeline works again after a cancel


# --------------------------------------------------------------------------- outputs, modes


def test_output_types(pipe):
    np_frames = gen(pipe, num_frames=5, steps=1, output_type="np")
    u8 = gen(pipe, num_frames=5, steps=1, output_type="uint8")
    pt = gen(pipe, num_frames=5, steps=1, output_type="pt")
    pil = gen(pipe, num_frames=5, steps=1, output_type="pil")
    lat = gen(pipe, num_frames=5, steps=1, output_type="latent")
    assert u8.dtype == np.uint8 and np.array_equal(u8, (np_frames * 255).astype(np.uint8))
    assert pt.shape == (5, 3, H, W) and torch.equal(pt.permute(0, 2, 3, 1), torch.from_numpy(np_frames))
    assert len(pil) == 5 and np.array_equal(np.asarray(pil[0]), u8[0])
    assert lat.shape == (1, 4, 5, 8, 8)
    # chunked decoding gives the same frames
    assert np.allclose(gen(pipe, num_frames=5, steps=1, decode_chunk_size=2), np_frames, atol=1e-5)


def test_pose_only_model_and_face_scale_zero(pipe):
    pose_only = XDynaPipeline(**make_tiny_components(seed=0, with_face=False))
    pose_only.set_progress_bar_config(disable=True)
    assert pose_only.controlnet_face is None
    a = gen(pose_only, face_images=None)
    b = gen(pose_only)  # face images are ignored (warning) by a pose-only model
    assert a.shape == (20, H, W, 3) and np.array_equal(a, b)
    # a face-capable model with face scale 0 or no face images = pose only
    c = gen(pipe, face_images=None)
    d = gen(pipe, face_conditioning_scale=0.0)
    assert np.array_equal(c, d)
    assert np.abs(c - gen(pipe)).max() > 1e-5  # and the face stream does change the result


def test_all_black_face_stream_gives_no_nan(pipe):
    photo, pose, _ = clip(10)
    frames = pipe(photo, pose, np.zeros((10, H, W, 6), np.uint8), height=H, width=W, num_inference_steps=2,
                  generator=torch.Generator().manual_seed(0)).frames
    assert np.isfinite(frames).all()


def test_short_clip_single_window_and_adapter_scale(pipe):
    a = gen(pipe, num_frames=3, steps=1)
    b = gen(pipe, num_frames=3, steps=1, adapter_scale=0.0)
    assert a.shape == (3, H, W, 3)
    assert pipe.unet.adapter_scale == 0.0
    gen(pipe, num_frames=3, steps=1, adapter_scale=1.0)
    # make_tiny_components randomises the zero-initialised adapter output, so the scale matters
    assert np.abs(a - b).max() > 0


def test_save_pretrained_round_trip_identical(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["unet"] == ["xdyna_core.models.unet", "XDynaUNet"]
    assert index["image_proj"] == ["xdyna_core.models.image_proj", "XDynaImageProjection"]
    assert list((tmp_path / "m" / "unet").glob("*.safetensors"))
    assert not list((tmp_path / "m").rglob("*.bin"))
    loaded = XDynaPipeline.from_pretrained(tmp_path / "m")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.unet).__name__ == "XDynaUNet"
    assert np.array_equal(gen(pipe, steps=2), gen(loaded, steps=2))


# --------------------------------------------------------------------------- validation


def test_input_errors(pipe):
    photo, pose, faces = clip(6)
    run = lambda **kw: pipe(**{"image": photo, "pose_images": pose, "height": H, "width": W,
                               "num_inference_steps": 1, **kw})
    with pytest.raises(InputError, match="face_images has 5 frames but pose_images has 6"):
        run(face_images=faces[:5])
    with pytest.raises(InputError, match="pose_images are 64x64"):
        run(height=128)
    with pytest.raises(InputError, match="multiples of 8"):
        run(height=60, pose_images=pose[:, :60])
    # latent sizes that the UNet's downsampling does not divide are fine (72 px -> 9 latents)
    tall = np.concatenate([pose, pose[:, :8]], axis=1)
    assert run(height=72, pose_images=tall, face_images=None).frames.shape == (6, 72, W, 3)
    with pytest.raises(InputError, match="empty"):
        run(pose_images=[])
    with pytest.raises(InputError, match="empty"):
        run(pose_images=pose[:0])
    with pytest.raises(InputError, match="uint8"):
        run(pose_images=pose.astype(np.float32))
    with pytest.raises(InputError, match=r"\[T, H, W, 6\]"):
        run(face_images=faces[..., :3])
    with pytest.raises(InputError, match=r"image must be a PIL image"):
        run(image="photo.jpg")
    with pytest.raises(InputError, match="maximum of 24"):
        run(window_size=32, pose_images=np.concatenate([pose] * 6))
    with pytest.raises(InputError, match="window_overlap"):
        run(window_overlap=16)
    with pytest.raises(InputError, match="num_inference_steps"):
        run(num_inference_steps=0)
    with pytest.raises(InputError, match="output_type"):
        run(output_type="gif")
    with pytest.raises(InputError, match="latents"):
        run(latents=torch.zeros(1, 4, 5, 8, 8))
    # lists of PIL images are fine, and None height/width = the pose frames' size
    frames = pipe(photo, [PIL.Image.fromarray(p) for p in pose], height=None, width=None, num_inference_steps=1,
                  generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (6, H, W, 3)


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, pipe):
    from xdyna_core import io

    d = tmp_path_factory.mktemp("cli")
    pipe.save_pretrained(d / "model")
    photo, pose, faces = clip(12, size=(112, 64))  # 64x112 like the official 512x896 clips
    PIL.Image.fromarray(photo).save(d / "photo.png")
    io.write_video(d / "pose.mp4", pose, 8)
    io.write_video(d / "face.mp4", np.concatenate([faces[..., :3], faces[..., 3:]], axis=2), 8)  # [local | global]
    return d


def test_cli_animate_end_to_end(cli_files, tmp_path):
    from xdyna_core import io
    from xdyna_core.cli import main

    d = cli_files
    out = tmp_path / "out" / "anim.mp4"
    rc = main(["animate", "--image", str(d / "photo.png"), "--pose-video", str(d / "pose.mp4"),
               "--face-video", str(d / "face.mp4"), "--model", str(d / "model"), "--preset", "tiny-offline",
               "--steps", "2", "--size", "64x64", "--seed", "3", "-o", str(out), "--quiet"])
    assert rc == 0 and out.exists()
    video = io.read_video(out)
    assert video.frames.shape == (12, 64, 64, 3) and video.fps == pytest.approx(8)
    assert sorted(p.name for p in out.parent.iterdir()) == ["anim.mp4"]  # no temp files left

    # same seed through the CLI = the same frames as the Python API with the CLI's inputs
    rc = main(["animate", "--image", str(d / "photo.png"), "--pose-video", str(d / "pose.mp4"),
               "--model", str(d / "model"), "--steps", "1", "--size", "64x64",
               "--max-frames", "5", "-o", str(tmp_path / "b.mp4"), "--quiet"])
    assert rc == 0 and len(io.read_video(tmp_path / "b.mp4").frames) == 5

    # errors are one line and exit code 2, no output written
    rc = main(["animate", "--image", str(d / "photo.png"), "--pose-video", str(d / "pose.mp4"),
               "--model", str(tmp_path / "nowhere"), "-o", str(tmp_path / "c.mp4"), "--quiet"])
    assert rc == 2 and not (tmp_path / "c.mp4").exists()


def test_cli_interrupt_leaves_no_partial_file(cli_files, tmp_path):
    d = cli_files
    out = tmp_path / "never.mp4"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "xdyna_core", "animate", "--image", str(d / "photo.png"), "--pose-video",
         str(d / "pose.mp4"), "--model", str(d / "model"), "--steps", "200", "--size", "64x64",
         "-o", str(out)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=tmp_path,
    )
    seen = ""
    deadline = time.time() + 120
    while "denoising" not in seen and time.time() < deadline:  # wait until sampling runs
        chunk = os.read(proc.stderr.fileno(), 4096)  # tqdm redraws with \r, so no readline
        if not chunk:
            break
        seen += chunk.decode(errors="replace")
    assert "denoising" in seen, seen[-2000:]
    proc.send_signal(signal.SIGINT)
    start = time.time()
    rc = proc.wait(timeout=60)
    assert time.time() - start < 30
    assert rc == 130
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file


def test_cli_convert_official_format_files(tmp_path):
    """Official-format tiny files (xdyna_core.testing) -> `xdyna convert` ->
    from_pretrained gives the same video as loading the originals with from_official."""
    from xdyna_core.cli import main
    from xdyna_core.testing import write_tiny_official_files

    f = write_tiny_official_files(tmp_path / "official")
    files = ["--unet", str(f.xdyna_dir / "unet-checkpoint-epoch-5.ckpt"),
             "--controlnet", str(f.xdyna_dir / "controlnet-checkpoint-epoch-5.ckpt"),
             "--controlnet-face", str(f.xdyna_dir / "controlnet-face-checkpoint-epoch-2.ckpt"),
             "--ip-adapter", str(f.ip_adapter_dir / "models" / "ip-adapter-plus_sd15.bin"),
             "--image-encoder", str(f.ip_adapter_dir / "models" / "image_encoder"), "--sd", str(f.sd_dir),
             "--image-proj-dim-head", "8"]
    out = tmp_path / "converted"
    assert main(["convert", *files, "-o", str(out)]) == 0
    assert (out / "model_index.json").is_file() and not list(out.rglob("*.bin")) and not list(out.rglob("*.ckpt"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left
    assert main(["convert", *files, "-o", str(out)]) == 2  # exists: refused without --overwrite
    assert main(["convert", *files[:-4], "-o", str(tmp_path / "x")]) == 2  # --sd missing
    assert not (tmp_path / "x").exists()

    converted = XDynaPipeline.from_pretrained(out)
    for name in ("unet", "controlnet", "controlnet_face", "image_proj"):
        state = getattr(converted, name).state_dict()
        assert all(torch.equal(state[k], v) for k, v in f.state_dicts[name].items()), name
    original = XDynaPipeline.from_official(xdyna_repo=f.xdyna_dir, sd_repo=f.sd_dir, ip_adapter_repo=f.ip_adapter_dir,
                                           **f.loader_kwargs)
    for p in (converted, original):
        p.set_progress_bar_config(disable=True)
    assert np.array_equal(gen(converted, num_frames=6, steps=1), gen(original, num_frames=6, steps=1))

    # --official with local folders = the hub layout without a network
    assert main(["convert", "--official", "--xdyna-repo", str(f.xdyna_dir), "--sd-repo", str(f.sd_dir),
                 "--ip-adapter-repo", str(f.ip_adapter_dir), "--image-proj-dim-head", "8", "--no-face",
                 "--dtype", "float16", "-o", str(tmp_path / "pose_only")]) == 0
    from safetensors import safe_open

    with safe_open(str(next((tmp_path / "pose_only" / "unet").glob("*.safetensors"))), "pt") as sf:
        assert sf.get_tensor(next(iter(sf.keys()))).dtype == torch.float16  # saved half size
    pose_only = XDynaPipeline.from_pretrained(tmp_path / "pose_only", dtype=torch.float16)
    assert pose_only.controlnet_face is None and pose_only.unet.dtype == torch.float16


def test_cli_animate_from_motion_file(cli_files, tmp_path):
    """`xdyna extract` output (.npz Motion) -> `xdyna animate --motion`: the framed
    photo in the motion file is the VAE reference."""
    from xdyna_core import io
    from xdyna_core.cli import main
    from xdyna_core.preprocess.motion import Motion

    photo, pose, faces = clip(7)
    t = len(pose)
    Motion(pose_images=pose, face_images=faces, fps=12.0, person_found=np.ones(t, bool), face_found=np.ones(t, bool),
           keypoints=np.zeros((t, 128, 3), np.float32), driving_keypoints=np.zeros((t, 128, 3), np.float32),
           reference_image=photo[:H, :W].copy()).save(tmp_path / "clip.npz")
    out = tmp_path / "m.mp4"
    assert main(["animate", "--image", str(cli_files / "photo.png"), "--motion", str(tmp_path / "clip.npz"),
                 "--model", str(cli_files / "model"), "--steps", "1", "-o", str(out), "--quiet"]) == 0
    video = io.read_video(out)
    assert video.frames.shape == (7, H, W, 3) and video.fps == pytest.approx(12)
    assert main(["animate", "--image", str(cli_files / "photo.png"), "--motion", str(tmp_path / "clip.npz"),
                 "--pose-video", str(cli_files / "pose.mp4"), "--model", str(cli_files / "model"),
                 "-o", str(tmp_path / "n.mp4"), "--quiet"]) == 2


@pytest.mark.gpu
def test_cuda_half_precision_reproducible_and_cpu_offload():
    """On CUDA: fp16 runs are finite and seed-reproducible (CPU generator), fp32 CUDA
    matches CPU (TF32 off), and enable_model_cpu_offload gives the same frames as .to('cuda')."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        cpu = XDynaPipeline(**make_tiny_components(seed=0))
        half = XDynaPipeline(**make_tiny_components(seed=0)).to("cuda", torch.float16)
        full = XDynaPipeline(**make_tiny_components(seed=0)).to("cuda")
        offload = XDynaPipeline(**make_tiny_components(seed=0))
        offload.enable_model_cpu_offload()
        for p in (cpu, half, full, offload):
            p.set_progress_bar_config(disable=True)
        a, b = gen(half, num_frames=20), gen(half, num_frames=20)
        assert np.isfinite(a).all() and np.array_equal(a, b)
        ref = gen(full, num_frames=20)
        on_cpu = gen(cpu, num_frames=20)
        print(f"\nfp16-fp32 mean {np.abs(a - ref).mean():.2e} max {np.abs(a - ref).max():.2e}, "
              f"cpu-cuda fp32 max {np.abs(on_cpu - ref).max():.2e}")
        # random tiny weights and CFG 7.5 amplify fp16 rounding at a few pixels; on average it is close
        assert np.abs(a - ref).mean() < 0.05
        assert np.abs(on_cpu - ref).max() < 1e-3  # same numbers on CPU and GPU
        assert np.abs(gen(offload, num_frames=20) - ref).max() < 1e-5
        assert offload.unet.device.type == "cpu"  # offloaded again after the call
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def test_cli_default_model_resolution(tmp_path, monkeypatch):
    """No --model: the shipped tiny model (with the tiny-offline preset); without it the CLI says
    what to do; a preset that names its model brings it."""
    from xdyna_core.animation import resolve_settings
    from xdyna_core.cli import main

    monkeypatch.setenv("XDYNA_TINY_MODEL", str(tmp_path / "tiny-xdyna"))
    s = resolve_settings()
    assert s.model.choice == "tiny" and not s.model.trained  # not installed: the untrained stand-in
    photo = tmp_path / "p.png"
    PIL.Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photo)
    (tmp_path / "m.npz").write_bytes(b"")
    rc = main(["animate", "--image", str(photo), "--motion", str(tmp_path / "m.npz"), "-o", str(tmp_path / "o.mp4")])
    assert rc == 2 and not (tmp_path / "o.mp4").exists()
    (tmp_path / "tiny-xdyna").mkdir()
    (tmp_path / "tiny-xdyna" / "model_index.json").write_text("{}")
    for part in ("unet", "vae"):
        shutil.copytree(ROOT / "assets" / "tiny-xdyna" / part, tmp_path / "tiny-xdyna" / part,
                        ignore=shutil.ignore_patterns("*.safetensors"))
    s = resolve_settings()
    assert s.model.folder == tmp_path / "tiny-xdyna" and s.generation.num_inference_steps == 10  # tiny-offline
    s = resolve_settings(model="official")
    assert s.model.choice == "official" and s.default_size == (896, 512)
    s = resolve_settings(preset="fast-preview")
    assert s.model.choice == "official" and s.generation.num_inference_steps == 12


def test_strength_runs_only_the_last_steps_from_less_noisy_latents(pipe):
    """SDEdit-style `strength` (diffusers' img2img convention): int(steps * strength) steps run,
    the last ones of the same schedule; 1.0 is exactly the default; bad values are refused."""
    photo, pose, faces = clip(8)

    def run(**kw):
        seen = []

        def cb(p, i, t, kwargs):
            seen.append(int(t))
            return {}

        out = pipe(photo, pose, faces, height=H, width=W, num_inference_steps=10, output_type="latent",
                   generator=torch.Generator().manual_seed(0), callback_on_step_end=cb, **kw).frames
        return out, seen

    full, steps_full = run()
    part, steps_part = run(strength=0.75)
    assert len(steps_full) == 10 and steps_part == steps_full[3:]  # int(10 * 0.75) = 7 steps
    assert torch.equal(run(strength=1.0)[0], full)
    assert not torch.equal(part, full)
    assert len(run(strength=0.01)[1]) == 1  # at least one step
    for bad in (0, -0.5, 1.5, True, "0.5"):
        with pytest.raises(InputError, match="strength"):
            run(strength=bad)
