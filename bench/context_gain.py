"""Does the checkerboard context's gain tell pasted noise from natural texture? A negative result,
kept so that it can be rerun (docs/latent-tools.md, "How well it works").

    python -m bench.context_gain            # -> bench/results/context_gain.md

The context model predicts the non-anchor half of y from the decoded anchors; on natural texture it
should save bits over h_s's parameters alone, on i.i.d. noise nothing. Per 64 x 64-pixel window
(the windows of the *local* feature) this measures the non-anchors' bits under the context's
parameters against the same latents (``round(y_hat - mean)`` for h_s's mean) under h_s's parameters
alone, as ``deficit = log2((ctx + floor) / (h_s + floor))`` (0: no gain; the floor is
:data:`vaecodec.latent_tools.FLOOR_BPP` per pixel, as for the block costs), and reports the
AUROC of three image-level features against clean Kodak: the deficit of the dearest window, its
largest over windows, and the whole image's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.anomaly import auroc
from bench.common import DEFAULT_DATA, ROOT, environment, image_files, load_rgb
from bench.corruptions import CORRUPTIONS
from vaecodec import Codec
from vaecodec.latent_tools import FLOOR_BPP, REFERENCE_QUALITY, WINDOW, _fold, block_pixels, window_cost
from vaecodec.prior import checkerboard_anchors, hs_tiled

KINDS = ("patch of noise", "noise σ=10", "noise σ=25")
FEATURES = {
    "dearest window": "the deficit of the window with the most bits per pixel",
    "largest": "the largest deficit over windows",
    "image": "the whole image's log2(ctx / h_s)",
}


def deficits(codec: Codec, img: object) -> dict[str, float]:
    """The :data:`FEATURES` of one image at the reference quality."""
    lat = codec.encode_latents(img, REFERENCE_QUALITY)
    latent = codec.model.latent
    hs_mean, hs_index = (t[0].numpy() for t in hs_tiled(latent.h_s, torch.from_numpy(lat.z)[None]))
    y_hat = lat.y + lat.mean / 256.0
    hs_bits = latent.y_coder.tables.symbol_bits(np.round(y_hat - hs_mean / 256.0).astype(np.int64), hs_index)
    non_anchor = ~checkerboard_anchors(*lat.y.shape[1:])[0, 0].numpy()
    pixels = block_pixels(lat.size)
    parts = ((lat.y_bits, non_anchor), (hs_bits, non_anchor), (lat.y_bits, ~non_anchor))
    ctx, hs, anchor = (WINDOW**2 * window_cost(_fold((b * m).sum(0), *pixels.shape)) for b, m in parts)
    area = WINDOW**2 * window_cost(pixels)
    deficit = np.log2((ctx + FLOOR_BPP * area) / (hs + FLOOR_BPP * area))
    dearest = np.unravel_index(int(np.argmax((ctx + anchor) / area)), area.shape)
    return {"dearest window": float(deficit[dearest]), "largest": float(deficit.max()),
            "image": float(np.log2(ctx.sum() / hs.sum()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak")
    parser.add_argument("--limit", type=int, default=None, help="the first N images only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "context_gain.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = Codec(device="cpu")
    photos = [load_rgb(p) for p in image_files(args.data, args.limit)]
    clean = [deficits(codec, img) for img in photos]
    rows = []
    for kind in KINDS:
        bad = [deficits(codec, CORRUPTIONS[kind](img, photos, i)[0]) for i, img in enumerate(photos)]
        rows.append(f"| {kind} | " + " | ".join(
            f"{auroc([c[k] for c in clean], [b[k] for b in bad]):.3f}" for k in FEATURES) + " |")
        print(rows[-1], flush=True)
    mean = {k: np.mean([c[k] for c in clean]) for k in FEATURES}
    lines = [
        "# The context model's gain as a surprise feature (not shipped)", "",
        *environment(threads=args.threads), "",
        f"{len(photos)} Kodak photos and one corrupted copy of each per kind (`bench/corruptions.py`), "
        f"quality {REFERENCE_QUALITY:g}, effort 0. Deficit per 64 x 64 window: log2 of the non-anchors' "
        "bits under the context's parameters over their bits under h_s's alone (0: the context saves "
        "nothing; `bench/context_gain.py`). AUROC of each feature alone, a corrupted copy scoring "
        "higher (less gain) than a clean photo: " + "; ".join(f"*{k}*: {v}" for k, v in FEATURES.items())
        + ". Clean photos' mean deficits: " + ", ".join(f"*{k}* {v:+.4f}" for k, v in mean.items()) + ".", "",
        "| corruption | " + " | ".join(f"AUROC {k}" for k in FEATURES) + " |",
        "|---|" + "---|" * len(FEATURES),
        *rows, "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
