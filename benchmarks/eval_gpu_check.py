"""GPU check of the evaluation backbones at their real sizes (random weights: the real
files are not reachable from the GPU machine). Checks that every network runs on CUDA
(VideoMAE-v2 ViT-g in fp16), that a set against itself gives ~0, and times a run.

    python benchmarks/eval_gpu_check.py [--tiny]   # --tiny: CPU smoke run of the same code
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(tiny=False):
    from xdyna_core.eval.backbones import LPIPS, InceptionI3d, InceptionV3FID, VideoMAEv2
    from xdyna_core.eval.runner import EvalConfig, evaluate
    from xdyna_core.testing import tiny_backbones

    def save_frames(folder, frames):  # frame folders: the GPU machine may lack PyAV
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(folder / f"{i:04d}.png")

    dev = "cpu" if tiny else "cuda"
    print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
    t0 = time.time()
    if tiny:
        nets = tiny_backbones()
    else:
        torch.manual_seed(0)
        nets = {
            "fid": InceptionV3FID().to(dev),
            "lpips": LPIPS().to(dev),
            "fvd": InceptionI3d().to(dev),
            "dtfvd": InceptionI3d(num_classes=18, output="features", align_corners=True).to(dev),
            "cdfvd": VideoMAEv2().to(dev, torch.float16),
        }
    print(f"built networks in {time.time() - t0:.1f}s")

    class BoxSegmenter:  # the GPU machine may lack mediapipe: a fixed central box as the person
        name = "central box"

        def __call__(self, frames):
            m = np.zeros(frames.shape[:3], bool)
            h, w = frames.shape[1:3]
            m[:, h // 8 :, w // 4 : 3 * w // 4] = True
            return m

    nets["segmenter"] = BoxSegmenter()
    root = Path("/tmp/evalgpu")
    rng = np.random.default_rng(0)
    n, T, H, W = (2, 8, 64, 48) if tiny else (3, 32, 384, 224)
    for k in range(n):
        small = rng.integers(0, 256, size=(H // 16, W // 16, 3)).astype(np.uint8)
        from PIL import Image

        img = np.asarray(Image.fromarray(small).resize((W, H), Image.BICUBIC))
        clip = np.stack([np.roll(img, 3 * t, axis=1) for t in range(T)])
        save_frames(root / "ref" / f"v{k}", clip)
        noisy = np.clip(clip + rng.normal(0, 12, clip.shape), 0, 255).astype(np.uint8)
        save_frames(root / "gen" / f"v{k}", noisy)
    import shutil

    shutil.copytree(root / "ref", root / "same", dirs_exist_ok=True)
    cfg = EvalConfig(metrics=("l1", "psnr", "lpips", "fid", "fvd", "cdfvd", "dtfvd"), device=dev, regions=("fg", "bg"), previews=False)
    for name in ("same", "gen"):
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.time()
        res = evaluate(root / name, root / "ref", cfg, backbones=nets, progress=False)
        if dev == "cuda":
            torch.cuda.synchronize()
        dt = time.time() - t
        agg = res.aggregate["full"]
        print(f"{name}: {res.counts['frames']} frames x 3 regions in {dt:.1f}s; " + ", ".join(f"{k}={v:.4g}" for k, v in agg.items() if v is not None))
        print("  samples:", {k: v for k, v in res.counts.items() if k.endswith('_samples')})
        if name == "same":
            assert all(abs(agg[m]) < 1e-3 for m in ("fid", "fvd", "cdfvd", "dtfvd", "lpips")), agg
    if dev == "cuda":
        print("peak GPU memory GiB", round(torch.cuda.max_memory_allocated() / 2**30, 2))
    print("OK")


if __name__ == "__main__":
    main(tiny="--tiny" in sys.argv)
