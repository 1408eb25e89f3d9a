"""Training data: the photos of a folder held in memory, random crops of them, and the pack that
carries them to a machine the shared data cannot reach."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

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


class CropSampler:
    """Random crops of the training photos: random downscale in [0.5, 1] for half of them, flips.

    The photos live as uint8 tensors on the training device and the crops are cut, resized
    (bicubic with antialiasing, as PIL does it) and flipped there, so a GPU is never left waiting for
    a CPU data pipeline. Every random decision comes from one CPU ``torch.Generator`` whose state the
    checkpoints keep, which makes resuming exact.
    """

    def __init__(self, images: list[np.ndarray], crop: int, seed: int, device: torch.device) -> None:
        self.images = [torch.from_numpy(img.copy()).permute(2, 0, 1).to(device) for img in images]
        self.crop = crop
        self.gen = torch.Generator().manual_seed(seed)

    def _uniform(self) -> float:
        return torch.rand((), generator=self.gen).item()

    def _int(self, high: int) -> int:
        return int(torch.randint(high, (), generator=self.gen))

    def sample(self) -> torch.Tensor:
        """One crop, (3, crop, crop) float in [0, 1]."""
        img = self.images[self._int(len(self.images))]
        _, h, w = img.shape
        scale = 0.5 + 0.5 * self._uniform() if self._uniform() < 0.5 else 1.0
        size = min(round(self.crop / scale), h, w)
        top, left = self._int(h - size + 1), self._int(w - size + 1)
        patch = img[:, top : top + size, left : left + size].float()
        if size != self.crop:
            patch = F.interpolate(patch[None], size=(self.crop, self.crop), mode="bicubic", antialias=True,
                                  align_corners=False)[0].clamp(0, 255).round()
        flips = [d for d, p in ((2, self._uniform()), (1, self._uniform())) if p < 0.5]
        return (patch.flip(flips) if flips else patch) / 255

    def batch(self, n: int) -> torch.Tensor:
        return torch.stack([self.sample() for _ in range(n)])


def pack(data: Path, out: Path, budget_mib: float, val_images: int) -> None:
    """Copy the training photos, re-encoded to fit ``budget_mib``, and the validation images into
    ``out`` (``train/``, ``kodak/``), for machines the shared data cannot reach (a lent device takes
    only a limited amount with it, code and weights included: docs/training.md, "On a lent GPU").

    The photos become AVIF 4:4:4 at the highest quality whose total fits. AVIF, not JPEG: the
    training targets are these re-encoded photos, so their error is a ceiling on what the high
    quality levels can learn, and AVIF keeps far more of the originals than JPEG in the same bytes
    (docs/training.md). 4:4:4 because 4:2:0 would teach the codec that colour carries no detail.
    """
    photos = {}
    for path in image_files(data / "train"):
        try:
            photos[path.stem] = Image.open(path).convert("RGB")
        except (OSError, ValueError) as exc:
            print(f"warning: skipping {path}: {exc}", flush=True)

    def encode(name: str, quality: int) -> bytes:
        buf = io.BytesIO()
        photos[name].save(buf, "AVIF", quality=quality, subsampling="4:4:4", speed=6)
        return buf.getvalue()

    def encoded(quality: int, names: list[str]) -> dict[str, bytes]:
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            return dict(zip(names, pool.map(lambda n: encode(n, quality), names), strict=True))

    budget, names = budget_mib * 2**20, sorted(photos)
    for quality in range(95, 9, -2):
        sample = encoded(quality, names[::10])
        if sum(map(len, sample.values())) * len(names) / len(sample) > 0.98 * budget:
            continue  # the estimate from every 10th photo already misses the budget
        blobs = encoded(quality, names)
        if sum(map(len, blobs.values())) <= budget:
            break
    else:
        raise SystemExit(f"{len(names)} photos do not fit {budget_mib} MiB even at AVIF quality 11")
    (out / "train").mkdir(parents=True, exist_ok=True)
    for name, blob in blobs.items():
        (out / "train" / f"{name}.avif").write_bytes(blob)
    (out / "kodak").mkdir(exist_ok=True)
    for path in sorted((data / "kodak").glob("*.png"))[:val_images]:
        (out / "kodak" / path.name).write_bytes(path.read_bytes())
    total = sum(map(len, blobs.values())) / 2**20
    print(f"packed {len(blobs)} photos as AVIF 4:4:4 quality {quality} ({total:.1f} MiB) and "
          f"{val_images} validation images into {out}", flush=True)
