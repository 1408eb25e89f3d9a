"""Rate-distortion and speed of every vaecodec quality over a folder, with Pillow JPEG 4:2:0 as anchor.

    python -m bench.kodak                       # ../shared/data/kodak, all qualities, CPU
    python -m bench.kodak --data DIR --device cuda --threads 2

Writes ``bench/results/<dataset>_rd.csv`` (one row per image, codec and setting) and
``bench/results/<dataset>_rd.md`` (per-setting means the CompressAI way: mean bpp, mean PSNR over
images; BD-rate vs JPEG 4:2:0; machine, date, commit and command). bpp counts the real file bytes,
header included. PSNR is on 8-bit RGB against the original. Times are wall-clock seconds per image,
encode = image in memory -> .vaez bytes, decode = bytes -> PIL image (file I/O excluded for both
vaecodec and JPEG).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.bdrate import bd_rate
from bench.common import DEFAULT_DATA, ROOT, environment, image_files, load_rgb
from bench.metrics import psnr

JPEG_QUALITIES = [3, 5, 8, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90]


def run_vaecodec(images: dict[str, Image.Image], qualities: list[float], device: str) -> list[dict]:
    from vaecodec import Codec

    codec = Codec(device=device)
    rows = []
    for q in qualities:
        for name, img in images.items():
            t0 = time.perf_counter()
            data = codec.compress(img, q)
            t1 = time.perf_counter()
            out = codec.decompress(data)
            t2 = time.perf_counter()
            w, h = img.size
            rows.append({"image": name, "codec": "vaecodec", "setting": q, "bytes": len(data),
                         "bpp": 8 * len(data) / (w * h), "psnr": psnr(np.asarray(img), np.asarray(out)),
                         "enc_s": t1 - t0, "dec_s": t2 - t1})
        print(f"vaecodec q={q}: done", file=sys.stderr, flush=True)
    return rows


def run_jpeg(images: dict[str, Image.Image]) -> list[dict]:
    rows = []
    for q in JPEG_QUALITIES:
        for name, img in images.items():
            buf = io.BytesIO()
            t0 = time.perf_counter()
            img.save(buf, format="JPEG", quality=q, subsampling=2)
            t1 = time.perf_counter()
            out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
            t2 = time.perf_counter()
            w, h = img.size
            rows.append({"image": name, "codec": "jpeg420", "setting": q, "bytes": buf.tell(),
                         "bpp": 8 * buf.tell() / (w * h), "psnr": psnr(np.asarray(img), np.asarray(out)),
                         "enc_s": t1 - t0, "dec_s": t2 - t1})
    return rows


def means(rows: list[dict], codec: str) -> list[dict]:
    out = []
    for setting in sorted({r["setting"] for r in rows if r["codec"] == codec}):
        sel = [r for r in rows if r["codec"] == codec and r["setting"] == setting]
        out.append({k: float(np.mean([r[k] for r in sel])) for k in ("bpp", "psnr", "enc_s", "dec_s")}
                   | {"setting": setting, "n": len(sel)})
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak", help="folder of images")
    p.add_argument("--qualities", default="1,2,3,4,5,6,7,8,9,10", help="comma-separated vaecodec qualities")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    files = image_files(args.data, args.limit)
    images = {f.name: load_rgb(f) for f in files}
    rows = run_vaecodec(images, [float(q) for q in args.qualities.split(",")], args.device)
    rows += run_jpeg(images)

    args.out.mkdir(parents=True, exist_ok=True)
    dataset = args.data.name
    with (args.out / f"{dataset}_rd.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()})

    ours, jpeg = means(rows, "vaecodec"), means(rows, "jpeg420")
    bd = bd_rate([r["bpp"] for r in jpeg], [r["psnr"] for r in jpeg],
                 [r["bpp"] for r in ours], [r["psnr"] for r in ours])
    lines = [f"# vaecodec on {dataset} ({len(files)} images)", "",
             *environment(args.device, args.threads), "",
             "| quality | bpp | PSNR (dB) | encode s/img | decode s/img |", "|---|---|---|---|---|"]
    lines += [f"| {r['setting']:g} | {r['bpp']:.3f} | {r['psnr']:.2f} | {r['enc_s']:.3f} | {r['dec_s']:.3f} |"
              for r in ours]
    lines += ["", "Pillow JPEG 4:2:0 (same images, same run):", "",
              "| JPEG quality | bpp | PSNR (dB) |", "|---|---|---|"]
    lines += [f"| {r['setting']:g} | {r['bpp']:.3f} | {r['psnr']:.2f} |" for r in jpeg]
    lines += ["", f"**BD-rate vs JPEG 4:2:0: {bd:+.1f} %** (PSNR, piecewise cubic in log-rate, "
              "overlapping PSNR range; negative = fewer bits than JPEG)", ""]
    (args.out / f"{dataset}_rd.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
