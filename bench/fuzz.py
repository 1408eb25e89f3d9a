"""Fuzzing the decoder: damaged and lying .vaez files must be decoded or refused, never crash or hang.

    python -m bench.fuzz --make-corpus          # (re)write the corpus, tests/data/fuzz/*.vaez
    python -m bench.fuzz --minutes 10           # the long run; writes bench/results/fuzz.md
    python -m bench.fuzz --replay 1:4711        # show what case 4711 of seed 1 does

The corpus is a dozen tiny real files made from synthetic images: every colour mode (RGB, L, RGBA,
LA), with and without the Wiener filter section, with and without the metadata section, qualities
from 1 to 10, one 1x1 image, one with escapes. :func:`mutate` makes one damaged file from a corpus
file and a source of integers (``pick(lo, hi)``): ``random.Random.randint`` here, hypothesis's
``st.integers`` in tests/test_fuzz.py, so the test in CI and this long run share every mutation.

Mutations, by family (the case's ``kind`` is ``family-op``):

- ``raw``: truncation, a bit flip, a byte replaced, bytes inserted or deleted anywhere in the file,
  the CRC left as it is (what a damaged download looks like);
- ``rawcrc``: the same with the CRC recomputed afterwards, where the header can still be read;
- ``stream``, ``escapes``, ``alpha``, ``filter``, ``metadata``: one section's bytes changed (the
  same operations, plus the escape stream replaced by random bytes) and the file packed again, so
  the CRC is right and the symbols' checksum is the original's: only the payload's own checks and
  the symbols' checksum stand between the damage and a wrong image;
- ``header``: header fields rewritten with a valid CRC: sizes from 1 to beyond the format's limit,
  with the streams kept or emptied (a giant image claimed by a tiny file), the colour mode, the
  quality, the symbols' checksum, the model id.

:func:`check` is the property: decoding returns an image of the header's size and mode, or raises a
:class:`VaecodecError`; and when the CRC is right and the symbols' checksum is the original's, a file
that decodes holds the original symbols, and gives the original pixels unless a header field, the
filter or the alpha plane changed (those change the pixels legitimately, or have their own checks).
Anything else is a violation: another exception (a crash) or a wrong image.

The long run executes cases in a worker subprocess under a memory limit (RLIMIT_AS) and a per-case
timeout; a case that times out is a hang, a worker that dies is a crash, and the worker is started
again. The results file counts executions, outcomes (each error message, numbers masked), crashes,
hangs, violations, the worker's peak RSS, and what became of the damaged payloads whose CRC was
recomputed: refused, or decoded (and with which symbols).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import resource
import select
import struct
import subprocess
import sys
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vaecodec import container
from vaecodec.bits import BitReader
from vaecodec.errors import CorruptFileError, VaecodecError

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "fuzz"
RESULTS = ROOT / "bench" / "results" / "fuzz.md"

Pick = Callable[[int, int], int]  # an integer in [lo, hi], both included

# name -> (mode, width, height, quality, Wiener filter, metadata, noise, stripes): the corpus. Metadata
# "text" is stored deflated, "random" (an incompressible ICC profile) as is; stripes (alternate black
# and white columns on the left) are what makes the encoder escape symbols.
SPECS: dict[str, tuple[str, int, int, float, bool, str, float, bool]] = {
    "rgb-q1": ("RGB", 16, 16, 1, True, "", 0, False),
    "rgb-q4-nofilter": ("RGB", 24, 20, 4, False, "", 2, False),
    "rgb-q7.5-1x1": ("RGB", 1, 1, 7.5, True, "", 0, False),
    "rgb-q10-meta": ("RGB", 33, 17, 10, True, "text", 20, False),
    "rgb-q10-escapes": ("RGB", 16, 16, 10, True, "", 10, True),
    "rgb-q6-70x40-nofilter": ("RGB", 70, 40, 6, False, "", 4, False),
    "l-q3": ("L", 16, 16, 3, True, "", 10, False),
    "l-q7-escapes": ("L", 16, 16, 7, True, "", 0, True),
    "l-q8-meta-nofilter": ("L", 17, 9, 8, False, "text", 4, False),
    "rgba-q5": ("RGBA", 16, 16, 5, True, "", 10, False),
    "rgba-q8-escapes": ("RGBA", 16, 16, 8, True, "", 10, True),
    "rgba-q2-meta-nofilter": ("RGBA", 12, 20, 2, False, "text", 2, False),
    "la-q6-meta": ("LA", 16, 16, 6, True, "random", 0, True),
    "la-q9-nofilter": ("LA", 9, 13, 9, False, "", 2, False),
}
SECTIONS = ("stream", "escapes", "alpha", "filter", "metadata")
OPS = ("truncate", "flip", "replace", "insert", "delete")
HEADER_OPS = ("size", "size-empty", "mode", "quality", "checksum", "model")
# sizes a lying header claims: small, around the 64-pixel padding, large, at and beyond the limits
SIDES = (1, 2, 15, 16, 17, 63, 64, 65, 100, 1000, 4096, 8192, 16384, 65535, 65536, 1 << 20, 1 << 34,
         1 << 40)
QUALITIES_X100 = (0, 99, 100, 101, 550, 1000, 1001, 65535)


# ---- the corpus --------------------------------------------------------------------------------


def _image_file(mode: str, width: int, height: int, seed: int, noise: float, meta: str, stripes: bool
                ) -> bytes:
    """A PNG of a synthetic image (gradients, a disc, noise, stripes) in ``mode``, with ICC, EXIF and
    XMP when ``meta`` ("text": a compressible ICC, "random": an incompressible one)."""
    from PIL import Image, PngImagePlugin

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = xx / max(width - 1, 1), yy / max(height - 1, 1)
    rgb = np.stack([40 + 170 * u, 60 + 140 * v, 200 - 60 * (u + v)], axis=-1)
    disc = (xx - width * 0.3) ** 2 + (yy - height * 0.4) ** 2 < (min(height, width) * 0.25) ** 2
    rgb[disc] = [220, 200, 60]
    rgb += rng.normal(0, noise, rgb.shape)
    if stripes:
        rgb[:, : width // 2] = 255.0 * (xx[:, : width // 2, None] % 2)
    im = Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
    if mode in ("L", "LA"):
        im = im.convert("L")
    if mode in ("RGBA", "LA"):
        im.putalpha(Image.fromarray(np.clip(40 + 200 * u, 0, 255).astype(np.uint8)))
    options: dict = {}
    if meta:
        exif = Image.Exif()
        exif[0x010F] = "vaecodec fuzz corpus"  # Make
        exif[0x0131] = "bench/fuzz.py"  # Software
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"/>')
        icc = rng.bytes(300) if meta == "random" else b"not a real ICC profile" * 2
        options = {"exif": exif, "icc_profile": icc, "pnginfo": info}
    buf = io.BytesIO()
    im.save(buf, format="PNG", **options)
    return buf.getvalue()


def make_corpus(codec, folder: Path = CORPUS) -> dict[str, bytes]:
    """Encode every :data:`SPECS` entry; written to ``folder`` as ``<name>.vaez`` unless it is None."""
    files = {}
    for seed, (name, (mode, w, h, quality, filt, meta, noise, stripes)) in enumerate(SPECS.items()):
        png = _image_file(mode, w, h, seed, noise, meta, stripes)
        files[name] = codec.compress(png, quality, wiener=filt)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / f"{name}.vaez").write_bytes(data)
    return files


def load_corpus(folder: Path = CORPUS) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(folder.glob("*.vaez"))}


def corpus_for(codec, folder: Path = CORPUS) -> dict[str, bytes]:
    """The stored corpus, or (when it was made by another model than ``codec``'s, as after the
    shipped weights change) the same files encoded again in memory."""
    files = load_corpus(folder)
    if files and all(container.unpack(d)[0].model_id == codec.model.model_id for d in files.values()):
        return files
    return make_corpus(codec, None)


# ---- mutations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A damaged file: which corpus file, what was done to it, and the bytes."""

    name: str
    kind: str  # family-op, e.g. "raw-flip", "stream-insert", "header-size-empty"
    data: bytes

    @property
    def family(self) -> str:
        return self.kind.split("-", 1)[0]


def _random_bytes(pick: Pick, n: int) -> bytes:
    return bytes(pick(0, 255) for _ in range(n))


def apply_op(op: str, b: bytes, pick: Pick) -> bytes:
    """One byte-level operation on ``b``, its place and values from ``pick``."""
    if not b and op != "insert":
        op = "insert"
    if op == "truncate":
        return b[: pick(0, len(b) - 1)]
    if op == "flip":
        pos = pick(0, len(b) - 1)
        return b[:pos] + bytes([b[pos] ^ (1 << pick(0, 7))]) + b[pos + 1 :]
    if op == "replace":
        pos = pick(0, len(b) - 1)
        return b[:pos] + bytes([pick(0, 255)]) + b[pos + 1 :]
    if op == "insert":
        pos = pick(0, len(b))
        return b[:pos] + _random_bytes(pick, pick(1, 8)) + b[pos:]
    if op == "delete":
        pos = pick(0, len(b) - 1)
        return b[:pos] + b[pos + pick(1, min(8, len(b) - pos)) :]
    raise ValueError(op)


def crc_position(data: bytes) -> int | None:
    """Where a file's CRC32 field starts, if its header can be read that far; else None."""
    if len(data) < container._FIXED.size:
        return None
    reader = BitReader(data, "header", 8 * container._FIXED.size)
    try:
        for _ in range(7 if data[13] & container.HAS_METADATA else 6):
            reader.varint(5)
    except CorruptFileError:
        return None
    pos = reader.byte_pos + 4
    return pos if len(data) >= pos + 4 else None


def recrc(data: bytes) -> bytes:
    """The file with its CRC recomputed over whatever it now holds (as is when the header is unreadable)."""
    pos = crc_position(data)
    if pos is None:
        return data
    crc = zlib.crc32(data[pos + 4 :], zlib.crc32(data[:pos]))
    return data[:pos] + struct.pack("<I", crc) + data[pos + 4 :]


def _rewrite_header(op: str, header: container.Header, payload: container.Payload, pick: Pick
                    ) -> tuple[container.Header, container.Payload]:
    if op in ("size", "size-empty"):
        def side(original: int) -> int:
            r = pick(0, len(SIDES) + 1)
            return SIDES[r] if r < len(SIDES) else original + (1 if r == len(SIDES) else -1)

        header = replace(header, width=side(header.width), height=side(header.height))
        if op == "size-empty":
            payload = replace(payload, stream=b"", escapes=b"", checksum=pick(0, 1) * payload.checksum)
        return header, payload
    if op == "mode":
        return replace(header, mode=container.MODES[pick(0, len(container.MODES) - 1)]), payload
    if op == "quality":
        r = pick(0, len(QUALITIES_X100))
        q100 = QUALITIES_X100[r] if r < len(QUALITIES_X100) else pick(0, 0xFFFF)
        return replace(header, quality=q100 / 100), payload
    if op == "checksum":
        return header, replace(payload, checksum=pick(0, 0xFFFFFFFF))
    if op == "model":
        pos, bit = pick(0, 7), pick(0, 7)
        mid = bytearray(header.model_id)
        mid[pos] ^= 1 << bit
        return replace(header, model_id=bytes(mid)), payload
    raise ValueError(op)


# half of the cases damage a payload section with the CRC right: the ones only the payload's own checks
# and the symbols' checksum can refuse
FAMILIES = ("raw", "raw", "rawcrc", "payload", "payload", "payload", "payload", "payload", "header", "header")


def mutate(name: str, data: bytes, pick: Pick, families: tuple[str, ...] = FAMILIES) -> Case:
    """One damaged version of the corpus file ``data`` (module docstring), every choice from ``pick``;
    the family from ``families`` ("raw", "rawcrc", "payload", "header"; repeats weigh)."""
    family = families[pick(0, len(families) - 1)]
    if family in ("raw", "rawcrc"):
        op = OPS[pick(0, len(OPS) - 1)]
        out = apply_op(op, data, pick)
        return Case(name, f"{family}-{op}", out if family == "raw" else recrc(out))
    header, payload = container.unpack(data)
    if family == "header":
        op = HEADER_OPS[pick(0, len(HEADER_OPS) - 1)]
        return Case(name, f"header-{op}", container.pack(*_rewrite_header(op, header, payload, pick)))
    present = [s for s in SECTIONS if getattr(payload, s)]
    r = pick(0, len(present))  # mostly a section the file has; sometimes any (an empty one gets bytes)
    section = present[r] if r < len(present) else SECTIONS[pick(0, len(SECTIONS) - 1)]
    ops = OPS + (("random",) if section == "escapes" else ())
    op = ops[pick(0, len(ops) - 1)]
    old = getattr(payload, section)
    new = _random_bytes(pick, pick(0, 16)) if op == "random" else apply_op(op, old, pick)
    return Case(name, f"{section}-{op}", container.pack(header, replace(payload, **{section: new})))


# ---- the property ------------------------------------------------------------------------------


@dataclass
class Reference:
    """What a corpus file decodes to."""

    header: container.Header
    payload: container.Payload
    pixels: np.ndarray
    z: np.ndarray
    y: np.ndarray


def reference(codec, data: bytes) -> Reference:
    header, payload = container.unpack(data)
    ints = codec.decode_integers(data)
    return Reference(header, payload, np.asarray(codec.decompress(data)), ints["z"], ints["y"])


@dataclass(frozen=True)
class Outcome:
    result: str  # "refused", "decoded" or "violation"
    detail: str  # the error (type: message, numbers masked), or what was decoded

    @property
    def ok(self) -> bool:
        return self.result != "violation"


def error_key(exc: BaseException) -> str:
    """An error as type and message with the numbers masked, so equal causes count together."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {re.sub(r'[0-9]+', 'N', re.sub(r'[0-9a-f]{16}', 'ID', text))}"[:160]


def check(codec, case: Case, ref: Reference) -> Outcome:
    """Decode a damaged file and judge the result (module docstring). An exception that is not a
    VaecodecError propagates: that is a crash."""
    try:
        img = codec.decompress(case.data)
    except VaecodecError as exc:
        return Outcome("refused", error_key(exc))
    header, payload = container.unpack(case.data)  # it decoded, so it parses
    if img.size != (header.width, header.height) or img.mode != header.mode:
        return Outcome("violation", f"decoded to {img.size} {img.mode}, the header says "
                                    f"{(header.width, header.height)} {header.mode}")
    if payload.checksum != ref.payload.checksum:
        return Outcome("decoded", "symbols' checksum rewritten")
    ints = codec.decode_integers(case.data)
    if ints["z"].shape != ref.z.shape or ints["y"].shape != ref.y.shape or not (
            np.array_equal(ints["z"], ref.z) and np.array_equal(ints["y"], ref.y)):
        return Outcome("violation", "decoded other symbols than the original's under its checksum")
    pixels = np.asarray(img)
    if pixels.shape == ref.pixels.shape and np.array_equal(pixels, ref.pixels):
        return Outcome("decoded", "original pixels")
    if header != ref.header or payload.filter != ref.payload.filter:
        return Outcome("decoded", "other pixels (header or filter changed)")
    colour = pixels.shape == ref.pixels.shape and np.array_equal(pixels[..., :-1], ref.pixels[..., :-1])
    if payload.alpha != ref.payload.alpha and colour:
        return Outcome("decoded", "other pixels (alpha plane changed)")
    return Outcome("violation", "same symbols, header and filter, other pixels")


# ---- the long run: a worker under limits, and its parent -----------------------------------------


def case_of(seed: int, i: int, corpus: dict[str, bytes]) -> Case:
    """Case i of a run: the same on every machine and every run with that seed."""
    rng = random.Random(seed * 1_000_003 + i)
    names = sorted(corpus)
    name = names[rng.randint(0, len(names) - 1)]
    return mutate(name, corpus[name], rng.randint)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(seed: int) -> None:
    """Read case numbers on stdin, answer one JSON line each on stdout."""
    import torch

    from vaecodec import Codec

    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")  # the protocol's; anything printed goes to stderr
    sys.stdout = sys.stderr
    torch.set_num_threads(1)
    codec = Codec(device="cpu")
    corpus = corpus_for(codec)
    refs = {name: reference(codec, data) for name, data in corpus.items()}
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        i = int(line)
        case = case_of(seed, i, corpus)
        changed = case.data != corpus[case.name]
        start = time.perf_counter()
        try:
            outcome = check(codec, case, refs[case.name])
            result, detail = outcome.result, outcome.detail
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - a crash is what we are looking for
            result = "crash"
            detail = f"{error_key(exc)} | {traceback.format_exc(limit=-3).splitlines()[-3:]}"
        out.write(json.dumps({"i": i, "name": case.name, "kind": case.kind, "changed": changed,
                              "result": result, "detail": detail, "s": time.perf_counter() - start,
                              "rss": _peak_rss_mb()}) + "\n")
        out.flush()


class Worker:
    """A worker subprocess under an address-space limit."""

    def __init__(self, seed: int, memory: int) -> None:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.fuzz", "--worker", "--seed", str(seed)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env,
                                     preexec_fn=limit, text=True, bufsize=1)
        ready = self.read(300)
        if not ready or not ready.get("ready"):
            raise SystemExit("the fuzz worker did not start")

    def read(self, timeout: float) -> dict | None:
        """The next line as JSON; None on timeout or when the worker died. (One request, one line:
        nothing waits in the pipe's buffer that select cannot see.)"""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def run(self, i: int, timeout: float) -> dict | None:
        try:
            self.proc.stdin.write(f"{i}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # it died after the last case it answered
            return None
        return self.read(timeout)

    def stop(self) -> int | None:
        self.proc.kill()
        self.proc.wait()
        return self.proc.returncode


def long_run(minutes: float, seed: int, memory: int, timeout: float) -> dict:
    """Run cases 0, 1, 2, ... for ``minutes``; a hang or a dead worker is recorded and the worker
    started again."""
    stats: dict = {"executions": 0, "seconds": 0.0, "results": Counter(), "details": Counter(),
                   "by_family": Counter(), "crashes": [], "hangs": [], "violations": [], "peak_rss_mb": 0.0,
                   "unchanged": 0, "payload": Counter(), "slowest": (0.0, None), "restarts": 0,
                   "example": {}}
    end = time.monotonic() + 60 * minutes
    work = Worker(seed, memory)
    i = 0
    while time.monotonic() < end:
        rec = work.run(i, timeout)
        if rec is None:
            code = work.proc.poll()
            if code is None:
                stats["hangs"].append(i)
            else:
                stats["crashes"].append((i, f"worker died with exit status {code}"))
            work.stop()
            stats["restarts"] += 1
            work = Worker(seed, memory)
            i += 1
            continue
        stats["executions"] += 1
        stats["seconds"] += rec["s"]
        stats["peak_rss_mb"] = max(stats["peak_rss_mb"], rec["rss"])
        if rec["s"] > stats["slowest"][0]:
            stats["slowest"] = (rec["s"], f"{seed}:{i} ({rec['kind']} of {rec['name']})")
        family = rec["kind"].split("-", 1)[0]
        stats["by_family"][family] += 1
        if not rec["changed"]:
            stats["unchanged"] += 1
        stats["results"][rec["result"]] += 1
        if rec["result"] in ("refused", "decoded"):
            key = rec["detail"] if rec["result"] == "refused" else f"decoded: {rec['detail']}"
            stats["details"][key] += 1
            stats["example"].setdefault(key, f"{seed}:{i}")
        elif rec["result"] == "crash":
            stats["crashes"].append((i, rec["detail"]))
        else:
            stats["violations"].append((i, rec["detail"]))
        if family in SECTIONS and rec["changed"]:
            key = "refused" if rec["result"] == "refused" else rec["detail"]
            stats["payload"][(family, key)] += 1
        i += 1
    work.stop()
    return stats


def report(stats: dict, minutes: float, seed: int, memory: int, timeout: float) -> str:
    from bench.common import environment

    lines = ["# Decoder fuzzing", "", *environment("cpu", 1), "",
             f"{minutes:g} minutes, seed {seed}, corpus tests/data/fuzz/ ({len(SPECS)} files), one worker "
             f"process under RLIMIT_AS = {memory / 1e9:g} GB and a {timeout:g} s per-case timeout "
             "(bench/fuzz.py says what each mutation does). Replay a case with "
             "`python -m bench.fuzz --replay SEED:CASE`.", "",
             "| | count |", "|---|---|",
             f"| executions | {stats['executions']} ({stats['executions'] / (60 * minutes):.0f} a second; "
             f"{1000 * stats['seconds'] / max(stats['executions'], 1):.1f} ms a case in the worker) |",
             f"| crashes (not a VaecodecError, or the worker died) | {len(stats['crashes'])} |",
             f"| hangs (over {timeout:g} s) | {len(stats['hangs'])} |",
             f"| property violations (wrong size or mode, other symbols or pixels) | "
             f"{len(stats['violations'])} |",
             f"| peak RSS of the worker | {stats['peak_rss_mb']:.0f} MB |",
             f"| slowest case | {stats['slowest'][0]:.2f} s, {stats['slowest'][1]} |",
             f"| mutations that left the file unchanged | {stats['unchanged']} |", ""]
    lines += ["## Cases by family", "", "| family | executions |", "|---|---|"]
    lines += [f"| {f} | {n} |" for f, n in sorted(stats["by_family"].items())]
    lines += ["", "## Damaged payloads with the CRC recomputed (symbols' checksum kept)", "",
              "A section changed and the file packed again. Decoded files must hold the original symbols "
              "(checked: all did, or they would be violations above); their pixels may differ only where "
              "the filter or the alpha plane changed.", "",
              "| section | changed | refused | decoded, original pixels | decoded, other pixels |",
              "|---|---|---|---|---|"]
    p = stats["payload"]
    for section in SECTIONS:
        decoded = sum(n for (s, key), n in p.items() if s == section and key != "refused")
        same = p[(section, "original pixels")]
        refused = p[(section, "refused")]
        lines.append(f"| {section} | {refused + decoded} | {refused} | {same} | {decoded - same} |")
    lines += ["", "The symbols' checksum covers the latents only. The filter section is covered by the "
              "file's CRC alone, so with the CRC recomputed a filter that still parses decodes to other "
              "pixels; the alpha plane, a PNG, has its own chunk CRCs, but Pillow does not check those of "
              "the image data, so an altered alpha PNG can decode to another alpha plane (the last "
              "column for alpha).", ""]
    lines += ["## Outcomes", "", "| outcome | count | first case |", "|---|---|---|"]
    lines += [f"| {d.replace('|', '/')} | {n} | {stats['example'][d]} |"
              for d, n in stats["details"].most_common()]
    for title, items in (("Crashes", stats["crashes"]), ("Violations", stats["violations"])):
        if items:
            lines += ["", f"## {title}", ""] + [f"- {seed}:{i}: {d}" for i, d in items[:50]]
    if stats["hangs"]:
        lines += ["", "## Hangs", ""] + [f"- {seed}:{i}" for i in stats["hangs"][:50]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--make-corpus", action="store_true", help="write tests/data/fuzz/ and stop")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory", type=float, default=4.0, help="the worker's RLIMIT_AS, GB")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds a case may take")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--replay", metavar="SEED:CASE", help="run one case and print its outcome")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.seed)
    if args.make_corpus or args.replay:
        import torch

        from vaecodec import Codec

        torch.set_num_threads(1)
        codec = Codec(device="cpu")
        if args.make_corpus:
            for name, data in make_corpus(codec).items():
                header, payload = container.unpack(data)
                print(f"{name}: {len(data)} bytes, {header.width}x{header.height} {header.mode} "
                      f"q{header.quality:g}, escapes {len(payload.escapes)}, filter {len(payload.filter)}, "
                      f"metadata {len(payload.metadata)}")
            return None
        seed, i = (int(v) for v in args.replay.split(":"))
        corpus = corpus_for(codec)
        case = case_of(seed, i, corpus)
        print(f"case {seed}:{i}: {case.kind} of {case.name}, {len(case.data)} bytes")
        print(check(codec, case, reference(codec, corpus[case.name])))
        return None
    stats = long_run(args.minutes, args.seed, int(args.memory * 1e9), args.timeout)
    text = report(stats, args.minutes, args.seed, int(args.memory * 1e9), args.timeout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return None


if __name__ == "__main__":
    main()
