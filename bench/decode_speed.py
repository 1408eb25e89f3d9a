"""CPU decode speed, stage by stage, and what each synthesis option costs in PSNR and in pixels.

    python -m bench.decode_speed                      # Kodak, 2 torch threads, 3 repeats
    python -m bench.decode_speed --limit 4 --repeat 1 --out /tmp/decode_speed.md
    python -m bench.decode_speed --compile            # also torch.compile of the synthesis

Decoding is the in-memory ``Codec(device="cpu").decompress(data)`` of each image's file at
``--quality`` with the Wiener filter. Per image and stage, the median of ``--repeat`` timed runs
(after one warm-up), then the mean over images:

- parse (container, sections), the integer prior and ANS (``Codec._decode``: exact, untouched by
  any option here), g_s after the inverse gain, the post-filter, the Wiener filter with clamping and
  rounding (``codec._to_uint8``), the conversion to the output image;
- for the synthesis options: ``reference`` (the layers as they are, float32: what the decoder ran
  before the inference layout), ``float32`` and ``bfloat16`` (the inference layout of
  :class:`vaecodec.transforms.SynthesisTransform` in that dtype) and, with ``--compile``,
  ``torch.compile`` of the default one, whose warm-up is reported on its own;
- the whole ``decompress`` with the default codec, timed as one call.

Quality: the files are encoded once by a float32 codec (``filter fitted to float32``) and once by
a bfloat16 one (``fitted to bfloat16``); their latents must be identical (exit 1 otherwise). Each
option decodes them; the PSNR against the original is compared with the reference decode of the
float32 files, and the decoded pixels with the reference decode of the same file: the largest
difference in grey levels and the fraction of pixels that differ. Writes ``bench/results/decode_speed.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.common import DEFAULT_DATA, ROOT, environment, image_files, load_rgb
from bench.metrics import psnr
from vaecodec import Codec, image
from vaecodec.codec import _as, _to_uint8
from vaecodec.quality import level_of

STAGES = ("parse", "integer prior + ANS", "g_s", "post-filter", "Wiener + clamp + round", "to image")


def median_time(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Option:
    """One way to run the synthesis: g_s (after the inverse gain) and the post-filter."""

    def __init__(self, codec: Codec, name: str, dtype: torch.dtype, grad: bool = False) -> None:
        self.codec, self.name, self.dtype, self.grad = codec, name, dtype, grad
        self.g_s, self.post = codec.model.g_s, codec.model.post

    def _mode(self) -> torch.set_grad_enabled:
        return torch.set_grad_enabled(self.grad)  # with autograd on: the layers as they are

    def g(self, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        m = self.codec.model
        with self._mode():
            return self.g_s(y * m.gains.inverse_gain(level))

    def p(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        with self._mode():
            return self.post(x, level)

    def pixels(self, data: bytes) -> np.ndarray:
        """The decoded RGB of a file through this option (the codec's own parse, prior and Wiener)."""
        c = self.codec
        parsed = c.parse(data)
        y = c._decode(parsed).y_hat
        level = torch.tensor([level_of(parsed.header.quality)])
        w, h = parsed.size
        with self._mode():
            x = self.p(self.g(y, level), level).clamp(0, 1).mul(255)[0, :, :h, :w]
        return _to_uint8(x, parsed.filter)

    def stages(self, data: bytes, repeat: int) -> dict[str, float]:
        c = self.codec
        parsed = c.parse(data)
        y = c._decode(parsed).y_hat
        level = torch.tensor([level_of(parsed.header.quality)])
        w, h = parsed.size
        x = self.g(y, level)
        xp = self.p(x, level)
        crop = xp.clamp(0, 1).mul(255)[0, :, :h, :w]
        rgb = _to_uint8(crop, parsed.filter)
        pic = image.Picture(rgb, parsed.header.mode, parsed.alpha, parsed.metadata)
        return dict(zip(STAGES, (
            median_time(lambda: c.parse(data), repeat),
            median_time(lambda: c._decode(parsed), repeat),
            median_time(lambda: self.g(y, level), repeat),
            median_time(lambda: self.p(x, level), repeat),
            median_time(lambda: _to_uint8(crop, parsed.filter), repeat),
            median_time(lambda: _as("pil", image.to_pil(pic)), repeat),
        ), strict=True))


def compiled(codec: Codec, name: str) -> tuple[Option, float] | None:
    """torch.compile of the codec's default synthesis; None where it cannot compile here. Returns
    the option and the seconds of its first call (the compilation)."""
    opt = Option(codec, name, codec.model.synthesis_dtype)
    try:
        opt.g_s, opt.post = torch.compile(opt.g_s, dynamic=False), torch.compile(opt.post, dynamic=False)
        y = torch.zeros(1, codec.model.config.m, 32, 48)
        level = torch.tensor([level_of(7.0)])
        t0 = time.perf_counter()
        with torch.inference_mode():
            opt.p(opt.g(y, level), level)
        return opt, time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001  (no compiler, an unsupported op: report and go on)
        print(f"torch.compile unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak")
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--quality", type=float, default=7.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the synthesis")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decode_speed.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment("cpu", args.threads)
    default, f32, bf16 = Codec(device="cpu"), Codec(device="cpu"), Codec(device="cpu")
    f32.model.set_synthesis_dtype(torch.float32)
    bf16.model.set_synthesis_dtype(torch.bfloat16)
    files = image_files(args.data, args.limit)
    originals = {f: np.asarray(load_rgb(f)) for f in files}
    blobs = {"float32": {f: f32.compress(originals[f], args.quality) for f in files},
             "bfloat16": {f: bf16.compress(originals[f], args.quality) for f in files}}
    same = all(all(np.array_equal(a, b) for a, b in zip(f32.decode_integers(blobs["float32"][f]).values(),
                                                        bf16.decode_integers(blobs["bfloat16"][f]).values(),
                                                        strict=True)) for f in files)
    options = [Option(f32, "reference (layers as they are, float32)", torch.float32, grad=True),
               Option(f32, "float32", torch.float32), Option(bf16, "bfloat16", torch.bfloat16)]
    compile_s = None
    if args.compile:
        got = compiled(default, f"torch.compile ({str(default.model.synthesis_dtype)[6:]})")
        if got:
            options.append(got[0])
            compile_s = got[1]

    ref = {fitted: {f: options[0].pixels(blobs[fitted][f]) for f in files} for fitted in blobs}
    ref_psnr = np.mean([psnr(ref["float32"][f], originals[f]) for f in files])
    quality_rows = []
    for opt in options:
        for fitted in ("float32", "bfloat16"):
            rgb = {f: opt.pixels(blobs[fitted][f]) for f in files}
            diff = [np.abs(rgb[f].astype(int) - ref[fitted][f]) for f in files]
            frac = [float(np.mean(d > 0)) for d in diff]
            d_psnr = np.mean([psnr(rgb[f], originals[f]) for f in files]) - ref_psnr
            worst = max(int(d.max()) for d in diff)
            quality_rows.append(f"| {opt.name} | {fitted} | {d_psnr:+.4f} | {worst} | "
                                f"{100 * np.mean(frac):.3f} | {100 * max(frac):.3f} |")
            print(quality_rows[-1], flush=True)

    split = {opt.name: {s: 0.0 for s in STAGES} for opt in options}
    for opt in options:
        for f in files:
            for s, v in opt.stages(blobs["float32"][f], args.repeat).items():
                split[opt.name][s] += v / len(files)
        print(opt.name, split[opt.name], flush=True)
    label = f"default ({str(default.model.synthesis_dtype)[6:]})"
    whole = {name: np.mean([median_time(lambda f=f, c=c: c.decompress(blobs["float32"][f]), args.repeat)
                            for f in files])
             for name, c in (("float32", f32), (label, default))}

    lines = [f"# CPU decode speed and the synthesis options ({args.data.name}, {len(files)} images, "
             f"q={args.quality:g}, Wiener filter on)", "", *env, "",
             "Seconds per image: median of the repeats, mean over the images, in memory, "
             f"{args.threads} torch threads. Latents of the float32- and bfloat16-encoded files identical: "
             f"**{'yes' if same else 'NO'}**.", "",
             "## Where the time goes (s/img)", "",
             "| stage | " + " | ".join(o.name for o in options) + " |",
             "|---|" + "---|" * len(options)]
    for s in STAGES:
        lines.append(f"| {s} | " + " | ".join(f"{split[o.name][s]:.4f}" for o in options) + " |")
    sums = (f"**{sum(split[o.name].values()):.4f}**" for o in options)
    lines.append("| **sum** | " + " | ".join(sums) + " |")
    lines += ["", "Whole `Codec(device=\"cpu\").decompress(data)`, one call timed:", "",
              "| codec | s/img |", "|---|---|", *[f"| {k} | {v:.4f} |" for k, v in whole.items()]]
    if compile_s is not None:
        lines += ["", f"torch.compile's first call (compilation, one image size): {compile_s:.1f} s."]
    lines += ["", "## Quality against the reference decode of the float32-fitted files", "",
              f"Reference PSNR (mean over images): {ref_psnr:.4f} dB; every PSNR change is to it. Pixel "
              "differences, in grey levels, are to the reference decode of the same file (what two "
              "machines decoding one file may disagree by).", "",
              "| option | filter fitted to | PSNR change dB | max diff | % pixels differing (mean) | "
              "% pixels differing (worst image) |", "|---|---|---|---|---|---|", *quality_rows, ""]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
