"""Feature networks of the learned metrics, in plain torch (no torchvision).

Each class has the layer names of the checkpoint it loads, so the original weights load
strictly (see `weights.py`), and size arguments (`width`, `input_size`, depth ...) so the
tests run the very same class tiny and random on CPU. Every class has an `embed` method
taking uint8 RGB frames or clips and returning numpy features, with the preprocessing of
the reference implementation built in:

- `InceptionV3FID`: FID features (pool3, 2048-d) of the TF-FID Inception as ported by
  pytorch-fid (bilinear resize to 299, [-1, 1]). DisCo (and so X-Dyna) ran pytorch-fid.
- `LPIPS`: LPIPS v0.1 with the VGG16 trunk (Zhang et al. 2018), as in DisCo. Inputs in [-1, 1].
- `InceptionI3d`: I3D (Carreira & Zisserman 2017). With Kinetics-400 weights and 400 logits
  it is the FVD network (Unterthiner et al. 2018, PyTorch port used by content-debiased-fvd:
  bilinear 224x224, [-1, 1], 16 frames). With DTDB weights (18 classes) and its 1024-d
  pooled features it is the DTFVD network (Dorkenwald et al. 2021: bilinear 224x224 with
  align_corners=True, [-1, 1], 16 frames).
- `VideoMAEv2`: ViT-g/14 video encoder of VideoMAE-v2 fine-tuned on SSv2, mean-pooled
  and fc-normed features (1408-d): the cd-FVD network (Ge et al. 2024: bilinear 224x224,
  [0, 1] without mean/std normalisation, exactly as their code).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from xdyna_core.errors import MissingWeightsError
from xdyna_core.eval.weights import load_into, load_state_dict, resolve_weights

__all__ = [
    "InceptionV3FID",
    "LPIPS",
    "InceptionI3d",
    "VideoMAEv2",
    "load_inception_fid",
    "load_lpips",
    "load_fvd_i3d",
    "load_dtfvd_i3d",
    "load_videomae_v2",
]


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _frames_to_tensor(frames: np.ndarray, device, dtype=torch.float32) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return x.movedim(-1, -3).to(dtype) / 255.0


def _random_init(model: nn.Module) -> None:
    """Variance-preserving random init (He et al. 2015), so that a network built without
    its checkpoint (the tiny random backbones of the tests) gives features that still vary
    with the input instead of vanishing with depth. Real weights overwrite all of it."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _model_device(model: nn.Module):
    p = next(model.parameters())
    return p.device, p.dtype


# --------------------------------------------------------------------------------------
# Inception-v3 for FID (pytorch-fid's FID variant of torchvision's Inception3 layout)
# --------------------------------------------------------------------------------------


class _BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _InceptionA(nn.Module):
    def __init__(self, cin, pool_features, w):
        super().__init__()
        self.branch1x1 = _BasicConv2d(cin, _ch(64, w), kernel_size=1)
        self.branch5x5_1 = _BasicConv2d(cin, _ch(48, w), kernel_size=1)
        self.branch5x5_2 = _BasicConv2d(_ch(48, w), _ch(64, w), kernel_size=5, padding=2)
        self.branch3x3dbl_1 = _BasicConv2d(cin, _ch(64, w), kernel_size=1)
        self.branch3x3dbl_2 = _BasicConv2d(_ch(64, w), _ch(96, w), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _BasicConv2d(_ch(96, w), _ch(96, w), kernel_size=3, padding=1)
        self.branch_pool = _BasicConv2d(cin, _ch(pool_features, w), kernel_size=1)
        self.out_channels = 2 * _ch(64, w) + _ch(96, w) + _ch(pool_features, w)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        # FID variant: the TF graph's average pool ignores the padding.
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b5, b3, bp], 1)


class _InceptionB(nn.Module):
    def __init__(self, cin, w):
        super().__init__()
        self.branch3x3 = _BasicConv2d(cin, _ch(384, w), kernel_size=3, stride=2)
        self.branch3x3dbl_1 = _BasicConv2d(cin, _ch(64, w), kernel_size=1)
        self.branch3x3dbl_2 = _BasicConv2d(_ch(64, w), _ch(96, w), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _BasicConv2d(_ch(96, w), _ch(96, w), kernel_size=3, stride=2)
        self.out_channels = _ch(384, w) + _ch(96, w) + cin

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, 3, stride=2)], 1)


class _InceptionC(nn.Module):
    def __init__(self, cin, c7, w):
        super().__init__()
        c7, c192 = _ch(c7, w), _ch(192, w)
        self.branch1x1 = _BasicConv2d(cin, c192, kernel_size=1)
        self.branch7x7_1 = _BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = _BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = _BasicConv2d(c7, c192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = _BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _BasicConv2d(c7, c192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = _BasicConv2d(cin, c192, kernel_size=1)
        self.out_channels = 4 * c192

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b7, bd, bp], 1)


class _InceptionD(nn.Module):
    def __init__(self, cin, w):
        super().__init__()
        c192 = _ch(192, w)
        self.branch3x3_1 = _BasicConv2d(cin, c192, kernel_size=1)
        self.branch3x3_2 = _BasicConv2d(c192, _ch(320, w), kernel_size=3, stride=2)
        self.branch7x7x3_1 = _BasicConv2d(cin, c192, kernel_size=1)
        self.branch7x7x3_2 = _BasicConv2d(c192, c192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _BasicConv2d(c192, c192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _BasicConv2d(c192, c192, kernel_size=3, stride=2)
        self.out_channels = _ch(320, w) + c192 + cin

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class _InceptionE(nn.Module):
    def __init__(self, cin, w, max_pool: bool):
        super().__init__()
        c384 = _ch(384, w)
        self.max_pool = max_pool
        self.branch1x1 = _BasicConv2d(cin, _ch(320, w), kernel_size=1)
        self.branch3x3_1 = _BasicConv2d(cin, c384, kernel_size=1)
        self.branch3x3_2a = _BasicConv2d(c384, c384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = _BasicConv2d(c384, c384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _BasicConv2d(cin, _ch(448, w), kernel_size=1)
        self.branch3x3dbl_2 = _BasicConv2d(_ch(448, w), c384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = _BasicConv2d(c384, c384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _BasicConv2d(c384, c384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = _BasicConv2d(cin, _ch(192, w), kernel_size=1)
        self.out_channels = _ch(320, w) + 4 * c384 + _ch(192, w)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        # FID variant: Mixed_7b average-pools without padding, Mixed_7c max-pools (a TF quirk).
        if self.max_pool:
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class InceptionV3FID(nn.Module):
    """Inception-v3 as used by FID (pool3 features), pytorch-fid's FID variant.

    Args:
        width: channel multiplier (1.0 = the real network; tests use ~1/16).
        input_size: frames are resized (bilinear) to input_size x input_size (299 for FID).
    """

    def __init__(self, width: float = 1.0, input_size: int = 299):
        super().__init__()
        w = width
        self.input_size = input_size
        self.Conv2d_1a_3x3 = _BasicConv2d(3, _ch(32, w), kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = _BasicConv2d(_ch(32, w), _ch(32, w), kernel_size=3)
        self.Conv2d_2b_3x3 = _BasicConv2d(_ch(32, w), _ch(64, w), kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = _BasicConv2d(_ch(64, w), _ch(80, w), kernel_size=1)
        self.Conv2d_4a_3x3 = _BasicConv2d(_ch(80, w), _ch(192, w), kernel_size=3)
        self.Mixed_5b = _InceptionA(_ch(192, w), 32, w)
        self.Mixed_5c = _InceptionA(self.Mixed_5b.out_channels, 64, w)
        self.Mixed_5d = _InceptionA(self.Mixed_5c.out_channels, 64, w)
        self.Mixed_6a = _InceptionB(self.Mixed_5d.out_channels, w)
        self.Mixed_6b = _InceptionC(self.Mixed_6a.out_channels, 128, w)
        self.Mixed_6c = _InceptionC(self.Mixed_6b.out_channels, 160, w)
        self.Mixed_6d = _InceptionC(self.Mixed_6c.out_channels, 160, w)
        self.Mixed_6e = _InceptionC(self.Mixed_6d.out_channels, 192, w)
        self.Mixed_7a = _InceptionD(self.Mixed_6e.out_channels, w)
        self.Mixed_7b = _InceptionE(self.Mixed_7a.out_channels, w, max_pool=False)
        self.Mixed_7c = _InceptionE(self.Mixed_7b.out_channels, w, max_pool=True)
        self.feature_dim = self.Mixed_7c.out_channels
        _random_init(self)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [N, 3, H, W] in [0, 1] -> pool3 features [N, feature_dim]."""
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    @torch.no_grad()
    def embed(self, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """uint8 frames [N, H, W, 3] -> features [N, feature_dim] (float64)."""
        device, dtype = _model_device(self)
        out = []
        for i in range(0, len(frames), batch_size):
            out.append(self(_frames_to_tensor(frames[i : i + batch_size], device, dtype)).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim))


# --------------------------------------------------------------------------------------
# LPIPS v0.1 (VGG16 trunk with torchvision's layer indices, linear heads as in `lpips`)
# --------------------------------------------------------------------------------------

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_LPIPS_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in `features`


class _NetLinLayer(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(cin, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with a VGG16 trunk (Zhang et al. 2018).

    Args:
        width: channel multiplier of the trunk (1.0 = VGG16; tests use ~1/16).
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        layers, cin = [], 3
        tap_channels = []
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, _ch(v, width), 3, padding=1), nn.ReLU(inplace=False)]
                cin = _ch(v, width)
            if len(layers) - 1 in _LPIPS_TAPS:
                tap_channels.append(cin)
        self.features = nn.Sequential(*layers)
        for i, c in enumerate(tap_channels):
            setattr(self, f"lin{i}", _NetLinLayer(c))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        _random_init(self)
        with torch.no_grad():  # LPIPS heads are non-negative (a distance); keep that when random
            for i in range(len(tap_channels)):
                getattr(self, f"lin{i}").model[1].weight.abs_()
        self.eval()

    def _taps(self, x):
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _LPIPS_TAPS:
                feats.append(x)
            if i == _LPIPS_TAPS[-1]:
                break
        return feats

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """x0, x1: float [N, 3, H, W] in [-1, 1] -> distance [N] (0 for identical images)."""
        f0s = self._taps((x0 - self.shift) / self.scale)
        f1s = self._taps((x1 - self.shift) / self.scale)
        total = 0
        for k, (f0, f1) in enumerate(zip(f0s, f1s)):
            f0 = f0 / (torch.sqrt(torch.sum(f0**2, dim=1, keepdim=True)) + 1e-10)
            f1 = f1 / (torch.sqrt(torch.sum(f1**2, dim=1, keepdim=True)) + 1e-10)
            total = total + getattr(self, f"lin{k}").model((f0 - f1) ** 2).mean(dim=(2, 3))
        return total.flatten()

    @torch.no_grad()
    def distance(self, generated: np.ndarray, reference: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """uint8 clips [T, H, W, 3] -> per-frame LPIPS [T] (float64)."""
        device, dtype = _model_device(self)
        out = []
        for i in range(0, len(generated), batch_size):
            a = _frames_to_tensor(generated[i : i + batch_size], device, dtype) * 2 - 1
            b = _frames_to_tensor(reference[i : i + batch_size], device, dtype) * 2 - 1
            out.append(self(a, b).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


# --------------------------------------------------------------------------------------
# I3D (piergiaj/pytorch-i3d layout: FVD with Kinetics-400, DTFVD with DTDB)
# --------------------------------------------------------------------------------------


def _same_pad(size, kernel, stride):
    pad = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


class _MaxPool3dSame(nn.Module):
    """TensorFlow 'SAME' max pooling (zero padding, as in pytorch-i3d)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        t, h, w = x.shape[2:]
        pt, ph, pw = (_same_pad(s, k, st) for s, k, st in zip((t, h, w), self.kernel, self.stride))
        x = F.pad(x, (*pw, *ph, *pt))
        return F.max_pool3d(x, self.kernel, self.stride)


class _Unit3D(nn.Module):
    def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1), activation=True, batch_norm=True, bias=False):
        super().__init__()
        self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=1e-5, momentum=0.001) if batch_norm else None

    def forward(self, x):
        t, h, w = x.shape[2:]
        pt, ph, pw = (_same_pad(s, k, st) for s, k, st in zip((t, h, w), self.kernel, self.stride))
        x = self.conv3d(F.pad(x, (*pw, *ph, *pt)))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class _I3DInception(nn.Module):
    def __init__(self, cin, outs, w):
        super().__init__()
        o = [_ch(c, w) for c in outs]
        self.b0 = _Unit3D(cin, o[0])
        self.b1a = _Unit3D(cin, o[1])
        self.b1b = _Unit3D(o[1], o[2], kernel=(3, 3, 3))
        self.b2a = _Unit3D(cin, o[3])
        self.b2b = _Unit3D(o[3], o[4], kernel=(3, 3, 3))
        self.b3a = _MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = _Unit3D(cin, o[5])
        self.out_channels = o[0] + o[2] + o[4] + o[5]

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D (Carreira & Zisserman 2017), pytorch-i3d parameter names.

    Args:
        num_classes: 400 (Kinetics, FVD) or 18 (DTDB, DTFVD).
        output: "logits" (FVD: class logits averaged over time) or "features" (DTFVD: the
            1024-d average-pooled features before the logits).
        width: channel multiplier (1.0 = the real network).
        input_size: frames are resized (bilinear) to input_size x input_size.
        num_frames: clip length the metric feeds (16 for FVD/DTFVD).
        align_corners: of that resize (False for FVD's port, True in the DTFVD code).

    The final average pool of the original (kernel [2, 7, 7]) covers exactly the whole
    feature map of a 16x224x224 clip; we pool adaptively, which is the same there and lets
    small test clips through.
    """

    _MIXED = (
        ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
        ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
        ("MaxPool3d_4a_3x3", ((3, 3, 3), (2, 2, 2))),
        ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
        ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
        ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
        ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
        ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
        ("MaxPool3d_5a_2x2", ((2, 2, 2), (2, 2, 2))),
        ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
        ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
    )

    def __init__(
        self,
        num_classes: int = 400,
        output: str = "logits",
        width: float = 1.0,
        input_size: int = 224,
        num_frames: int = 16,
        align_corners: bool = False,
    ):
        super().__init__()
        if output not in ("logits", "features"):
            raise ValueError("output must be 'logits' or 'features'")
        self.output, self.input_size, self.num_frames, self.align_corners = output, input_size, num_frames, align_corners
        w = width
        self.Conv3d_1a_7x7 = _Unit3D(3, _ch(64, w), kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = _MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = _Unit3D(_ch(64, w), _ch(64, w))
        self.Conv3d_2c_3x3 = _Unit3D(_ch(64, w), _ch(192, w), kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = _MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self._order = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3"]
        cin = _ch(192, w)
        for name, spec in self._MIXED:
            if name.startswith("MaxPool"):
                setattr(self, name, _MaxPool3dSame(*spec))
            else:
                block = _I3DInception(cin, spec, w)
                setattr(self, name, block)
                cin = block.out_channels
            self._order.append(name)
        self.feature_dim_pooled = cin
        self.logits = _Unit3D(cin, num_classes, activation=False, batch_norm=False, bias=True)
        self.feature_dim = num_classes if output == "logits" else cin
        _random_init(self)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [N, 3, T, H, W] in [-1, 1] -> logits [N, classes] or features [N, 1024]."""
        for name in self._order:
            x = getattr(self, name)(x)
        pooled = F.adaptive_avg_pool3d(x, 1)
        if self.output == "features":
            return pooled.flatten(1)
        return self.logits(pooled).flatten(2).mean(dim=2)

    @torch.no_grad()
    def embed(self, clips: np.ndarray, batch_size: int = 4) -> np.ndarray:
        """uint8 clips [N, T, H, W, 3] -> features [N, feature_dim] (float64)."""
        device, dtype = _model_device(self)
        out = []
        for i in range(0, len(clips), batch_size):
            x = _frames_to_tensor(clips[i : i + batch_size], device, dtype)  # [B, T, 3, H, W]
            b, t = x.shape[:2]
            x = F.interpolate(x.flatten(0, 1), size=(self.input_size,) * 2, mode="bilinear", align_corners=self.align_corners)
            x = x.view(b, t, 3, self.input_size, self.input_size).transpose(1, 2) * 2 - 1
            out.append(self(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim))


# --------------------------------------------------------------------------------------
# VideoMAE-v2 ViT (the cd-FVD encoder)
# --------------------------------------------------------------------------------------


def _sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    pos = np.arange(n_position)[:, None]
    j = np.arange(dim)[None, :]
    table = pos / np.power(10000, 2 * (j // 2) / dim)
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32)[None]


class _VitAttention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])  # keys have no bias
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class _VitMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _VitBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _VitAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _VitMlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, patch_size, tubelet_size, dim):
        super().__init__()
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(3, dim, kernel_size=k, stride=k)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoMAEv2(nn.Module):
    """VideoMAE-v2 vision transformer encoder (fine-tuning layout), mean-pooled features.

    Defaults are ViT-g/14 (`vit_giant_patch14_224`): 1408 wide, 40 blocks, 16 heads, MLP
    ratio 48/11, 16 frames in tubelets of 2. Sinusoidal position table (not learned).
    """

    def __init__(
        self,
        input_size: int = 224,
        patch_size: int = 14,
        num_frames: int = 16,
        tubelet_size: int = 2,
        embed_dim: int = 1408,
        depth: int = 40,
        num_heads: int = 16,
        mlp_ratio: float = 48 / 11,
    ):
        super().__init__()
        self.input_size, self.num_frames = input_size, num_frames
        self.patch_embed = _PatchEmbed(patch_size, tubelet_size, embed_dim)
        n = (num_frames // tubelet_size) * (input_size // patch_size) ** 2
        self.register_buffer("pos_embed", _sinusoid_table(n, embed_dim), persistent=False)
        self.blocks = nn.ModuleList([_VitBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.feature_dim = embed_dim
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [N, 3, T, H, W] in [0, 1] -> features [N, embed_dim]."""
        if x.shape[2] != self.num_frames:
            raise ValueError(f"VideoMAEv2 takes clips of {self.num_frames} frames, got {x.shape[2]}")
        x = self.patch_embed(x) + self.pos_embed.to(x.dtype)
        for blk in self.blocks:
            x = blk(x)
        return self.fc_norm(x.mean(1))

    @torch.no_grad()
    def embed(self, clips: np.ndarray, batch_size: int = 2) -> np.ndarray:
        """uint8 clips [N, T, H, W, 3] -> features [N, embed_dim] (float64)."""
        device, dtype = _model_device(self)
        out = []
        for i in range(0, len(clips), batch_size):
            x = _frames_to_tensor(clips[i : i + batch_size], device, dtype)
            b, t = x.shape[:2]
            x = F.interpolate(x.flatten(0, 1), size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
            out.append(self(x.view(b, t, 3, self.input_size, self.input_size).transpose(1, 2)).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim))


# --------------------------------------------------------------------------------------
# Loaders: real weights into the real-size classes
# --------------------------------------------------------------------------------------


def _finish(model: nn.Module, device, dtype=torch.float32) -> nn.Module:
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_inception_fid(weights_dir=None, path=None, device="cpu", download=False, **size) -> InceptionV3FID:
    """FID Inception with pytorch-fid's weights. `size` (width, input_size) only for tests."""
    model = InceptionV3FID(**size)
    load_into(model, resolve_weights("inception-fid", weights_dir, path, download), ignore_prefixes=("fc.", "AuxLogits."))
    return _finish(model, device)


def load_lpips(weights_dir=None, path=None, lin_path=None, device="cpu", download=False, **size) -> LPIPS:
    """LPIPS v0.1: torchvision's VGG16 file for the trunk, the LPIPS heads for the rest."""
    model = LPIPS(**size)
    trunk = {k: v for k, v in _load("vgg16", weights_dir, path, download).items() if k.startswith("features.")}
    heads = _load("lpips-vgg", weights_dir, lin_path, download)
    load_into_dict(model, {**trunk, **heads}, "VGG16 + LPIPS heads")
    return _finish(model, device)


def load_fvd_i3d(weights_dir=None, path=None, device="cpu", download=False, **size) -> InceptionI3d:
    """FVD's I3D (Kinetics-400 logits)."""
    model = InceptionI3d(**{"num_classes": 400, "output": "logits", **size})
    load_into(model, resolve_weights("i3d-kinetics400", weights_dir, path, download))
    return _finish(model, device)


def load_dtfvd_i3d(weights_dir=None, path=None, device="cpu", download=False, **size) -> InceptionI3d:
    """DTFVD's I3D (DTDB, 1024-d pooled features)."""
    model = InceptionI3d(**{"num_classes": 18, "output": "features", "align_corners": True, **size})
    load_into(model, resolve_weights("i3d-dtdb", weights_dir, path, download))
    return _finish(model, device)


def load_videomae_v2(weights_dir=None, path=None, device="cpu", download=False, dtype: Optional[torch.dtype] = None, **size) -> VideoMAEv2:
    """cd-FVD's VideoMAE-v2 ViT-g (SSv2 fine-tuned)."""
    model = VideoMAEv2(**size)
    load_into(model, resolve_weights("videomae-v2-g", weights_dir, path, download), ignore_prefixes=("head.",))
    # ViT-g is 1B parameters: half precision on GPU, as the cd-FVD code allows.
    if dtype is None:
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    return _finish(model, device, dtype)


def _load(key, weights_dir, path, download):
    return load_state_dict(resolve_weights(key, weights_dir, path, download))


def load_into_dict(model: nn.Module, sd: dict, what: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise MissingWeightsError(f"{what}: {len(missing)} tensors missing, e.g. {missing[:4]}")
    bad = [k for k in own if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise MissingWeightsError(f"{what}: {bad[0]} has shape {tuple(sd[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}")
    model.load_state_dict({k: sd[k] for k in own}, strict=True)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
