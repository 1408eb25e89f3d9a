"""How close each quality gets to what the transforms can do at all: quantized against unquantized.

    python -m bench.ceiling                      # default model, qualities 1..10, first 6 Kodak images
    python -m bench.ceiling --model hp128cb-v4 --limit 24 --qualities 3,7,10

For every quality it decodes each image twice through the same g_s (and post-filter): from the
rounded latents the file carries (effort 0, no Wiener filter), and from g_a's latents as they are,
unrounded. The second is the autoencoder's own reconstruction at that quality's gains: the most that
any spending on y could buy with g_a's latents (the encoder's effort search can go past it only by
moving them, and g_s alone can draw more from latents optimized for it: bench/results/ceiling.md).
When the gap between the two closes at the top qualities, the curve's top is bounded by the
transforms' capacity, not by the prior or the coder: only a model with more latent channels (or
trained longer) raises it, which is what decides where training compute goes (docs/training.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.common import DEFAULT_DATA, environment, image_files
from bench.metrics import psnr
from vaecodec import Codec, image
from vaecodec.quality import level_of


@torch.no_grad()
def unquantized_rgb(codec: Codec, pic: image.Picture, quality: float) -> np.ndarray:
    """The picture decoded from g_a's latents at ``quality``'s gains without rounding: (H, W, 3) uint8."""
    y = codec.analysis([pic], quality)
    level = torch.tensor([level_of(quality)], device=codec.device)
    decoded = codec.synthesis(y, level, [pic.size])[0]  # the decoder's synthesis, cropped, 0..255
    return torch.round(decoded).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak")
    p.add_argument("--model", default=None, help="a weights file (default: the shipped model)")
    p.add_argument("--qualities", default="1,2,3,4,5,6,7,8,9,10")
    p.add_argument("--limit", type=int, default=6, help="first N images of --data")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    codec = Codec(args.model, device="cpu")
    pics = [image.load(f) for f in image_files(args.data, args.limit)]
    print("\n".join(environment("cpu", args.threads)))
    print(f"- model: {codec.model.name} ({codec.model.model_id.hex()}); {len(pics)} images of {args.data}\n")
    print("| quality | bpp (effort 0, no filter) | PSNR from the file's latents | PSNR unquantized "
          "| gap (dB) |")
    print("|---|---|---|---|---|")
    for q in [float(v) for v in args.qualities.split(",")]:
        bpp, coded, unquantized = [], [], []
        for pic in pics:
            data = codec.compress(pic, q, wiener=False)
            bpp.append(8 * len(data) / (pic.size[0] * pic.size[1]))
            coded.append(psnr(np.asarray(codec.decompress(data).convert("RGB")), pic.rgb))
            unquantized.append(psnr(unquantized_rgb(codec, pic, q), pic.rgb))
        a, b = float(np.mean(coded)), float(np.mean(unquantized))
        print(f"| {q:g} | {np.mean(bpp):.3f} | {a:.2f} | {b:.2f} | {b - a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
