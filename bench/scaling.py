"""How encode and decode time and peak memory grow with the image: 1, 4, 16 and 64 megapixels.

    python -m bench.scaling                         # 1, 4, 16, 64 MP; writes bench/results/scaling.md
    python -m bench.scaling --sizes 4,16 --json /tmp/before.json --out /tmp/before.md
    python -m bench.scaling --before /tmp/before.json   # adds a "before" table from an earlier run

Every configuration runs in a fresh subprocess (one for the encode, one for the decode), so each
peak RSS (``VmHWM``) belongs to that one call alone; the child also reports its RSS once the model is
loaded and the input is in memory, so what the call itself adds can be read off. Times are wall-clock
of ``Codec.compress`` of an in-memory RGB array (Wiener filter on, as by default) and of
``Codec.decompress`` to a numpy array: no PNG reading or writing. Each child first codes a small image
(one-time set-up costs are not per pixel), and the sizes up to 4 MP are timed three times, keeping
the fastest (:func:`repeats`), since a busy machine can slow a short call severalfold.

The image is photo-like at its native scale at every size: a mosaic of quarters of the Kodak images
(portrait ones turned), neighbours from different images, so that even 1 MP holds a dozen images and
the bits and the work per pixel stay comparable from 1 to 64 MP. Without the Kodak folder a smooth
synthetic texture is used (the results file says which). It is built in code, band by band,
straight into the uint8 buffer the codec is given.

Targets the results are read against (from the issue on huge images): a 64 MP round trip under
3 GB peak RSS, and time per megapixel at 64 MP within 1.5x of that at 1 MP.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_DATA, ROOT, environment, image_files, load_rgb

# (width, height) per size: 4:3 at 1152x864 and its doublings; 64 MP stays under the format's 2**26.
SIZES = {1: (1152, 864), 4: (2304, 1728), 16: (4608, 3456), 64: (9216, 6912)}
RSS_TARGET_MB = 3 * 1024  # MiB, a 64 MP round trip ...
SLOPE_TARGET = 1.5  # ... and s/MP at 64 MP against 1 MP


def _status_mb(key: str) -> float:
    """A memory line of /proc/self/status in MiB: ``VmHWM`` (peak RSS since exec) or ``VmRSS``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (this bench needs Linux)")


def _tiles(data: Path) -> list[np.ndarray]:
    """The Kodak images as landscape uint8 arrays, or [] when the folder is missing."""
    if not data.is_dir():
        return []
    out = []
    for f in image_files(data):
        arr = np.asarray(load_rgb(f))
        out.append(np.ascontiguousarray(arr.transpose(1, 0, 2)) if arr.shape[0] > arr.shape[1] else arr)
    return out


def photo(width: int, height: int, data: Path) -> np.ndarray:
    """A height x width x 3 uint8 photo-like image (module docstring), built band by band."""
    out = np.empty((height, width, 3), dtype=np.uint8)
    pics = _tiles(data)
    if not pics:
        rng = np.random.default_rng(0)
        for r0 in range(0, height, 256):
            yy, xx = np.mgrid[r0 : min(r0 + 256, height), 0:width].astype(np.float32)
            base = 128 + 60 * np.sin(xx / 97) * np.cos(yy / 61) + 30 * np.sin((xx + 2 * yy) / 13)
            band = base[..., None] + np.array([0, 20, -20], np.float32) + rng.normal(0, 6, (*base.shape, 3))
            out[r0 : r0 + len(yy)] = np.clip(band, 0, 255).astype(np.uint8)
        return out
    th, tw = pics[0].shape[0] // 2, pics[0].shape[1] // 2  # quarter images: many images in 1 MP
    for row, r0 in enumerate(range(0, height, th)):
        for col, c0 in enumerate(range(0, width, tw)):
            n = 5 * row + col  # neighbours, across and down, come from different images
            pic, quarter = pics[n % len(pics)], n // len(pics) % 4
            crop = pic[quarter // 2 * th :, quarter % 2 * tw :]
            h, w = min(th, height - r0), min(tw, width - c0)
            out[r0 : r0 + h, c0 : c0 + w] = crop[:h, :w]
    return out


def source(data: Path) -> str:
    """What :func:`photo` builds its image from, in words, for the results file."""
    return f"a mosaic of the {data.name} images in {data}" if _tiles(data) else \
        f"a synthetic texture ({data} has no images)"


def child(side: str, mp: int, vaez: Path, quality: float, threads: int, data: Path) -> dict:
    """Runs in a fresh process: one compress (writing ``vaez``) or one decompress (reading it)."""
    import torch

    from vaecodec import Codec

    torch.set_num_threads(threads)
    codec = Codec(device="cpu")
    width, height = SIZES[mp]
    codec.decompress(codec.compress(photo(256, 256, data), quality))  # one-time set-up costs
    if side == "encode":
        img = photo(width, height, data)
        call = partial(codec.compress, img, quality)
    else:
        call = partial(codec.decompress, vaez.read_bytes(), output="numpy")
    ready = _status_mb("VmRSS")
    runs = []  # (wall, CPU) seconds
    for _ in range(repeats(mp)):
        start, cpu = time.perf_counter(), _cpu_seconds()
        out = call()
        runs.append((time.perf_counter() - start, _cpu_seconds() - cpu))
    extra = {}
    if side == "encode":
        vaez.write_bytes(out)
        extra = {"bytes": len(out), "bpp": 8 * len(out) / (width * height)}
    elif out.shape != (height, width, 3):
        raise RuntimeError(f"decoded shape {out.shape}, expected {(height, width, 3)}")
    wall, cpu = min(runs)
    return {"side": side, "mp": mp, "pixels": width * height, "seconds": wall, "cpu_seconds": cpu,
            "runs": len(runs), "rss_ready_mb": ready, "rss_peak_mb": _status_mb("VmHWM"), **extra}


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads: unlike wall time, barely moved by
    other processes on the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def repeats(mp: int) -> int:
    """Timed calls per child: the smaller sizes, fast and the most exposed to a busy machine, run
    three times and keep the fastest; the large ones once."""
    return 3 if mp <= 4 else 1


def run_child(side: str, mp: int, vaez: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "bench.scaling", "--child", side, str(mp), str(vaez),
           f"{args.quality:g}", str(args.threads), str(args.data)]
    try:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"side": side, "mp": mp, "failed": f"still running after {args.timeout:g} s"}
    if res.returncode:
        lines = res.stderr.strip().splitlines()
        return {"side": side, "mp": mp, "failed": lines[-1] if lines else f"exit {res.returncode}"}
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(r), flush=True)
    return r


def table(results: list[dict]) -> list[str]:
    """The markdown table of one run's results (list of child results, encode and decode per size)."""
    by = {(r["side"], r["mp"]): r for r in results}
    columns = ("s", "s/MP", "CPU s/MP", "peak RSS MiB")
    head = [f"{side} {what}" for side in ("encode", "decode") for what in columns]
    lines = ["| " + " | ".join(["MP", "size", "bpp", *head]) + " |", "|---" * 11 + "|"]
    for mp in sorted({r["mp"] for r in results}):
        w, h = SIZES[mp]
        cells = [f"{w * h / 1e6:.1f}", f"{w}x{h}"]
        enc = by.get(("encode", mp), {})
        cells.append(f"{enc['bpp']:.3f}" if "bpp" in enc else "-")
        for side in ("encode", "decode"):
            r = by.get((side, mp))
            if r is None:
                cells += ["-"] * 4
            elif "failed" in r:
                cells += [f"failed: {r['failed']}", "-", "-", "-"]
            else:
                mp_real = r["pixels"] / 1e6
                cells += [f"{r['seconds']:.1f}", f"{r['seconds'] / mp_real:.2f}",
                          f"{r['cpu_seconds'] / mp_real:.2f}", f"{r['rss_peak_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdict(results: list[dict]) -> list[str]:
    """The growth of time per MP from the smallest to the largest size measured, and the targets
    where 64 MP (and 1 MP) were measured."""
    by = {(r["side"], r["mp"]): r for r in results if "failed" not in r}
    lines = []
    if ("encode", 64) in by and ("decode", 64) in by:
        peak = max(by[("encode", 64)]["rss_peak_mb"], by[("decode", 64)]["rss_peak_mb"])
        met = "met" if peak < RSS_TARGET_MB else "NOT met"
        lines.append(f"- 64 MP round trip, peak RSS {peak:.0f} MiB (target under {RSS_TARGET_MB} MiB): {met}")
    measured = sorted({mp for _, mp in by})
    for side in ("encode", "decode"):
        big, small = measured[-1], measured[0]
        if (side, big) not in by or (side, small) not in by or big == small:
            continue
        hi, lo = by[(side, big)], by[(side, small)]
        wall, cpu = (hi[k] / hi["pixels"] / (lo[k] / lo["pixels"]) for k in ("seconds", "cpu_seconds"))
        target = f" (target {SLOPE_TARGET}x): {'met' if wall <= SLOPE_TARGET else 'NOT met'}" \
            if (big, small) == (64, 1) else ""
        lines.append(f"- {side}: s/MP at {big} MP is {wall:.2f}x that at {small} MP{target}; in CPU time "
                     f"{cpu:.2f}x")
    ready = [r["rss_ready_mb"] for r in by.values()]
    if ready:
        lines.append(f"- RSS of a child with torch and the model loaded (and the input in memory), before "
                     f"the call: {min(ready):.0f} to {max(ready):.0f} MiB")
    return lines


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, side, mp, vaez, quality, threads, data = sys.argv
        print(json.dumps(child(side, int(mp), Path(vaez), float(quality), int(threads), Path(data))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="megapixel sizes, of 1,4,16,64")
    p.add_argument("--quality", type=float, default=7.0, help="vaecodec quality")
    p.add_argument("--threads", type=int, default=2, help="torch threads of each child")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak", help="Kodak folder for the mosaic")
    p.add_argument("--timeout", type=float, default=1800, help="seconds a child may run")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--before", type=Path, help="raw results (--json) of an earlier run, shown as 'before'")
    p.add_argument("--before-label", default="before", help="what the --before run was")
    p.add_argument("--results", type=Path,
                   help="write the results file from an earlier run's --json instead of measuring")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scaling.md")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    unknown = set(sizes) - set(SIZES)
    if unknown:
        p.error(f"unknown sizes {sorted(unknown)} (known: {sorted(SIZES)})")
    if args.results:
        run = json.loads(args.results.read_text())
    else:
        run = {"environment": [*environment("cpu", args.threads), f"- image: {source(args.data)}"],
               "quality": args.quality, "threads": args.threads, "results": measure(sizes, args)}
        if args.json:
            args.json.write_text(json.dumps(run, indent=1) + "\n")
    lines = [f"# Scaling with image size (vaecodec q={run.get('quality', 7):g}, CPU, "
             f"{run.get('threads', 2)} torch threads)", "", *run["environment"], "",
             "Each encode and each decode runs alone in a fresh process; peak RSS is that process's "
             "(VmHWM), torch, the model and the input or output buffers included. The image is photo-like "
             "at its native scale at every size (see `bench/scaling.py`). Wall time is what the targets "
             "are read against; CPU time (user + system, both threads) is far less moved by other "
             "processes on a shared machine, which can slow wall time severalfold on two cores.", "",
             *table(run["results"]), "", *verdict(run["results"]), ""]
    if args.before:
        before = json.loads(args.before.read_text())
        lines += [f"## {args.before_label}", "", *before["environment"], "", *table(before["results"]), "",
                  *verdict(before["results"]), ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


def measure(sizes: list[int], args: argparse.Namespace) -> list[dict]:
    """Encode and decode of each size, each in its own child process."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mp in sizes:
            vaez = Path(tmp) / f"{mp}.vaez"
            enc = run_child("encode", mp, vaez, args)
            results.append(enc)
            results.append(run_child("decode", mp, vaez, args) if "failed" not in enc
                           else {"side": "decode", "mp": mp, "failed": "no file (the encode failed)"})
    return results

if __name__ == "__main__":
    main()
