"""What the integer-exact prior costs in rate, measured against the float prior it was exported from.

    python -m bench.prior_cost --ckpt runs/hp64/last.pt [--data DIR] [--qualities 1,3,7,10]

For each image and quality, three rates in bits per pixel:

* ``float``: the training model's exact rate of the rounded latents under its float h_s with a
  continuous scale (the ideal the training objective optimizes);
* ``integer``: the ideal code length of the same image's symbols under the exported integer h_s and
  the integer PMF tables (64 quantized scales, trimmed z tails);
* ``file``: the real .vaez size (ANS overhead, escapes and the header included).

``integer / float - 1`` is the cost of making the prior bit-exact; ``file / integer - 1`` is the
coder and container overhead. Results go to ``bench/results/prior_cost.md``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import DEFAULT_DATA, ROOT, environment
from vaecodec import Codec, image
from vaecodec.codec import quality_to_level
from vaecodec.model import ModelConfig, VAEModel
from vaecodec.weights import export_model


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True, help="training checkpoint (runs/NAME/last.pt)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak")
    p.add_argument("--qualities", default="1,3,7,10")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prior_cost.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    model = VAEModel(ModelConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "candidate.pt"
        export_model(model, weights)
        codec = Codec(weights, device="cpu")

    files = sorted(args.data.glob("*.png"))[: args.limit]
    rows = []
    for q in [float(v) for v in args.qualities.split(",")]:
        acc = {"float": [], "integer": [], "file": []}
        for f in files:
            pic = image.load(Image.open(f).convert("RGB"))
            w, h = pic.size
            hp, wp = h + (-h) % 64, w + (-w) % 64
            x = Codec._to_tensor(pic, hp, wp)[None]
            with torch.no_grad():
                out = model(x, torch.tensor([quality_to_level(q)]))
            acc["float"].append(float(out["bpp_y"] + out["bpp_z"]) * hp * wp / (w * h))
            z, y, idx = codec.symbols([pic], q)
            channel = np.broadcast_to(np.arange(z.shape[1])[:, None, None], z.shape[1:]).ravel()
            bits = (codec.model.z_coder.tables.bits(z[0].ravel(), channel)
                    + codec.model.y_coder.tables.bits(y[0].ravel(), idx[0].ravel()))
            acc["integer"].append(bits / (w * h))
            acc["file"].append(8 * len(codec.compress(pic, q)) / (w * h))
        rows.append((q, *(float(np.mean(acc[k])) for k in ("float", "integer", "file"))))
        print(rows[-1], flush=True)

    lines = [f"# Rate cost of the integer-exact prior ({args.data.name}, {len(files)} images)", "",
             *environment(args.device, args.threads),
             f"- checkpoint step: {ckpt['step']}", "",
             "| quality | float prior bpp | integer prior bpp | .vaez file bpp | integer vs float "
             "| file vs integer |", "|---|---|---|---|---|---|"]
    for q, fl, it, fi in rows:
        lines.append(f"| {q:g} | {fl:.4f} | {it:.4f} | {fi:.4f} | {100 * (it / fl - 1):+.2f} % "
                     f"| {100 * (fi / it - 1):+.2f} % |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
