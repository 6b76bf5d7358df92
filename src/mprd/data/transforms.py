"""Image transforms (torchvision.transforms.v2) for training, MPRD's perturbed view and testing.

MPRD §5.2 lists the CNN augmentation as CamStyle (handled by the data module's sampler), random crop,
random rotation, random colour jitter and random erasing. A random horizontal flip is added because it is
standard in the MLCR pipeline MPRD inherits (MLCR's code flips); set ``flip_p=0`` to drop it. The paper
gives no strengths; the defaults are spec MPRD.md §6 item 18 (pad-10 crop, ±10°, jitter 0.2/0.2/0.2,
erasing p = 0.5). The perturbed copy x'_i of §4.2 adds random grayscale (p = 0.2) and Gaussian blur
(kernel 5, σ ∈ [0.1, 2]).

Two interchangeable implementations of the training augmentation:

* ``build_train_transform`` / ``build_perturbed_transform``: per-image v2 pipelines (PIL or uint8 CHW
  tensor in, float (3, H, W) out).
* ``BatchAugment``: the same operations on a whole uint8 (B, 3, H, W) batch with per-sample random
  parameters, vectorised (flip + crop + rotation are one nearest-neighbour gather; jitter, grayscale,
  blur and erasing are per-sample factors and masks). Per-image transforms on small re-ID crops are
  dominated by per-call overhead: on one CPU core BatchAugment costs ~0.09 vs ~0.7 ms/image at 64x32 and
  ~0.26 vs ~0.8 ms at 128x64; at 256x128 the CPU gain is small, but it also runs on the GPU (~16k
  images/s on an H100), see ``benchmarks/bench_dataloader.py``.

Pipeline order (both implementations): resize → flip → pad + random crop → rotation → to float in
[0, 1] → colour jitter (random op order per image) → [grayscale → blur] → normalise → random erasing
(value 0, i.e. the mean colour). Colour operations run in float, so there is no uint8 rounding between
them; the two implementations then agree up to float rounding for the same random parameters (tested).
Remaining differences: the sampling of random parameters (not the same random stream), and the hue jitter
of ``BatchAugment`` loops over images (hue is 0 by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as nnf
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
GRAY_WEIGHTS: tuple[float, float, float] = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision

TRAIN_KEYS = frozenset({"pad", "rotation", "jitter", "erasing_p", "flip_p"})
PERTURB_KEYS = frozenset({"grayscale_p", "blur_kernel", "blur_sigma", "blur_p"})


def _check_size(height: int, width: int) -> None:
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got mean={list(mean)}, std={list(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be positive, got {list(std)}")


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


def _jitter_ranges(jitter: Sequence[float | Sequence[float]]) -> list[tuple[float, float] | None]:
    """(brightness, contrast, saturation, hue) → [min, max] factor ranges as torchvision defines them.

    A number b means factors in [max(0, 1 - b), 1 + b] (hue: shifts in [-h, h]); a pair is used as given.
    None marks an operation that is off (0 strength).
    """
    if len(jitter) != 4:
        raise ValueError(f"jitter must be (brightness, contrast, saturation, hue), got {list(jitter)}")
    out: list[tuple[float, float] | None] = []
    for k, value in enumerate(jitter):
        hue = k == 3
        if isinstance(value, (int, float)):
            if value < 0 or (hue and value > 0.5):
                limit = ", <= 0.5 for hue" if hue else ""
                raise ValueError(f"jitter[{k}] = {value} out of range (expected >= 0{limit})")
            if value == 0:
                out.append(None)
                continue
            lo, hi = (-value, value) if hue else (max(0.0, 1.0 - value), 1.0 + value)
        else:
            lo, hi = (float(value[0]), float(value[1]))
            if lo > hi or (not hue and lo < 0) or (hue and (lo < -0.5 or hi > 0.5)):
                raise ValueError(f"jitter[{k}] range {value} invalid (expected min <= max, factors >= 0, hue in "
                                 "[-0.5, 0.5])")
            if (hue and lo == hi == 0.0) or (not hue and lo == hi == 1.0):
                out.append(None)
                continue
        out.append((lo, hi))
    return out


# ----------------------------------------------------------------------------------------------------------
# Per-image v2 pipelines
# ----------------------------------------------------------------------------------------------------------
def _augment_steps(
    height: int, width: int, pad: int, rotation: float, jitter: Sequence[float], flip_p: float
) -> tuple[list[v2.Transform], list[v2.Transform]]:
    """(geometric steps on uint8, colour steps on float) of the training pipeline."""
    _check_prob("flip_p", flip_p)
    if pad < 0 or rotation < 0:
        raise ValueError(f"pad and rotation must be >= 0, got pad={pad}, rotation={rotation}")
    geometric: list[v2.Transform] = [v2.ToImage(), v2.Resize((height, width), antialias=True)]
    if flip_p > 0:
        geometric.append(v2.RandomHorizontalFlip(flip_p))
    if pad > 0:
        geometric.append(v2.RandomCrop((height, width), padding=int(pad), fill=0))
    if rotation > 0:
        geometric.append(v2.RandomRotation(float(rotation), interpolation=v2.InterpolationMode.NEAREST, fill=0))
    colour: list[v2.Transform] = [v2.ToDtype(torch.float32, scale=True)]
    ranges = _jitter_ranges(jitter)
    if any(r is not None for r in ranges):
        colour.append(v2.ColorJitter(*ranges))
    return geometric, colour


def _finish(mean: Sequence[float], std: Sequence[float], erasing_p: float) -> list[v2.Transform]:
    _check_prob("erasing_p", erasing_p)
    steps: list[v2.Transform] = [v2.Normalize(list(mean), list(std))]
    if erasing_p > 0:
        steps.append(v2.RandomErasing(p=erasing_p, value=0.0))
    steps.append(v2.ToPureTensor())
    return steps


def _perturb_steps(grayscale_p: float, blur_kernel: int, blur_sigma: Sequence[float], blur_p: float
                   ) -> list[v2.Transform]:
    _check_prob("grayscale_p", grayscale_p)
    _check_prob("blur_p", blur_p)
    if blur_kernel < 1 or blur_kernel % 2 == 0:
        raise ValueError(f"blur_kernel must be a positive odd integer, got {blur_kernel}")
    if not 0.0 < blur_sigma[0] <= blur_sigma[1]:
        raise ValueError(f"blur_sigma must be (min, max) with 0 < min <= max, got {list(blur_sigma)}")
    steps: list[v2.Transform] = []
    if grayscale_p > 0:
        steps.append(v2.RandomGrayscale(p=grayscale_p))
    if blur_p > 0:
        blur = v2.GaussianBlur(int(blur_kernel), sigma=(float(blur_sigma[0]), float(blur_sigma[1])))
        steps.append(blur if blur_p >= 1 else v2.RandomApply([blur], p=blur_p))
    return steps


def build_train_transform(
    height: int,
    width: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    pad: int = 10,
    rotation: float = 10.0,
    jitter: Sequence[float] = (0.2, 0.2, 0.2, 0.0),
    erasing_p: float = 0.5,
    flip_p: float = 0.5,
) -> v2.Compose:
    """MPRD §5.2 training augmentation (+ flip): PIL or uint8 CHW in, float (3, height, width) out."""
    _check_size(height, width)
    _check_stats(mean, std)
    geometric, colour = _augment_steps(height, width, pad, rotation, jitter, flip_p)
    return v2.Compose(geometric + colour + _finish(mean, std, erasing_p))


def build_perturbed_transform(
    height: int,
    width: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    pad: int = 10,
    rotation: float = 10.0,
    jitter: Sequence[float] = (0.2, 0.2, 0.2, 0.0),
    erasing_p: float = 0.5,
    flip_p: float = 0.5,
    grayscale_p: float = 0.2,
    blur_kernel: int = 5,
    blur_sigma: Sequence[float] = (0.1, 2.0),
    blur_p: float = 1.0,
) -> v2.Compose:
    """MPRD's perturbed view x'_i (§4.2): the training augmentation + random grayscale + Gaussian blur."""
    _check_size(height, width)
    _check_stats(mean, std)
    geometric, colour = _augment_steps(height, width, pad, rotation, jitter, flip_p)
    perturb = _perturb_steps(grayscale_p, blur_kernel, blur_sigma, blur_p)
    return v2.Compose(geometric + colour + perturb + _finish(mean, std, erasing_p))


def build_test_transform(
    height: int, width: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """Resize + normalise. Also works on a uint8 (B, 3, H, W) batch (every step is deterministic)."""
    _check_size(height, width)
    _check_stats(mean, std)
    return v2.Compose([
        v2.ToImage(),
        v2.Resize((height, width), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
        v2.ToPureTensor(),
    ])


# ----------------------------------------------------------------------------------------------------------
# Batched augmentation
# ----------------------------------------------------------------------------------------------------------
def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (hi - lo) + lo


def batch_geometric(
    images: torch.Tensor, flip: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, angle: torch.Tensor
) -> torch.Tensor:
    """Per-sample flip → shift → rotation of a (B, C, H, W) batch as one nearest-neighbour gather.

    Equals ``F.horizontal_flip`` (if ``flip``), then a pad-p + crop at offset (p + dx, p + dy) (i.e.
    out[y, x] = in[y + dy, x + dx], zero outside), then ``F.rotate(angle°, NEAREST, fill=0)``
    (counter-clockwise, about the centre), up to rounding ties of the nearest-neighbour lookup.
    """
    b, c, h, w = images.shape
    dev = images.device
    flip, dx, dy = flip.to(dev), dx.to(dev).long(), dy.to(dev).long()
    theta = angle.to(dev, torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    ys = torch.arange(h, dtype=torch.float32, device=dev)[None, :, None] - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32, device=dev)[None, None, :] - (w - 1) / 2
    # inverse rotation: output pixel (x, y) reads the cropped image at pixel q = round(R(-theta)(x, y)) ...
    qx = torch.round(cos * xs - sin * ys + (w - 1) / 2)
    qy = torch.round(sin * xs + cos * ys + (h - 1) / 2)
    # ... which must lie inside the crop window (else the rotation fills 0), and the window pixel q reads the
    # (flipped) input at q + (dx, dy) (else the zero padding): both together bound q per sample
    def bounds(d: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (-d).clamp(min=0).float()[:, None, None], (size - d).clamp(max=size).float()[:, None, None]

    (lox, hix), (loy, hiy) = bounds(dx, w), bounds(dy, h)
    valid = (qx >= lox) & (qx < hix) & (qy >= loy) & (qy < hiy)
    # flat input index (qy + dy) * w + x_in with x_in = qx + dx, or w - 1 - (qx + dx) when flipped; float
    # arithmetic is exact here (values < h * w) and much faster than int64 broadcasting on the CPU
    sign = torch.where(flip, -1.0, 1.0)[:, None, None]
    shift = (torch.where(flip, w - 1 - dx, dx) + dy * w).float()[:, None, None]
    flat = (qy * w + sign * qx + shift).masked_fill_(~valid, 0).long().view(b, 1, h * w)
    out = images.reshape(b, c, h * w).gather(2, flat.expand(b, c, h * w)).view(b, c, h, w)
    return out * valid[:, None].to(out.dtype)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, bl = x.unbind(1)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + bl * GRAY_WEIGHTS[2]).unsqueeze(1)


def batch_color_op(x: torch.Tensor, op: int, factor: torch.Tensor) -> torch.Tensor:
    """One colour-jitter operation on float [0, 1] images with per-sample factors.

    op 0 brightness, 1 contrast, 2 saturation (torchvision's definitions: blend with black, the mean
    luma, the luma image; ITU-R 601 luma), 3 hue.
    """
    f = factor.to(x.device, x.dtype).view(-1, 1, 1, 1)
    if op == 0:
        return (x * f).clamp_(0.0, 1.0)
    if op in (1, 2):
        other = _gray(x)
        if op == 1:
            other = other.mean(dim=(1, 2, 3), keepdim=True)
        return (x * f).add_(other * (1 - f)).clamp_(0.0, 1.0)
    # hue: rare (default 0), so a loop over images with torchvision's kernel is good enough
    return torch.stack([F.adjust_hue(img, float(f)) for img, f in zip(x, factor.tolist(), strict=True)])


def batch_gaussian_blur(x: torch.Tensor, kernel: int, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one σ per sample, reflect padding (as ``F.gaussian_blur``)."""
    b, c, h, w = x.shape
    t = torch.arange(kernel, dtype=x.dtype, device=x.device) - (kernel - 1) / 2
    k1 = torch.softmax(-(t[None] ** 2) / (2 * sigma.to(x.device, x.dtype)[:, None] ** 2), dim=1)  # (B, k)
    weight = k1.repeat_interleave(c, dim=0)  # one kernel per (sample, channel) group
    half = kernel // 2
    y = nnf.pad(x.reshape(1, b * c, h, w), (half, half, half, half), mode="reflect")
    y = nnf.conv2d(y, weight.view(b * c, 1, 1, kernel), groups=b * c)
    y = nnf.conv2d(y, weight.view(b * c, 1, kernel, 1), groups=b * c)
    return y.view(b, c, h, w)


def batch_erase(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, eh: torch.Tensor, ew: torch.Tensor
                ) -> torch.Tensor:
    """Zero the rectangle [top, top + eh) × [left, left + ew) of each sample (eh = 0: nothing)."""
    _, _, h, w = x.shape
    top, left, eh, ew = (v.to(x.device) for v in (top, left, eh, ew))
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys >= top[:, None, None]) & (ys < (top + eh)[:, None, None])
              & (xs >= left[:, None, None]) & (xs < (left + ew)[:, None, None]))
    return x.masked_fill(inside[:, None], 0.0)


@dataclass
class BatchAugment:
    """Training (or perturbed) augmentation of a uint8 (B, 3, H, W) batch; returns float (B, 3, H, W).

    Works on any device (random parameters are drawn on the CPU, then moved), e.g. on the GPU after
    the batch transfer.

    Same operations, order and parameter distributions as ``build_train_transform`` (plus
    ``build_perturbed_transform``'s grayscale/blur when ``grayscale_p``/``blur_p`` > 0), drawn
    independently per sample from the global torch RNG (or ``generator``), so DataLoader worker seeding
    applies unchanged.
    """

    height: int
    width: int
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    pad: int = 10
    rotation: float = 10.0
    jitter: Sequence[float] = (0.2, 0.2, 0.2, 0.0)
    erasing_p: float = 0.5
    flip_p: float = 0.5
    grayscale_p: float = 0.0
    blur_kernel: int = 5
    blur_sigma: Sequence[float] = (0.1, 2.0)
    blur_p: float = 0.0
    erasing_scale: tuple[float, float] = (0.02, 0.33)
    erasing_ratio: tuple[float, float] = (0.3, 3.3)
    _ranges: list = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_size(self.height, self.width)
        _check_stats(self.mean, self.std)
        _augment_steps(self.height, self.width, self.pad, self.rotation, self.jitter, self.flip_p)  # validates
        _finish(self.mean, self.std, self.erasing_p)
        _perturb_steps(self.grayscale_p, self.blur_kernel, self.blur_sigma, self.blur_p)
        self._ranges = _jitter_ranges(self.jitter)

    @classmethod
    def perturbed(cls, height: int, width: int, mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD, **kwargs: object) -> BatchAugment:
        """Batched ``build_perturbed_transform`` (grayscale p 0.2, blur always, unless overridden)."""
        kwargs = {"grayscale_p": 0.2, "blur_p": 1.0, **kwargs}
        return cls(height, width, mean, std, **kwargs)  # type: ignore[arg-type]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"BatchAugment expects a (B, 3, H, W) batch, got shape {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != (self.height, self.width):
            images = F.resize(images, [self.height, self.width], antialias=True)
        b = images.shape[0]
        g = generator
        x = self._geometric(images, g).to(torch.float32).div_(255.0)
        x = self._jitter(x, g)
        if self.grayscale_p > 0:
            pick = (torch.rand(b, generator=g) < self.grayscale_p).to(x.device)
            x = torch.where(pick[:, None, None, None], _gray(x).expand_as(x), x)
        if self.blur_p > 0:
            sigma = _uniform(b, float(self.blur_sigma[0]), float(self.blur_sigma[1]), g)
            blurred = batch_gaussian_blur(x, int(self.blur_kernel), sigma)
            x = blurred if self.blur_p >= 1 else torch.where(
                (torch.rand(b, generator=g) < self.blur_p).to(x.device)[:, None, None, None], blurred, x)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        if self.erasing_p > 0:
            x = batch_erase(x, *self._erase_boxes(b, g))
        return x

    def _geometric(self, images: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        b = images.shape[0]
        if self.flip_p <= 0 and self.pad <= 0 and self.rotation <= 0:
            return images
        flip = torch.rand(b, generator=g) < self.flip_p
        p = int(self.pad)
        # pad-p + random crop picks an offset in [0, 2p] per axis, i.e. a shift in [-p, p]
        dx = torch.randint(-p, p + 1, (b,), generator=g)
        dy = torch.randint(-p, p + 1, (b,), generator=g)
        angle = _uniform(b, -float(self.rotation), float(self.rotation), g)
        return batch_geometric(images, flip, dx, dy, angle)

    def _jitter(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        ops = [k for k, r in enumerate(self._ranges) if r is not None]
        if not ops:
            return x
        b = x.shape[0]
        factors = {k: _uniform(b, *self._ranges[k], g) for k in ops}  # type: ignore[misc]
        # torchvision draws a random op order per image; group images by their order
        order = torch.argsort(torch.rand(b, len(ops), generator=g), dim=1)
        out = torch.empty_like(x)  # every row belongs to exactly one order group
        for perm in torch.unique(order, dim=0):
            rows = (order == perm).all(dim=1).nonzero().squeeze(1)
            rows_x = rows.to(x.device)
            y = x[rows_x]
            for j in perm.tolist():
                y = batch_color_op(y, ops[j], factors[ops[j]][rows])
            out[rows_x] = y
        return out

    def _erase_boxes(self, b: int, g: torch.Generator | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """RandomErasing's box rule, vectorised: 10 tries per sample, the first that fits wins."""
        h, w, tries = self.height, self.width, 10
        area = h * w * _uniform(b * tries, *self.erasing_scale, g).view(b, tries)
        log_r = _uniform(b * tries, math.log(self.erasing_ratio[0]), math.log(self.erasing_ratio[1]), g)
        ratio = torch.exp(log_r).view(b, tries)
        eh = torch.round(torch.sqrt(area * ratio)).long()
        ew = torch.round(torch.sqrt(area / ratio)).long()
        fits = (eh < h) & (ew < w)
        first = torch.argmax(fits.to(torch.int8), dim=1)
        ok = fits.any(dim=1) & (torch.rand(b, generator=g) < self.erasing_p)
        eh = torch.where(ok, eh.gather(1, first[:, None]).squeeze(1), 0)
        ew = torch.where(ok, ew.gather(1, first[:, None]).squeeze(1), 0)
        top = (torch.rand(b, generator=g) * (h - eh + 1)).long()
        left = (torch.rand(b, generator=g) * (w - ew + 1)).long()
        return top, left, eh, ew
