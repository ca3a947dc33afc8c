"""Make the app's example inputs from the synthetic generator (reproducible).

    python -m xdyna_core.train.make_examples [--out assets/examples] [--preview]

Writes two reference photos (PNG, 896×512 H×W, the default generation size), two driving dance
clips and one scene-only clip (H.264 mp4, 3 s at 12 fps, 896×512). Every input comes from the
*held-out* split, so none of them is a training clip of the tiny model. ``--preview`` also saves
a frame strip of each clip next to it (``*_strip.png``, not committed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from xdyna_core.synthetic import factor_seeds, render_clip, render_frames
from xdyna_core.synthetic.body import Character, person_states
from xdyna_core.synthetic.motion import Choreography
from xdyna_core.synthetic.scene import Scene

from ..io import frame_strip, save_image, write_video

HEIGHT, WIDTH = 896, 512
FPS, SECONDS = 12, 3.0

# (file stem, held-out clip seed): chosen by looking at contact sheets for variety
PHOTOS = (("photo_1", 7), ("photo_2", 5))
DANCES = (("dance_1", 0), ("dance_2", 12))
SCENES = (("scene_fire", "fire", 3),)


def calm_time(character: Character, motion: Choreography, step: float = 0.25, span: float = 20.0) -> float:
    """A time of the dance that looks like a portrait: facing the camera, hands low, feet down."""
    t = np.arange(0.0, span, step)
    st = person_states(character, motion, t)
    wrists_up = np.maximum(st["wrists"][:, :, 1] - st["hips"][:, :, 1], 0).sum(1)
    turned = 1.0 - st["facing"]
    lifted = np.abs(st["ankles"][:, :, 1] - character.ankle_h).sum(1)
    spread = np.abs(st["wrists"][:, :, 0] - st["pelvis"][:, None, 0]).max(1)
    score = wrists_up + 0.5 * turned + 2.0 * lifted + 0.3 * spread
    return float(t[int(np.argmin(score))])


def photo(seed: int):
    """A held-out person in a calm pose (a slower version of their dance), one frame."""
    fs = factor_seeds(seed, "heldout")
    character = Character.sample(fs["identity"])
    motion = dataclasses.replace(Choreography.sample(fs["motion"]), energy=0.35, turn=0.0)
    scene = Scene.sample(fs["scene"])
    t = calm_time(character, motion)
    return render_frames([t], HEIGHT, WIDTH, scene, character, motion, fps=FPS), t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="assets/examples")
    ap.add_argument("--preview", action="store_true", help="also write a frame strip PNG per clip")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for stem, seed in PHOTOS:
        clip, t = photo(seed)
        save_image(out / f"{stem}.png", clip.frames[0])
        manifest[f"{stem}.png"] = dict(kind="photo", split="heldout", seed=seed, time=round(t, 3),
                                       hair=clip.character.hair_style, top=clip.character.top,
                                       bottom=clip.character.bottom, scene=clip.scene.kind)
        print(f"{stem}.png: seed {seed}, t={t:.2f}s")
    n = int(round(FPS * SECONDS))
    for stem, seed in DANCES:
        clip = render_clip(seed, num_frames=n, height=HEIGHT, width=WIDTH, fps=FPS, split="heldout",
                           with_controls=False)
        write_video(out / f"{stem}.mp4", clip.frames, fps=FPS, crf=23)
        manifest[f"{stem}.mp4"] = dict(kind="driving", split="heldout", seed=seed, start_time=round(clip.times[0], 3),
                                       frames=n, fps=FPS, hair=clip.character.hair_style, scene=clip.scene.kind)
        if args.preview:
            save_image(out / f"{stem}_strip.png", frame_strip(clip.frames, num=6, height=448))
        print(f"{stem}.mp4: seed {seed}, {n} frames")
    for stem, kind, seed in SCENES:
        scene = next(sc for sc in (Scene.sample(factor_seeds(s, "heldout")["scene"], person=False)
                                   for s in range(seed, seed + 1000)) if sc.kind == kind)
        clip = render_clip(seed, num_frames=n, height=HEIGHT, width=WIDTH, fps=FPS, person=False, scene=scene,
                           split="heldout")
        write_video(out / f"{stem}.mp4", clip.frames, fps=FPS, crf=23)
        manifest[f"{stem}.mp4"] = dict(kind="scene", split="heldout", scene_seed=scene.seed, frames=n, fps=FPS)
        if args.preview:
            save_image(out / f"{stem}_strip.png", frame_strip(clip.frames, num=6, height=448))
        print(f"{stem}.mp4: {kind} scene {scene.seed}")
    (out / "examples.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
