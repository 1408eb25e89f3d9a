"""Training data: the photos of a folder held in memory, random crops of them, and the pack that
carries them to a machine the shared data cannot reach."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from vaecodec.image import IMAGE_EXTENSIONS


def image_files(folder: Path) -> list[Path]:
    """The images of a folder, sorted by name for reproducibility."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def load_folder(folder: Path, limit: int | None = None) -> list[np.ndarray]:
    """All readable images of a folder (the first ``limit``) as HxWx3 uint8 arrays, in name order.

    Unreadable files (the shared training set has an empty one) are skipped with a warning, so one
    bad file never stops a long run. Decoding runs on a thread pool (Pillow's decoders release the
    GIL): decoding a packed AVIF training set on one core would waste device time.
    """
    files = image_files(folder)[:limit]

    def read(path: Path) -> np.ndarray | None:
        try:
            return np.asarray(Image.open(path).convert("RGB"))
        except (OSError, ValueError) as exc:
            print(f"warning: skipping {path}: {exc}", flush=True)
            return None

    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        images = [img for img in pool.map(read, files) if img is not None]
    if not images:
        raise SystemExit(f"no readable images in {folder}")
    return images


class Crops(NamedTuple):
    """The random decisions of one batch of crops, one entry per crop: which photo, the side of the
    square cut from it (resized to the crop size), where, and the flips."""

    image: torch.Tensor
    size: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    flip_v: torch.Tensor
    flip_h: torch.Tensor


def _resize_weights(size: torch.Tensor, crop: int, span: int) -> torch.Tensor:
    """(B, crop, span) matrices that resize a line of ``size[b]`` samples (the rest of ``span``
    unused) to ``crop`` samples: bicubic (a = -0.5) with antialiasing, PIL's filter and
    ``F.interpolate(..., antialias=True)``'s, stretched by the downscale factor and each row
    normalized. A crop cut at the output size gets the identity."""
    size = size.to(torch.float64)[:, None, None]
    scale = size / crop
    center = (torch.arange(crop, dtype=torch.float64, device=size.device)[None, :, None] + 0.5) * scale
    p = torch.arange(span, dtype=torch.float64, device=size.device)[None, None, :]
    x = ((p + 0.5 - center) / scale.clamp(min=1)).abs()
    a = -0.5
    w = torch.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    torch.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, torch.zeros_like(x)))
    w = w * (p < size).to(w.dtype)  # beyond the cut square; the kernel itself is 0 beyond |x| = 2
    return (w / w.sum(-1, keepdim=True)).float()


class CropSampler:
    """Random crops of the training photos: random downscale in [0.5, 1] for half of them, flips.

    The photos live on the training device as one flat uint8 tensor, and a batch is made there in a
    few batched kernels whatever its size: one gather cuts every crop's square (at most twice the
    crop size) at once, and two batched matrix products resize them all, each with its own bicubic
    antialiased weights (:func:`_resize_weights`, the flips folded into them). A GPU step is never
    left waiting on a CPU data pipeline nor on a few kernels per crop. Every random decision of a
    batch is drawn at once from one CPU ``torch.Generator`` whose state the checkpoints keep, which
    makes resuming exact.
    """

    def __init__(self, images: list[np.ndarray], crop: int, seed: int, device: torch.device) -> None:
        self.crop, self.span = crop, 2 * crop  # the largest square a crop is cut from (scale 0.5)
        self.shapes = torch.tensor([img.shape[:2] for img in images])
        sizes = self.shapes[:, 0] * self.shapes[:, 1] * 3
        self.offsets = (torch.cumsum(sizes, 0) - sizes).to(device)
        flat = [torch.tensor(img).flatten() for img in images]
        self.pixels = torch.cat(flat).to(device)
        self.gen = torch.Generator().manual_seed(seed)
        self.device = device

    def __len__(self) -> int:
        return len(self.shapes)

    def draw(self, n: int) -> Crops:
        """The decisions of ``n`` crops, all from the sampler's generator."""
        u = torch.rand(n, 6, generator=self.gen, dtype=torch.float64)
        image = torch.randint(len(self), (n,), generator=self.gen)
        h, w = self.shapes[image].unbind(1)
        scale = torch.where(u[:, 0] < 0.5, 0.5 + 0.5 * u[:, 1], torch.ones(n, dtype=torch.float64))
        size = torch.minimum(torch.round(self.crop / scale).long(), torch.minimum(h, w))
        top = (u[:, 2] * (h - size + 1)).long()
        left = (u[:, 3] * (w - size + 1)).long()
        return Crops(image, size, top, left, u[:, 4] < 0.5, u[:, 5] < 0.5)

    def cut(self, c: Crops) -> torch.Tensor:
        """The crops of these decisions, (n, 3, crop, crop) float in [0, 1], rounded to whole grey
        levels as a resized 8-bit photo would be."""
        dev, span = self.device, self.span
        c = Crops(*(t.to(dev) for t in c))
        width = self.shapes[:, 1].to(dev)[c.image]
        k = torch.arange(span, device=dev)
        rows = (c.top[:, None] + torch.minimum(k[None], c.size[:, None] - 1))[:, :, None]
        cols = (c.left[:, None] + torch.minimum(k[None], c.size[:, None] - 1))[:, None, :]
        base = self.offsets[c.image][:, None, None] + 3 * (rows * width[:, None, None] + cols)
        square = self.pixels[base[..., None] + torch.arange(3, device=dev)].permute(0, 3, 1, 2).float()
        r = _resize_weights(c.size, self.crop, span)
        r_rows = torch.where(c.flip_v[:, None, None], r.flip(1), r)[:, None]
        r_cols = torch.where(c.flip_h[:, None, None], r.flip(1), r)[:, None]
        return (r_rows @ square @ r_cols.transpose(-1, -2)).clamp(0, 255).round() / 255

    def batch(self, n: int) -> torch.Tensor:
        return self.cut(self.draw(n))


def pack(data: Path, out: Path, budget_mib: float, val_images: int, speed: int = 6) -> None:
    """Copy the training photos, re-encoded to fit ``budget_mib``, and the validation images into
    ``out`` (``train/``, ``kodak/``), for machines the shared data cannot reach (a lent device takes
    only a limited amount with it, code and weights included: docs/training.md, "On a lent GPU").

    The photos become AVIF 4:4:4 at the highest quality whose total fits. AVIF, not JPEG or lossy
    WebP: the training targets are these re-encoded photos, so their error is a ceiling on what the
    high quality levels can learn, and AVIF keeps far more of the originals in the same bytes
    (docs/training.md). 4:4:4 because 4:2:0 would teach the codec that colour carries no detail.
    ``speed`` is libavif's (0 slowest and best .. 10): a slower encoder fits a higher quality in the
    same bytes. The quality is found by bisection on every 10th photo, whose PSNR against the
    originals is printed: the number to record beside the pack.
    """
    photos = {}
    for path in image_files(data / "train"):
        try:
            photos[path.stem] = Image.open(path).convert("RGB")
        except (OSError, ValueError) as exc:
            print(f"warning: skipping {path}: {exc}", flush=True)

    def encode(name: str, quality: int) -> bytes:
        buf = io.BytesIO()
        photos[name].save(buf, "AVIF", quality=quality, subsampling="4:4:4", speed=speed)
        return buf.getvalue()

    def encoded(quality: int, names: list[str]) -> dict[str, bytes]:
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            return dict(zip(names, pool.map(lambda n: encode(n, quality), names), strict=True))

    budget, names = budget_mib * 2**20, sorted(photos)
    sample = names[::10]

    def estimate(quality: int) -> float:
        return sum(map(len, encoded(quality, sample).values())) * len(names) / len(sample)

    lo, hi = 10, 100  # the highest quality whose estimate fits 98 % of the budget, by bisection
    if estimate(lo) > 0.98 * budget:
        raise SystemExit(f"{len(names)} photos do not fit {budget_mib} MiB even at AVIF quality {lo}")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if estimate(mid) <= 0.98 * budget else (lo, mid - 1)
    for quality in range(lo, 9, -1):  # the estimate may miss by a little: step down until it fits
        blobs = encoded(quality, names)
        if sum(map(len, blobs.values())) <= budget:
            break
    else:
        raise SystemExit(f"{len(names)} photos do not fit {budget_mib} MiB even at AVIF quality 10")
    psnrs = []
    for name in sample:
        ref = np.asarray(photos[name], dtype=np.float64)
        got = np.asarray(Image.open(io.BytesIO(blobs[name])).convert("RGB"), dtype=np.float64)
        psnrs.append(10 * np.log10(255**2 / max(float(np.mean((ref - got) ** 2)), 1e-10)))
    (out / "train").mkdir(parents=True, exist_ok=True)
    for name, blob in blobs.items():
        (out / "train" / f"{name}.avif").write_bytes(blob)
    (out / "kodak").mkdir(exist_ok=True)
    for path in sorted((data / "kodak").glob("*.png"))[:val_images]:
        (out / "kodak" / path.name).write_bytes(path.read_bytes())
    total = sum(map(len, blobs.values())) / 2**20
    print(f"packed {len(blobs)} photos as AVIF 4:4:4 quality {quality} speed {speed} ({total:.1f} MiB; "
          f"{np.mean(psnrs):.2f} dB against the originals, mean over every 10th photo) and {val_images} "
          f"validation images into {out}", flush=True)
