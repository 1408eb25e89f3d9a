"""Cross-device check: files written on the GPU decode bit-exactly on the CPU, and the reverse.

    python -m bench.cross_device [--data DIR] [--limit 6] [--qualities 1,4,7,10] [--model NAME]

For each image and quality it compresses on both devices, then decodes each file on both devices and
requires every integer that decides a probability (z and y symbols, the prior's means and scale
indices) to be identical; it also reports how far apart the CPU and GPU pixels are (the float
synthesis transform may differ in the last bit, which can move a pixel by one level) and whether the
two encoders happened to write identical bytes (not required: the float analysis transform may round
a latent differently, which changes the file but never its decodability). Needs a CUDA device; writes
``bench/results/cross_device.md``. Exits non-zero if any integer differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import DEFAULT_DATA, ROOT, environment
from vaecodec import Codec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak")
    p.add_argument("--limit", type=int, default=6)
    p.add_argument("--qualities", default="1,4,7,10")
    p.add_argument("--model", default=None, help="shipped model name or weights file (default: the default)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cross_device.md")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here: run this on a machine with a GPU", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    args.device = "cuda"
    env = environment(args.device, args.threads)  # at the start, like every bench
    codecs = {"cpu": Codec(args.model, device="cpu"), "cuda": Codec(args.model, device="cuda")}

    rows, failures = [], 0
    for f in sorted(args.data.glob("*.png"))[: args.limit]:
        img = Image.open(f).convert("RGB")
        for q in [float(v) for v in args.qualities.split(",")]:
            files = {dev: c.compress(img, q) for dev, c in codecs.items()}
            for enc, data in files.items():
                ints = {dev: c.decode_integers(data) for dev, c in codecs.items()}
                same = all(np.array_equal(ints["cpu"][k], ints["cuda"][k]) for k in ints["cpu"])
                failures += not same
                pixels = {dev: np.asarray(c.decompress(data), dtype=np.int16) for dev, c in codecs.items()}
                diff = np.abs(pixels["cpu"] - pixels["cuda"])
                rows.append(f"| {f.name} | {q:g} | {enc} | {len(data)} | {'yes' if same else '**NO**'} | "
                            f"{int(diff.max())} | {100 * float(np.mean(diff > 0)):.3f} |")
            rows[-1] += f" {'yes' if files['cpu'] == files['cuda'] else 'no'} |"
            rows[-2] += " |"
            print(rows[-2], rows[-1], sep="\n", flush=True)

    model = codecs["cpu"].model
    lines = ["# Cross-device decoding (CPU vs CUDA)", "", *env,
             f"- model: {model.name} (id {model.model_id.hex()})", "",
             f"Integer mismatches: **{failures}** of {len(rows)} decodes.", "",
             "| image | quality | encoded on | bytes | integers identical on cpu and cuda | "
             "max pixel diff | % pixels differing | cpu and cuda files identical |",
             "|---|---|---|---|---|---|---|---|", *rows, ""]
    args.out.write_text("\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
