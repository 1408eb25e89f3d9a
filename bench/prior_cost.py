"""What the integer-exact prior costs in rate, measured against the float prior it was exported from.

    python -m bench.prior_cost --ckpt runs/hp64/last.pt [--data DIR] [--qualities 1,3,7,10]

For each image and quality, three rates in bits per pixel:

* ``float``: the training model's exact rate of the rounded latents under its float h_s and context
  with a continuous scale (the ideal the training objective optimizes);
* ``integer``: the ideal code length of the same image's symbols under the exported integer h_s and
  context and the integer PMF tables (64 quantized scales, trimmed z tails);
* ``file``: the real .vaez size without the Wiener filter (ANS overhead, escapes and the header
  included).

``integer / float - 1`` is the cost of making the prior bit-exact; ``file / integer - 1`` is the
coder and container overhead. The checkpoint is exported as ``python -m training --export`` would
(its EMA if it kept one). Results go to ``bench/results/prior_cost.md``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common import DEFAULT_DATA, ROOT, environment, image_files, load_rgb
from training.export import export_model, tables_from_state
from training.model import load_checkpoint
from vaecodec import Codec
from vaecodec.quality import level_of
from vaecodec.transforms import pad


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

    model, ckpt = load_checkpoint(args.ckpt)
    z = tables_from_state(ckpt["z_tables"]) if ckpt.get("z_tables") is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "candidate.safetensors"
        export_model(model, weights, z)
        codec = Codec(weights, device=args.device)
    model.to(codec.device).eval()
    latent = codec.model.latent

    files = image_files(args.data, args.limit)
    rows = []
    for q in [float(v) for v in args.qualities.split(",")]:
        acc = {"float": [], "integer": [], "file": []}
        for f in files:
            rgb = np.asarray(load_rgb(f))
            h, w = rgb.shape[:2]
            x = pad(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255).to(codec.device)
            with torch.no_grad():
                out = model(x, torch.tensor([level_of(q)], device=codec.device))
            acc["float"].append(float(out["bpp_y"] + out["bpp_z"]) * x.shape[2] * x.shape[3] / (w * h))
            lat = codec.latents([rgb], q).numpy(0)
            channel = np.broadcast_to(np.arange(lat["z"].shape[0])[:, None, None], lat["z"].shape).ravel()
            bits = float(latent.z_coder.tables.symbol_bits(lat["z"].ravel(), channel).sum()
                         + latent.y_coder.tables.symbol_bits(lat["y"].ravel(), lat["index"].ravel()).sum())
            acc["integer"].append(bits / (w * h))
            acc["file"].append(8 * len(codec.compress(rgb, q, wiener=False)) / (w * h))
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
