"""Frame sizes: one convention at the edge, one inside.

People type and read sizes as WIDTHxHEIGHT ("512x896"), as ffmpeg and the studio's "Video size
(width × height)" do; code keeps (height, width) tuples, as diffusers does. `parse_size` and
`format_size` are the only places that convert between the two, and `check_size` holds the one
rule every generation size follows.
"""

from __future__ import annotations

from typing import Tuple, Union

from xdyna_core.errors import InputError

MULTIPLE = 64  # the VAE needs /8 and the UNet's three downsamplings of the latent another /8
MAX_PIXELS = 2048 * 2048
EXAMPLE = "512x896"


def format_size(height: int, width: int) -> str:
    """(height, width) -> "WIDTHxHEIGHT", the way sizes are shown to people."""
    return f"{int(width)}x{int(height)}"


def check_size(height: int, width: int, what: str = "size") -> Tuple[int, int]:
    """The one rule for frame sizes: positive multiples of 64, at most 2048x2048 pixels."""
    if height <= 0 or width <= 0 or height % MULTIPLE or width % MULTIPLE:
        raise InputError(f"{what} {format_size(height, width)} (width x height) must be positive multiples of "
                         f"{MULTIPLE}, e.g. 512x896, 512x768, 512x512 or 64x128")
    if height * width > MAX_PIXELS:
        raise InputError(f"{what} {format_size(height, width)} is larger than 2048x2048")
    return int(height), int(width)


def parse_size(value: Union[str, Tuple[int, int], list], what: str = "size") -> Tuple[int, int]:
    """A size as people write it, "WIDTHxHEIGHT" ("512x896", "512×896", "512 x 896"), or an
    already parsed (height, width) pair -> checked (height, width)."""
    if isinstance(value, str):
        text = value.strip().lower().replace("×", "x").replace(" ", "")
        try:
            width, height = (int(v) for v in text.split("x"))
        except ValueError:
            raise InputError(f"{what} must look like {EXAMPLE} (width x height in pixels), got {value!r}") from None
    else:
        try:
            height, width = (int(v) for v in value)
        except (TypeError, ValueError):
            raise InputError(f"{what} must be (height, width), got {value!r}") from None
    return check_size(height, width, what)
