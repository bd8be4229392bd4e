"""Image parametrisations and transformation robustness for feature visualisation (Olah et al., Distill 2017).

Pure tensor code. Every sample owns its random draws (initial noise and per-step transforms) through its own
``torch.Generator``, so a sample's trajectory never depends on which other samples share its batch.
"""

from __future__ import annotations

import functools
import hashlib
import math

import torch
import torch.nn.functional as F

# ImageNet's colour correlation, square root of its covariance in SVD form (Lucid), scaled by its largest column norm.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64)
COLOR_CORRELATION = (_COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()).float()
FFT_MAGIC = 4.0  # Lucid's divisor of the inverse FFT: fewer saturated pixels at the start
INIT_SD = 0.01
PAD, JITTER, SCALE, ANGLE, JITTER_LAST = 12, 8, (0.9, 1.1), 10.0, 4  # Lucid's standard_transforms


def generator(seed: int, *key: object) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and a key (model, layer, channel, parameters): one per sample."""
    digest = hashlib.sha256(repr((seed, *key)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


@functools.lru_cache(maxsize=8)
def fft_scale(h: int, w: int) -> torch.Tensor:
    """1/f amplitude of each rfft2 frequency [h, w//2+1], floored at 1/max(h, w) (the DC term); computed once per
    size (callers must not modify it)."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return (1.0 / torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / max(h, w))).float()


def fft_image(spectrum: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Spectrum [B, 3, h, w//2+1, 2] (real, imaginary) → image [B, 3, h, w] by 1/f scaling and an ortho irfft2."""
    scaled = torch.view_as_complex(spectrum.contiguous()) * fft_scale(h, w).to(spectrum.device)
    return torch.fft.irfftn(scaled, s=(h, w), dim=(-2, -1), norm="ortho") / FFT_MAGIC


def decorrelate(x: torch.Tensor) -> torch.Tensor:
    """Decorrelated colour [B, 3, H, W] → RGB by ImageNet's colour correlation (each pixel's 3-vector times C^T)."""
    return torch.einsum("bchw,dc->bdhw", x, COLOR_CORRELATION.to(x))


def initial(gen: torch.Generator, param: str, size: int) -> torch.Tensor:
    """One sample's parameters, N(0, 0.01²): a spectrum [3, size, size//2+1, 2] (fft) or pixels [3, size, size]."""
    shape = (3, size, size // 2 + 1, 2) if param == "fft" else (3, size, size)
    return torch.randn(shape, generator=gen) * INIT_SD


def to_rgb(raw: torch.Tensor, param: str, size: int) -> torch.Tensor:
    """Parameters [B, ...] → RGB in (0, 1) [B, 3, size, size]: (Fourier image), colour decorrelation, sigmoid."""
    x = fft_image(raw, size, size) if param == "fft" else raw
    return torch.sigmoid(decorrelate(x))


def draws(gen: torch.Generator, steps: int) -> torch.Tensor:
    """One sample's uniform draws for every step's transforms [steps, 6] (jitter x/y, scale, angle, jitter x/y)."""
    return torch.rand(steps, 6, generator=gen, dtype=torch.float64)


def transform_theta(u: torch.Tensor | None, batch: int, size: int, out: int) -> torch.Tensor:
    """Affine maps [B, 2, 3] (for ``affine_grid``, align_corners=False) from the model's ``out``-px input back to
    the ``size``-px image: Lucid's pad 12, jitter 8, scale 0.9–1.1, rotate ±10°, jitter 4, then a resize to
    ``out``, composed into one resampling. ``u`` [B, 6] uniform draws; None: a plain resize."""
    theta = torch.zeros(batch, 2, 3, dtype=torch.float64)
    if u is None:
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        return theta.float()
    # Edge coordinates t in [0, side] at each stage, chained from the output back to the source image.
    s = SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, 2]
    angle = torch.deg2rad(-ANGLE + 2 * ANGLE * u[:, 3])
    side1 = size + 2 * PAD - JITTER  # after pad and the first crop
    side2 = side1 * s  # after scaling
    side4 = side2 - JITTER_LAST  # after the last crop
    o1 = (JITTER * u[:, 0:2]).floor()  # crop offsets, whole pixels as Lucid's
    o2 = (JITTER_LAST * u[:, 4:6]).floor()
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # [B, 2, 2]
    # t_out = (v + 1) * out / 2; t4 = t_out * side4 / out; t3 = t4 + o2; t2 = R (t3 - c) + c; t1 = t2 / s;
    # t_src = t1 + o1 - PAD; v_src = 2 t_src / size - 1.
    lin = rot * (side4 / 2 / s * 2 / size)[:, None, None]  # d v_src / d v_out
    c = (side2 / 2)[:, None]
    t3_at_zero = side4[:, None] / 2 + o2  # t3 where v_out = 0
    t2 = torch.einsum("bij,bj->bi", rot, t3_at_zero - c) + c
    t_src = t2 / s[:, None] + o1 - PAD
    theta[:, :, :2] = lin
    theta[:, :, 2] = 2 * t_src / size - 1
    return theta.float()


def resample(rgb: torch.Tensor, theta: torch.Tensor | None, out: int) -> torch.Tensor:
    """``rgb`` [B, 3, s, s] seen through ``theta`` at ``out`` px, bilinear, outside the image gray (0.5); None:
    a plain bilinear resize (edges replicated)."""
    if theta is None:
        return F.interpolate(rgb, size=(out, out), mode="bilinear", align_corners=False)
    grid = F.affine_grid(theta.to(rgb), [rgb.shape[0], 3, out, out], align_corners=False)
    return F.grid_sample(rgb - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def centre(h: int, w: int) -> tuple[int, int]:
    """The centre unit of an h × w map (Lucid's neuron objective)."""
    return h // 2, w // 2


def angle_range() -> float:
    """The largest rotation of the standard transforms, in radians (for tests)."""
    return math.radians(ANGLE)
