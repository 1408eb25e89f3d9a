"""How well surprise scores find corrupted images: Kodak (never trained on) against corrupted copies
of it, one kind of corruption at a time (:mod:`bench.corruptions`).

    python -m bench.anomaly                 # -> bench/results/anomaly.md
    python -m bench.anomaly --limit 6 --out /tmp/anomaly.md

For each kind: the image-level AUROC of the one-sided score ``scan`` ranks by (clean photos are the
negatives, their corrupted copies the positives), of each feature alone and of the two-sided
``|image|``; for the pasted patches, how often the
block with the highest surprise overlaps the patch. Scores come from the shipped statistics at their
reference quality, effort 0, no Wiener filter (only the latents' bits are needed, not the synthesis).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.common import DEFAULT_DATA, ROOT, environment, image_files, load_rgb
from bench.corruptions import CORRUPTIONS
from vaecodec import Codec
from vaecodec.latent_tools import BLOCK, FEATURES, SCORED, Calibration, Surprise, surprise


def auroc(negatives: list[float], positives: list[float]) -> float:
    """P(a positive scores above a negative), ties counting half: the Mann-Whitney statistic."""
    neg, pos = np.asarray(negatives)[None, :], np.asarray(positives)[:, None]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (neg.size * pos.size))


def overlaps(block: tuple[int, int], box: tuple[int, int, int, int]) -> bool:
    """Whether the 16 x 16 block (row, column) and the box (left, top, right, bottom) share a pixel."""
    r, c = block
    left, top, right, bottom = box
    return c * BLOCK < right and left < (c + 1) * BLOCK and r * BLOCK < bottom and top < (r + 1) * BLOCK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak")
    parser.add_argument("--limit", type=int, default=None, help="the first N images only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "anomaly.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = Codec(device="cpu")
    cal = Calibration.of(codec)
    photos = [load_rgb(p) for p in image_files(args.data, args.limit)]
    clean = [surprise(codec, img, cal) for img in photos]
    names = ["score", *FEATURES]
    rows = []
    for name, corrupt in CORRUPTIONS.items():
        scored, hits = [], []
        for i, img in enumerate(photos):
            bad, box = corrupt(img, photos, i)
            s = surprise(codec, bad, cal)
            scored.append(s)
            if box is not None:
                hits.append(overlaps(s.top_block(), box))

        def value(s: Surprise, k: str) -> float:
            return s.score if k == "score" else s.features[k]

        aucs = [auroc([value(c, k) for c in clean], [value(s, k) for s in scored]) for k in names]
        two_sided = auroc([abs(c.features["image"]) for c in clean],
                          [abs(s.features["image"]) for s in scored])
        where = f"{np.mean(hits):.2f} ({sum(hits)}/{len(hits)})" if hits else "-"
        rows.append(f"| {name} | " + " | ".join(f"{a:.3f}" for a in aucs)
                    + f" | {two_sided:.3f} | {np.mean([s.score for s in scored]):.2f} | {where} |")
        print(rows[-1], flush=True)
    clean_scores = [c.score for c in clean]
    lines = [
        "# Surprise scores: clean Kodak against corrupted copies", "",
        *environment(threads=args.threads), "",
        f"{len(photos)} Kodak photos (never trained on) and, per kind, one corrupted copy of each "
        f"(`bench/corruptions.py`). Scores at quality {cal.quality:g}, effort 0, against the shipped "
        f"statistics ({cal.photos} training photos). Clean photos score {np.mean(clean_scores):.2f} on "
        f"average (min {min(clean_scores):.2f}, max {max(clean_scores):.2f}).", "",
        "AUROC: the probability that a corrupted copy scores above a clean photo (0.5 = chance, 1 = "
        "always; below 0.5: the corruption makes images score *lower*). *score* is the one-sided score "
        f"`vaecodec scan` ranks by, the largest of {', '.join(f'*{k}*' for k in SCORED)}; then each "
        "feature alone (docs/latent-tools.md): "
        + "; ".join(f"*{k}*: {v}" for k, v in FEATURES.items())
        + ". *\\|image\\|*: the two-sided image score, which also counts an image that is unusually "
        "cheap. *top block in patch*: the fraction of pasted-patch images whose highest-surprise "
        "16 x 16 block overlaps the patch.", "",
        "| corruption | " + " | ".join(f"AUROC {k}" for k in names)
        + " | AUROC \\|image\\| | mean score | top block in patch |",
        "|---|" + "---|" * (len(names) + 3),
        *rows, "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
