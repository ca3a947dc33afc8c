"""How long the shipped tiny X-Dyna (assets/tiny-xdyna) takes for one 16-frame clip on this
machine, with the app's `tiny-offline` preset (what `python app.py` runs by default).

    python benchmarks/tiny_model_speed.py [--model assets/tiny-xdyna] [--frames 16] [--runs 3]

Prints the load time, then seconds per clip for each run (the first includes warm-up) and
the median of the others, and the torch thread count and load average, since on a shared
machine these explain most of the spread.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "assets" / "tiny-xdyna"))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--preset", default="tiny-offline")
    args = ap.parse_args(argv)

    import torch
    from diffusers.utils import logging as diffusers_logging

    from xdyna_core.pipeline import XDynaPipeline
    from xdyna_core.eval.model_card import generate, heldout_clips, preset_kwargs

    diffusers_logging.disable_progress_bar()
    t0 = time.perf_counter()
    pipe = XDynaPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - t0
    s = pipe.unet.config.sample_size
    h, w = (s[0], s[1]) if isinstance(s, (list, tuple)) else (s, s)
    f = pipe.vae_scale_factor
    clip = heldout_clips(1, num_frames=args.frames, height=h * f, width=w * f)[0]
    kw = preset_kwargs(args.preset)
    times = []
    for _ in range(max(1, args.runs)):
        t0 = time.perf_counter()
        generate(pipe, clip, **kw)
        times.append(time.perf_counter() - t0)
    rest = times[1:] or times
    print(f"model {args.model}: {h * f}x{w * f} (HxW), {args.frames} frames, preset {args.preset} "
          f"({kw.get('num_inference_steps')} steps, guidance {kw.get('guidance_scale')})")
    print(f"load {load:.2f} s; per clip: " + ", ".join(f"{t:.2f}" for t in times) + f" s; median after the first "
          f"{statistics.median(rest):.2f} s; torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
