"""Ray Data against the plain batch API on one machine: images/s compressing Kodak, the same inputs in
memory and the same bytes out, and what starting Ray costs.

    python -m bench.ray_bench [--data DIR] [--limit N] [--quality 7] [--copies 1 3] [--repeat 2]

Plain: ``Codec.compress_batch`` on the images' file bytes, with each torch thread count from 1 to the
machine's CPUs (model load not timed), before Ray and again after it. Ray: a local Ray on all CPUs
(start-up timed on its own), then ``raydata.compress_stage`` over ``ray.data.from_items`` of the same
bytes, collected on the driver, with the default pool (one single-threaded actor per CPU) and with one
actor of all the threads; a run's time includes starting its actors (each imports torch and loads the
model), so with the default pool Kodak is also coded ``--copies`` times over in one run to split that
fixed cost from the per-image rate. Last, ``raydata.compress_dataset`` on the
Kodak files, file to file, as ``python -m vaecodec.raydata compress`` runs it. Every Ray output is
checked against the plain one. Results: bench/results/ray.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import DEFAULT_DATA, ROOT, environment, image_files
from vaecodec import Codec, raydata


def timed(fn):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def plain(blobs: list[bytes], quality: float, threads: int, repeat: int) -> tuple[float, list[bytes]]:
    torch.set_num_threads(threads)
    codec = Codec(device="cpu")
    runs = [timed(lambda: codec.compress_batch(blobs, quality)) for _ in range(repeat)]
    return statistics.median(t for t, _ in runs), runs[0][1]


def on_ray(ray, blobs: list[bytes], quality: float, actors: int, threads: int, repeat: int  # noqa: ANN001
           ) -> tuple[float, list[bytes]]:
    """Median seconds to code ``blobs`` through the stage, and the bytes out in input order."""
    items = [{"name": str(i), "bytes": b} for i, b in enumerate(blobs)]

    def run() -> list[bytes]:
        ds = raydata.compress_stage(ray.data.from_items(items), input_column="bytes", name_column="name",
                                    quality=quality, num_actors=actors, threads=threads, device="cpu")
        rows = {r["name"]: r for r in ds.take_all()}
        assert all(r["error"] is None for r in rows.values())
        return [rows[str(i)]["data"] for i in range(len(blobs))]

    runs = [timed(run) for _ in range(repeat)]
    return statistics.median(t for t, _ in runs), runs[0][1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--limit", type=int, default=None, help="the first N Kodak images only")
    p.add_argument("--quality", type=float, default=7.0)
    p.add_argument("--copies", type=int, nargs="+", default=[1, 3], help="Kodak this many times over")
    p.add_argument("--repeat", type=int, default=2, help="runs per setting (median)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray.md")
    args = p.parse_args(argv)
    files = image_files(args.data / "kodak", args.limit)
    blobs = [f.read_bytes() for f in files]
    cpus = os.cpu_count() or 1
    n = len(blobs)

    rows, want, load = [], [], [os.getloadavg()[0]]

    def plain_rows(when: str) -> None:
        """Plain, before Ray and again after it: a machine shared with others shows it as a change."""
        for threads in range(1, cpus + 1):
            seconds, out = plain(blobs, args.quality, threads, args.repeat)
            want[:] = want or out
            assert out == want
            workers = f"1 process x {threads} {_threads(threads)}"
            rows.append((f"plain `Codec.compress_batch` ({when})", workers, n, seconds))
            print(rows[-1], flush=True)

    plain_rows("before Ray")

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    startup, _ = timed(lambda: ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING,
                                        log_to_driver=False))
    ray.data.DataContext.get_current().enable_progress_bars = False
    for actors, threads, copies_list in [(cpus, 1, args.copies), (1, cpus, args.copies[:1])]:
        for copies in copies_list:
            seconds, out = on_ray(ray, blobs * copies, args.quality, actors, threads, args.repeat)
            assert out == want * copies, "Ray's bytes differ from compress_batch's"
            rows.append(("Ray `compress_stage`, in memory",
                         f"up to {actors} actors x {threads} {_threads(threads)}", n * copies, seconds))
            print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        summary = raydata.compress_dataset([str(f) for f in files], tmp, quality=args.quality, progress=False)
        assert summary.images == n and not summary.errors
        assert [(Path(tmp) / f.with_suffix(".vaez").name).read_bytes() for f in files] == want
    rows.append(("Ray `compress_dataset`, files to files", f"up to {cpus} actors x 1 thread", n,
                 summary.seconds))
    print(rows[-1], flush=True)
    shutdown, _ = timed(ray.shutdown)
    plain_rows("after Ray")
    load.append(os.getloadavg()[0])

    best_plain = min(s / k for path, _, k, s in rows if path.startswith("plain"))
    lines = [f"# Ray Data against the plain batch API (kodak, {n} images, quality {args.quality:g}, CPU)", "",
             *environment("cpu", f"1 to {cpus}"), f"- ray {ray.__version__}", "",
             "Wall seconds to compress the images (median of the runs), file bytes in memory unless said; "
             "every Ray output is byte for byte the plain one. A Ray run's seconds include starting its "
             "actors (each imports torch and loads the model); starting and stopping Ray itself are "
             "apart, below. `vs best plain`: the run's seconds per image over the best plain setting's. "
             f"1-minute load average at the start {load[0]:.2f}, at the end {load[1]:.2f} (this run alone "
             f"keeps it near {cpus}).", "",
             "| path | workers | images | seconds | images/s | vs best plain |", "|---|---|---|---|---|---|"]
    lines += [f"| {path} | {workers} | {k} | {s:.2f} | {k / s:.3f} | {s / k / best_plain:.2f}x |"
              for path, workers, k, s in rows]
    lines += ["", f"- `ray.init()` (local, {cpus} CPUs, no dashboard): {startup:.2f} s; `ray.shutdown()`: "
              f"{shutdown:.2f} s"]
    pairs = [(r, r2) for r, r2 in zip(rows, rows[1:], strict=False) if r[0] == r2[0] and r[1] == r2[1]
             and r2[2] > r[2]]
    for (_, workers, k1, s1), (_, _, k2, s2) in pairs:
        rate = (k2 - k1) / (s2 - s1)
        lines.append(f"- {workers}: {rate:.3f} images/s once running ({k1} -> {k2} images), fixed cost per "
                     f"run {s1 - k1 / rate:.2f} s")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _threads(k: int) -> str:
    return "thread" if k == 1 else "threads"


if __name__ == "__main__":
    main()
