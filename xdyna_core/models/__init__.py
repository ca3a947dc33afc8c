"""X-Dyna networks: video UNet, ControlNets, IP-Adapter-Plus image projection, loaders."""

from .controlnet import FACE_CONDITIONING_CHANNELS, POSE_CONDITIONING_CHANNELS, controlnet_shallow_residuals, make_controlnet
from .image_proj import XDynaImageProjection
from .loading import download_official, load_official_components
from .unet import XDynaUNet, XDynaUNetOutput

__all__ = [
    "FACE_CONDITIONING_CHANNELS",
    "POSE_CONDITIONING_CHANNELS",
    "XDynaImageProjection",
    "XDynaUNet",
    "XDynaUNetOutput",
    "controlnet_shallow_residuals",
    "download_official",
    "load_official_components",
    "make_controlnet",
]
