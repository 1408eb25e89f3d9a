"""Throughput of many images: images/s for 1, 2, ... worker processes, in memory and file to file.

    python -m bench.throughput                       # this machine, every core count up to its cores
    python -m bench.throughput --workers 1,4,8,16    # a GPU machine

What it measures, on the images of ``--data`` (Kodak by default), at one quality:

- in memory: ``Codec.compress_batch(arrays, workers=N)`` and ``decompress_batch(files, "numpy",
  workers=N)``; the arrays and results travel to and from the workers, which is counted. Each call
  starts its workers (a process and a model load each): that start-up is measured on its own and
  the steady rate, without it, is given beside the rate with it.
- file to file: the CLI, ``vaecodec compress -r DIR -o OUT/ -j N`` and ``decompress``, in a fresh
  process each, so everything a user waits for is in the time (interpreter, imports, model loads,
  PNG reading and writing).
- one worker on one core: the per-core baseline, and where its time goes (:func:`bench.speed.stage_split`).
- that the files are the same bytes whatever the workers, and that ``compress_iter`` streams in
  constant memory (``--stream N`` small images; the RSS of the parent and of the workers).

Without a GPU, the GPU figure is a projection from the per-stage times (written as such).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import DEFAULT_DATA, ROOT, environment, image_files, load_rgb
from bench.speed import stage_split
from vaecodec import Codec
from vaecodec.pipeline import cores


def _rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process now (VmRSS), MiB; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children() -> list[int]:
    """This process's child processes (the workers)."""
    me, kids = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                kids.append(int(entry))
    return kids


def timed(fn) -> tuple[float, object]:  # noqa: ANN001
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def in_memory(codec: Codec, arrays: list[np.ndarray], quality: float, workers: list[int]
              ) -> tuple[list[str], bool]:
    """Rows of the in-memory table, and whether every worker count gave the first one's bytes."""
    tiny = [np.zeros((16, 16, 3), np.uint8)]
    n, rows, reference, same = len(arrays), [], None, True
    for w in workers:
        threads = "all" if w == 1 else 1
        start_c = 0.0 if w == 1 else timed(lambda w=w: codec.compress_batch(tiny, quality, workers=w))[0]
        t_c, files = timed(lambda w=w: codec.compress_batch(arrays, quality, workers=w))
        start_d = 0.0 if w == 1 else timed(lambda w=w, one=files[:1]: codec.decompress_batch(
            one, output="numpy", workers=w))[0]
        t_d, _ = timed(lambda w=w, files=files: codec.decompress_batch(files, output="numpy", workers=w))
        reference = reference or files
        same &= files == reference
        rows.append(f"| {w} | {threads} | {n / t_c:.2f} | {n / max(t_c - start_c, 1e-9):.2f} | {start_c:.1f} "
                    f"| {n / t_d:.2f} | {n / max(t_d - start_d, 1e-9):.2f} |")
    return rows, same


def one_core(codec: Codec, files: list[Path], arrays: list[np.ndarray], quality: float) -> tuple[str, dict]:
    """The per-core baseline row (one worker, one thread) and its stage split."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t_c, blobs = timed(lambda: codec.compress_batch(arrays, quality))
        t_d, _ = timed(lambda: codec.decompress_batch(blobs, output="numpy"))
        split = stage_split(codec, files[:4], quality, 1)
    finally:
        torch.set_num_threads(saved)
    n = len(arrays)
    return f"| 1 | 1 | {n / t_c:.2f} | {n / t_c:.2f} | - | {n / t_d:.2f} | {n / t_d:.2f} |", split


def cli_rows(data: Path, quality: float, workers: list[int], device: str) -> tuple[list[str], float]:
    """File-to-file rows through the CLI, and the CLI's fixed cost (one tiny image, one process)."""
    n, rows = len(image_files(data)), []
    with tempfile.TemporaryDirectory() as tmp:
        def cli(*args: str) -> float:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "vaecodec", *args, "-Q", "--device", device], check=True,
                           cwd=ROOT)
            return time.perf_counter() - start

        from PIL import Image

        tiny = Path(tmp) / "tiny.png"
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tiny)
        fixed = cli("compress", str(tiny), "-o", str(Path(tmp) / "tiny.vaez"), "-j", "1")
        for w in workers:
            enc = cli("compress", "-r", str(data), "-o", f"{tmp}/c{w}/", "-q", f"{quality:g}", "-j", str(w))
            dec = cli("decompress", "-r", f"{tmp}/c{w}", "-o", f"{tmp}/d{w}/", "-j", str(w))
            first = sorted(Path(f"{tmp}/c{workers[0]}").iterdir())
            same = all(f.read_bytes() == (Path(f"{tmp}/c{w}") / f.name).read_bytes() for f in first)
            rows.append(f"| {w} | {n / enc:.2f} | {n / dec:.2f} | {'yes' if same else 'NO'} |")
    return rows, fixed


def stream_memory(codec: Codec, count: int, workers: int) -> list[str]:
    """compress_iter over ``count`` generated 64x64 images: RSS of the parent and the workers at
    tenths of the way, which stays flat if nothing accumulates."""
    rng = np.random.default_rng(0)

    def source():  # noqa: ANN202
        for _ in range(count):
            yield rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)

    marks, total, start = [], 0, time.perf_counter()
    for i, data in enumerate(codec.compress_iter(source(), 3, workers=workers, wiener=False), 1):
        total += len(data)
        if i % max(1, count // 10) == 0 or i == count:
            kids = sum(_rss_mib(p) for p in _children())
            marks.append(f"| {i} | {_rss_mib():.0f} | {kids:.0f} | {time.perf_counter() - start:.1f} |")
    return marks


def cuda_reference() -> tuple[float, float] | None:
    """One-process in-memory s/img (encode, decode) on an H100, from the committed speed table."""
    path = ROOT / "bench" / "results" / "speed_cuda_nvidia_h100.md"
    if not path.exists():
        return None
    section = path.read_text().split("## cuda", 1)[-1]
    m = re.search(r"\| vaecodec q=\S+ \| ([\d.]+) \| ([\d.]+) \|", section)
    return (float(m.group(1)), float(m.group(2))) if m else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak")
    p.add_argument("--quality", type=float, default=7)
    p.add_argument("--workers", default=None,
                   help="comma-separated worker counts (default 1,2,4,... up to the cores)")
    p.add_argument("--device", default="auto")
    p.add_argument("--stream", type=int, default=10_000,
                   help="images for the constant-memory check (0: skip)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    codec = Codec(device=args.device)
    device = codec.device.type
    workers = [int(w) for w in args.workers.split(",")] if args.workers else \
        sorted({1, *(2 ** k for k in range(1, 8) if 2 ** k <= cores()), cores()})
    files = image_files(args.data)
    arrays = [np.asarray(load_rgb(f)) for f in files]
    codec.compress_batch(arrays[:1], args.quality)  # warm-up: lazy inits and caches

    base_row, split = one_core(codec, files, arrays, args.quality)
    mem_rows, same = in_memory(codec, arrays, args.quality, workers)
    cli, fixed = cli_rows(args.data, args.quality, workers, device)
    stream = stream_memory(codec, args.stream, workers[-1]) if args.stream else []

    n, (w0, h0) = len(files), load_rgb(files[0]).size
    lines = [f"# Throughput: worker processes on {args.data.name} ({n} images, {w0}x{h0} first, quality "
             f"{args.quality:g}, device {device})", "",
             *environment(device, f"{torch.get_num_threads()} (one worker), 1 per worker (several)"),
             f"- cores: {cores()}; workers: {', '.join(map(str, workers))}", "",
             "Images/s. A worker is a process with its own model; one worker is this process, with all "
             "cores' torch threads unless the row says 1. \"with start-up\" counts the workers' "
             "process start and model load (paid once per call); \"steady\" leaves it out.", "",
             "## In memory (arrays in, bytes out; bytes in, arrays out)", "",
             "| workers | torch threads each | compress | compress, steady | start-up s | decompress "
             "| decompress, steady |",
             "|---|---|---|---|---|---|---|", base_row, *mem_rows, "",
             f"Files identical for every worker count: {'yes' if same else 'NO'}.", "",
             "## File to file (the CLI, a fresh process per command, PNG in and out)", "",
             "| -j | compress | decompress | files identical to -j " + str(workers[0]) + " |",
             "|---|---|---|---|", *cli, "",
             f"The CLI's fixed cost (interpreter, imports, one model load, a 16x16 image): {fixed:.2f} s.",
             "",
             "## Where one core's time goes (one worker, one thread; s/img, file to file)", "",
             "| stage | s/img | share |", "|---|---|---|"]
    for side in ("encode", "decode"):
        total = sum(v for k, v in split.items() if k.startswith(side))
        lines += [f"| {k} | {v:.4f} | {100 * v / total:.0f} % |"
                  for k, v in split.items() if k.startswith(side)]
        lines.append(f"| **{side} total** | {total:.4f} | |")
    if stream:
        lines += ["", f"## Streaming: compress_iter over {args.stream} generated 64x64 images, "
                      f"{workers[-1]} workers", "",
                  "| images done | parent RSS MiB | workers' RSS MiB | s |", "|---|---|---|---|", *stream]
    ref = cuda_reference()
    if device != "cuda" and ref is not None:
        enc, dec = ref
        lines += ["", "## GPU: a projection, not a measurement", "",
                  "No GPU was available for this run. bench/results/speed_cuda_nvidia_h100.md measured "
                  f"one process on an H100 host (16 cores) at {enc:.4f} s/img encoding and {dec:.4f} "
                  "s/img decoding Kodak in memory, nearly all of it CPU work on one core (image "
                  "conversion, entropy coding, the Wiener fit, the container), the networks a few ms of "
                  f"it. 16 workers doing that work side by side give at most 16 / {enc:.4f} = "
                  f"{16 / enc:.0f} images/s encoding and 16 / {dec:.4f} = {16 / dec:.0f} decoding, if "
                  "they scale linearly and the GPU's share stays under 1/300 s per image; the one-thread "
                  "workers above show how far from linear a doubling is on this machine. This is an "
                  "upper bound, not a measurement: run `python -m bench.throughput --workers 1,4,8,16` "
                  "on the GPU machine."]
    text = "\n".join(lines) + "\n"
    out = args.out or ROOT / "bench" / "results" / f"throughput_{device}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
