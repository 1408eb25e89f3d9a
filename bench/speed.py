"""Speed and memory of vaecodec against the peers, in one process run, with ratios to JPEG.

    python -m bench.speed                        # Kodak, CPU 1 and 2 threads (+ the GPU if present)
    python -m bench.speed --limit 2 --batches 1,8 --repeat 2 --out /tmp/speed.md

Machines are noisy, so everything is measured in the same run and reported both as seconds and as a
ratio to Pillow JPEG 4:2:0 measured next to it. Per configuration (CPU with 1 and 2 torch threads;
CUDA when available):

- encode/decode seconds per image and per megapixel (median over ``--repeat`` runs, mean over the
  images), vaecodec at ``--quality`` and every available peer at a setting near 1 bpp
  (``Peer.speed_setting``), in memory;
- vaecodec's time split, file to file, into image I/O (PNG read / PNG write), the analysis and
  synthesis transforms, the prior networks (h_a, integer h_s), entropy coding (ANS and escapes) and
  the rest, measured by wrapping the functions ``Codec`` itself calls (:func:`stage_timer`);
- batch throughput of ``Codec.compress_batch`` / ``decompress_batch`` (images per second) for
  ``--batches`` equal-size images.

Peak memory of one vaecodec encode+decode is measured per configuration in a fresh subprocess (so runs
do not pollute each other), for the first image and for a ``--large`` image (a Kodak image resized):
peak RSS (``VmHWM``) on the CPU, ``torch.cuda.max_memory_allocated`` on the GPU. Writes
``bench/results/speed_<device>.md`` with machine, date, commit and command.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import DEFAULT_DATA, ROOT, environment, image_files, load_rgb
from bench.peers import all_peers
from vaecodec import Codec, entropy, image

STAGES = ("image I/O", "transforms g_a/g_s", "prior h_a/h_s (+ context)", "entropy coding", "other")


class Laps:
    """Wall time between marks, waiting for the GPU at each mark so time lands in the right stage."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.times: dict[str, float] = {}
        self.last = self._now()

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def mark(self, stage: str) -> None:
        now = self._now()
        self.times[stage] = self.times.get(stage, 0.0) + now - self.last
        self.last = now


class StageClock:
    """Seconds per stage, summed by the wrapped functions of :func:`stage_timer`."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.calls: dict[str, int] = dict.fromkeys(STAGES, 0)

    def wrap(self, stage: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if self.cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds[stage] += time.perf_counter() - t0
            self.calls[stage] += 1
            return out

        return timed


@contextmanager
def stage_timer(codec: Codec) -> Iterator[StageClock]:
    """Time vaecodec's stages by wrapping, for the duration, the networks and functions its Codec
    calls. The measured path is the real one (no re-implementation of Codec to keep in step); if a
    refactor means a stage is no longer reached through these names, this fails loudly rather than
    quietly counting the time as "other"."""
    clock = StageClock(codec.device)
    m, dec = codec.model, entropy.StreamDecoder
    io_, nets, prior, coding = STAGES[:4]
    targets = [(m, "g_a", nets), (m, "g_s", nets), (m.latent, "h_a", prior), (m.latent, "h_s", prior),
               (entropy, "encode", coding), (dec, "__init__", coding), (dec, "z", coding),
               (dec, "y", coding), (image, "load", io_), (image, "to_pil", io_)]
    if m.latent.context is not None:  # the checkerboard context network is part of the prior
        targets.append((m.latent, "context", prior))
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in targets]
    try:
        for obj, name, stage in targets:
            setattr(obj, name, clock.wrap(stage, getattr(obj, name)))
        yield clock
    finally:
        for obj, name, original in saved:
            setattr(obj, name, original)
    missing = [stage for stage in STAGES[:4] if not clock.calls[stage]]
    if missing:
        raise RuntimeError(f"stages not reached: {missing}; vaecodec's internals changed, update {__file__}")


def stage_split(codec: Codec, files: list[Path], quality: float, repeat: int) -> dict[str, float]:
    """Mean seconds per image and stage, file to file: encode is PNG file -> .vaez bytes, decode is
    .vaez bytes -> PNG bytes. "other" is what no stage claims (padding, tensor conversion, rounding,
    the container)."""
    blobs = {f: codec.compress(f, quality) for f in files}  # also the warm-up
    split = {}
    for side in ("encode", "decode"):
        with stage_timer(codec) as clock:
            laps = Laps(codec.device)
            for _ in range(repeat):
                for f in files:
                    if side == "encode":
                        codec.compress(f, quality)
                    else:
                        out = codec.decompress(blobs[f])
                        clock.wrap(STAGES[0], lambda out=out: out.save(io.BytesIO(), format="PNG"))()
            laps.mark("total")
        n = repeat * len(files)
        for stage in STAGES[:4]:
            split[f"{side}: {stage}"] = clock.seconds[stage] / n
        split[f"{side}: other"] = laps.times["total"] / n - sum(clock.seconds.values()) / n
    return split


def median_time(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    """Median wall time of ``repeat`` calls, after one warm-up call (lazy inits, caches)."""
    fn()
    times = []
    for _ in range(repeat):
        laps = Laps(device)
        fn()
        laps.mark("t")
        times.append(laps.times["t"])
    return statistics.median(times)


def per_image_times(codec: Codec, files: list[Path], args: argparse.Namespace, threads: int
                    ) -> tuple[list[tuple[str, float, float, float]], dict[str, float]]:
    """(codec label, encode s, decode s, megapixels) means over images, and vaecodec's stage split."""
    dev = codec.device
    images = {f: load_rgb(f) for f in files}
    mp = float(np.mean([im.width * im.height / 1e6 for im in images.values()]))
    rows = []
    enc = [median_time(lambda f=f: codec.compress(images[f], args.quality), args.repeat, dev) for f in files]
    blobs = {f: codec.compress(images[f], args.quality) for f in files}
    dec = [median_time(lambda f=f: codec.decompress(blobs[f]), args.repeat, dev) for f in files]
    rows.append((f"vaecodec q={args.quality:g}", float(np.mean(enc)), float(np.mean(dec)), mp))
    stages = stage_split(codec, files, args.quality, args.repeat)
    if dev.type == "cpu":
        for peer in all_peers():
            if peer.missing or peer.name not in args.peers.split(","):
                continue
            s, enc, dec = peer.speed_setting, [], []
            for im in images.values():
                data = peer.encode(im, s, threads)
                enc.append(median_time(partial(peer.encode, im, s, threads), args.repeat, dev))
                dec.append(median_time(partial(peer.decode, data), args.repeat, dev))
            rows.append((f"{peer.label} @ {s:g}", float(np.mean(enc)), float(np.mean(dec)), mp))
    return rows, stages


def throughput(codec: Codec, files: list[Path], quality: float, counts: list[int]) -> list[str]:
    """Images per second through the batch API for N equal-size images (the first size found), one
    image per network pass and 8 per pass (the CUDA default), since which pays depends on the device."""
    size = load_rgb(files[0]).size
    same = [im for im in (load_rgb(f) for f in files) if im.size == size]
    lines = []
    for n in counts:
        batch = [same[i % len(same)] for i in range(n)]
        for per_pass in sorted({1, min(8, n)}):
            laps = Laps(codec.device)
            blobs = codec.compress_batch(batch, quality, batch_size=per_pass)
            laps.mark("enc")
            codec.decompress_batch(blobs, batch_size=per_pass)
            laps.mark("dec")
            enc, dec = n / laps.times["enc"], n / laps.times["dec"]
            default = " (default)" if per_pass == codec.default_batch_size else ""
            lines.append(f"| {n} | {per_pass}{default} | {size[0]}x{size[1]} | {enc:.2f} | {dec:.2f} |")
    return lines


def _peak_rss_mb() -> float:
    """This process's peak RSS. ``VmHWM`` starts afresh at exec, whereas ``ru_maxrss`` carries over
    the RSS the forked child inherited from the (large) parent, which would hide small peaks."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # non-Linux: best available


def child_memory(device: str, threads: int, source: str, size: str | None, quality: float,
                 model: str | None) -> dict:
    """Runs in a fresh process: one encode+decode, reporting baseline and peak memory in MB."""
    torch.set_num_threads(threads)
    codec = Codec(model, device=device)
    img = load_rgb(Path(source))
    if size:
        img = img.resize(tuple(int(v) for v in size.split("x")), Image.Resampling.BICUBIC)
    page_mb = resource.getpagesize() / 2**20
    base = int(Path("/proc/self/statm").read_text().split()[1]) * page_mb  # current RSS, not the peak
    codec.decompress(codec.compress(img, quality))
    out = {"pixels": img.width * img.height, "size": f"{img.width}x{img.height}", "rss_base_mb": base,
           "rss_peak_mb": _peak_rss_mb()}
    if codec.device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def memory_rows(device: str, threads: int, source: Path, large: str, quality: float,
                model: str | None) -> list[str]:
    rows = []
    for size in (None, large):
        cmd = [sys.executable, "-m", "bench.speed", "--child", device, str(threads), str(source),
               size or "", f"{quality:g}", model or ""]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if res.returncode:
            why = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
            rows.append(f"| {device}, {threads} threads | {size or source.name} | failed: {why} | | |")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        gpu = f"{r['cuda_peak_mb']:.0f}" if "cuda_peak_mb" in r else "-"
        rows.append(f"| {device}, {threads} threads | {r['size']} | {r['rss_peak_mb']:.0f} | "
                    f"{r['rss_peak_mb'] - r['rss_base_mb']:.0f} | {gpu} |")
    return rows


def config_section(device: str, threads: int, files: list[Path], args: argparse.Namespace) -> list[str]:
    torch.set_num_threads(threads)
    codec = Codec(args.model, device=device)
    rows, stages = per_image_times(codec, files, args, threads)
    jpeg = next((r for r in rows if r[0].startswith("JPEG 4:2:0")), None)
    gpu = f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""
    lines = [f"## {device}, {threads} torch threads{gpu}", "",
             "| codec @ setting | encode s/img | decode s/img | encode s/MP | decode s/MP | encode / JPEG | "
             "decode / JPEG |", "|---|---|---|---|---|---|---|"]
    for name, e, d, mp in rows:
        ratio = f"{e / jpeg[1]:.1f}x | {d / jpeg[2]:.1f}x" if jpeg else "- | -"
        lines.append(f"| {name} | {e:.4f} | {d:.4f} | {e / mp:.4f} | {d / mp:.4f} | {ratio} |")
    lines += ["", "vaecodec, where the time goes (s/img, file to file, timed inside Codec's own calls):", "",
              "| stage | s/img | share |",
              "|---|---|---|"]
    for side in ("encode", "decode"):
        total = sum(v for k, v in stages.items() if k.startswith(side))
        lines += [f"| {k} | {v:.4f} | {100 * v / total:.0f} % |"
                  for k, v in stages.items() if k.startswith(side)]
        lines.append(f"| **{side} total** | {total:.4f} | |")
    counts = [int(n) for n in args.batches.split(",")]
    lines += ["", "Batch API throughput (images/s):", "",
              "| images | images per pass | size | compress_batch | decompress_batch |",
              "|---|---|---|---|---|",
              *throughput(codec, files, args.quality, counts), ""]
    print("\n".join(lines), flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, device, threads, source, size, quality, model = sys.argv
        print(json.dumps(child_memory(device, int(threads), source, size or None, float(quality),
                                      model or None)))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak", help="folder of images")
    p.add_argument("--limit", type=int, default=6, help="images timed per configuration")
    p.add_argument("--quality", type=float, default=7.0, help="vaecodec quality")
    p.add_argument("--model", default=None, help="shipped model name or weights file (default: the default)")
    p.add_argument("--threads", default="1,2", help="CPU torch thread counts")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per image (median)")
    p.add_argument("--batches", default="1,8,64", help="image counts for batch throughput")
    p.add_argument("--large", default="4000x3000", help="size of the large image for peak memory")
    p.add_argument("--peers", default=",".join(peer.name for peer in all_peers()))
    p.add_argument("--no-cuda", action="store_true", help="skip the GPU even if one is present")
    p.add_argument("--out", type=Path, default=None, help="default bench/results/speed_<device>.md")
    args = p.parse_args(argv)

    files = image_files(args.data, args.limit)
    configs = [("cpu", int(t)) for t in args.threads.split(",")]
    if torch.cuda.is_available() and not args.no_cuda:
        configs.append(("cuda", int(args.threads.split(",")[-1])))
        tag = "cuda_" + "".join(c if c.isalnum() else "_" for c in torch.cuda.get_device_name().lower())
    else:
        tag = "cpu"
    out = args.out or ROOT / "bench" / "results" / f"speed_{tag}.md"
    lines = [f"# Speed and memory on {args.data.name} ({len(files)} images, vaecodec q={args.quality:g})",
             "", *environment(configs[-1][0], " and ".join(str(t) for _, t in configs)),
             f"- model: {Codec(args.model, device='cpu').model.name}", "",
             "Seconds are wall-clock, median of repeats, mean over images, in memory (no file I/O) except "
             "the stage split, whose image I/O is PNG read/write. Peers run on the CPU with the same thread "
             "count (only AVIF and JPEG XL use more than one). Ratios are to JPEG 4:2:0 in the same run.",
             ""]
    for device, threads in configs:
        lines += config_section(device, threads, files, args)
    lines += ["## Peak memory (vaecodec encode + decode, fresh process each)", "",
              "| configuration | image | peak RSS MB | peak minus RSS with model loaded MB | "
              "CUDA max allocated MB |",
              "|---|---|---|---|---|"]
    for device, threads in configs:
        lines += memory_rows(device, threads, files[0], args.large, args.quality, args.model)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-2 - 2 * len(configs):]))


if __name__ == "__main__":
    main()
