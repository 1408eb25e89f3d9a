"""Rate-distortion of vaecodec against the codecs a user would otherwise pick, on the same images in
the same run, plus the published Kodak curves as reference.

    python -m bench.rd                               # ../shared/data/kodak -> bench/results/kodak/
    python -m bench.rd --data ../shared/data/eval    # another folder -> bench/results/eval/
    python -m bench.rd --limit 3 --peers jpeg420,webp --qualities 1,4,7,10 --out /tmp/rd
    python -m bench.rd --replot bench/results/kodak  # measure nothing: redraw rd.png from its rd.csv

For every image, every vaecodec quality and every peer setting (``bench/peers.py``: JPEG 4:2:0 and
4:4:4, WebP, AVIF, JPEG 2000, JPEG XL; a peer whose library or tool is missing is skipped with a
note) it records the real file bytes (-> bpp), PSNR on 8-bit RGB and MS-SSIM (``bench/metrics.py``),
and encode/decode wall time (image in memory -> bytes -> RGB image; one thread for vaecodec unless
``--threads``). Curves are averaged per setting the CompressAI way (mean bpp, mean PSNR over images).
BD-rate (``bench/bdrate.py``: PSNR, piecewise cubic in log-rate, overlapping PSNR range) is given for
vaecodec against every peer and reference curve, and for every curve against JPEG 4:2:0.

Writes ``rd.csv`` (every point), ``rd.md`` (machine, date, commit, command; per-setting tables;
BD-rates) and ``rd.png`` (PSNR and MS-SSIM vs bpp, up to a little past vaecodec's largest bpp and
zoomed on 0-1 bpp; vaecodec, the peers, JPEG XL and three published curves, ``PLOT_STYLE``; needs
matplotlib, the ``bench`` extra, else skipped with a note). ``--replot`` redraws ``rd.png`` from a
finished run's ``rd.csv`` through the same ``build_curves`` and ``plot``. The published curves
(``../shared/reference/kodak_published_rd.csv``) are over all 24 Kodak images and only drawn for a
Kodak run; they are marked "published", never mixed with measured ones.

Validation against ``../shared/reference/kodak_conventional_measured.csv`` (made with the same
libjpeg-turbo 3.2, libwebp and OpenJPEG 2.5), from the full Kodak run (``bench/results/kodak/rd.md``,
section "Peers against the reference measurements"): JPEG 4:2:0, JPEG 4:4:4, WebP and JPEG 2000 give
byte-identical files at all 312 points each (24 images x 13 settings), PSNR within 5e-5 dB of the
CSV (its 4-decimal rounding), MS-SSIM within 5.7e-5 (float32 here against float64 there), and the same
BD-rates against JPEG to the tenth of a percent; that checks ``metrics.ms_ssim`` against an independent
implementation. AVIF differs by the encoder build (Pillow's libavif/aom here, avifenc 0.11 there):
same quantizers, different bytes, up to 1.03 dB apart at one point, BD vs JPEG -55.8 % here against
-57.3 % there.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.bdrate import bd_rate, overlap
from bench.common import DEFAULT_DATA, ROOT, environment, image_files, load_rgb
from bench.metrics import ms_ssim, psnr
from bench.peers import Peer, all_peers
from vaecodec.quality import DEFAULT_EFFORT
from vaecodec.weights import DEFAULT_MODEL

REFERENCE_DIR = ROOT.parent / "shared" / "reference"
PUBLISHED_REFERENCE = "kodak_published_rd.csv"
ANCHOR = "jpeg420"
# published curves drawn as reference: CSV codec name -> label
REFERENCE_CURVES = {
    "compressai-bmshj2018-factorized_mse_cuda": "bmshj2018-factorized (CompressAI)",
    "compressai-bmshj2018-hyperprior_mse_cuda": "bmshj2018-hyperprior (CompressAI)",
    "compressai-mbt2018-mean_mse_cuda": "mbt2018-mean (CompressAI)",
    "compressai-mbt2018_mse_cuda": "mbt2018 (CompressAI)",
    "compressai-cheng2020-anchor_mse_cuda": "cheng2020-anchor (CompressAI)",
    "bpg_444_x265_ycbcr": "BPG 4:4:4 (x265)",
    "vtm": "VTM-9.1 (VVC intra)",
    "av1": "AV1 (aom)",
}
# per-image measurements of conventional codecs on a machine of this project's kind (reference README)
MEASURED_REFERENCE = "kodak_conventional_measured.csv"
MEASURED_LABELS = {
    "jxl": "JPEG XL (cjxl 0.7 -e 7)",
    "jxl_pil": "JPEG XL (pillow-jxl-plugin)",
    "hevc444": "HEVC 4:4:4 (x265 3.5 veryslow)",
    "heic444": "HEIC 4:4:4 (heif-enc)",
    "avif": "AVIF 4:4:4 (avifenc 0.11, aom speed 6)",
}
SOURCES = {"measured": "measured", "published": "published (CompressAI)",
           "reference": "reference measurement"}
FIELDS = ["image", "codec", "setting", "bytes", "bpp", "psnr", "ms_ssim", "enc_s", "dec_s", "width", "height"]


def measure(images: dict[str, Image.Image], codec: str, setting: float,
            encode: Callable[[Image.Image], bytes], decode: Callable[[bytes], Image.Image]) -> list[dict]:
    """One codec at one setting on every image: bytes, bpp, PSNR, MS-SSIM and wall times."""
    rows = []
    for name, img in images.items():
        t0 = time.perf_counter()
        data = encode(img)
        t1 = time.perf_counter()
        out = decode(data)
        t2 = time.perf_counter()
        a, b = np.asarray(img), np.asarray(out.convert("RGB"))
        w, h = img.size
        rows.append({"image": name, "codec": codec, "setting": setting, "bytes": len(data),
                     "bpp": 8 * len(data) / (w * h), "psnr": psnr(a, b), "ms_ssim": ms_ssim(a, b),
                     "enc_s": t1 - t0, "dec_s": t2 - t1, "width": w, "height": h})
    return rows


def vaecodec_name(effort: int) -> str:
    """The curve name of vaecodec at an effort: plain "vaecodec" at the default effort."""
    return "vaecodec" if effort == DEFAULT_EFFORT else f"vaecodec-e{effort}"


def is_ours(name: str) -> bool:
    return name == "vaecodec" or name.startswith("vaecodec-e")


def effort_of(name: str) -> int:
    """The effort of a vaecodec curve name (inverse of ``vaecodec_name``)."""
    return DEFAULT_EFFORT if name == "vaecodec" else int(name.removeprefix("vaecodec-e"))


def run_vaecodec(images: dict[str, Image.Image], qualities: list[float], device: str,
                 model: str | None = None, efforts: tuple[int, ...] = (DEFAULT_EFFORT,)) -> list[dict]:
    """Every quality at every effort through the public Codec API, the path users take."""
    from vaecodec import Codec

    codec = Codec(model, device=device)
    rows = []
    for effort in efforts:
        for q in qualities:
            rows += measure(images, vaecodec_name(effort), q,
                            lambda img, q=q, e=effort: codec.compress(img, q, effort=e), codec.decompress)
            print(f"vaecodec effort {effort} q={q:g}: done", file=sys.stderr, flush=True)
    return rows


def run_peer(images: dict[str, Image.Image], peer: Peer) -> list[dict]:
    """Every setting of one peer, single-threaded (as the reference measurements were)."""
    rows = []
    for s in peer.settings:
        rows += measure(images, peer.name, s, lambda img, s=s: peer.encode(img, s, 1), peer.decode)
    print(f"{peer.name}: done", file=sys.stderr, flush=True)
    return rows


def means(rows: list[dict]) -> dict[str, list[dict]]:
    """Per codec, per setting: mean of every metric over images (CompressAI's averaging)."""
    out: dict[str, list[dict]] = {}
    for codec in dict.fromkeys(r["codec"] for r in rows):
        for setting in sorted({r["setting"] for r in rows if r["codec"] == codec}):
            sel = [r for r in rows if r["codec"] == codec and r["setting"] == setting]
            out.setdefault(codec, []).append(
                {k: float(np.mean([r[k] for r in sel])) for k in ("bpp", "psnr", "ms_ssim", "enc_s", "dec_s")}
                | {"setting": setting, "n": len(sel)})
    return out


def load_reference(path: Path) -> dict[str, list[dict]]:
    """The published curves of REFERENCE_CURVES from CompressAI's results, as mean points per quality."""
    curves: dict[str, list[dict]] = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            if r["codec"] in REFERENCE_CURVES:
                curves.setdefault(r["codec"], []).append(
                    {"setting": float(r["quality"]), "bpp": float(r["bpp"]), "psnr": float(r["psnr"]),
                     "ms_ssim": float(r["ms_ssim"]) if r["ms_ssim"] else float("nan")})
    return {k: sorted(v, key=lambda p: p["bpp"]) for k, v in curves.items()}


def load_measured_reference(path: Path, images: set[str]) -> list[dict]:
    """The reference file's per-image rows for the images of this run, as ``measure`` rows."""
    with path.open() as f:
        return [{"image": r["image"], "codec": r["codec"], "setting": float(r["quality"]),
                 "bytes": int(r["bytes"]), "bpp": float(r["bpp"]), "psnr": float(r["psnr_rgb"]),
                 "ms_ssim": float(r["ms_ssim"]), "enc_s": float(r["enc_s"]), "dec_s": float(r["dec_s"])}
                for r in csv.DictReader(f) if r["image"] in images]


def reference_check(rows: list[dict], ref_rows: list[dict], labels: dict[str, str]) -> list[str]:
    """How our peer measurements compare with the independent ones, point by point and in BD-rate
    vs JPEG 4:2:0: the evidence that the peers run with the settings the reference describes."""
    index = {(r["image"], r["codec"], r["setting"]): r for r in ref_rows}
    ours, theirs = means(rows), means(ref_rows)
    lines = ["| peer | points matched | identical files | max abs PSNR diff (dB) | max abs MS-SSIM diff | "
             "BD vs JPEG 4:2:0 here | same, from the reference file |", "|---|---|---|---|---|---|---|"]
    for codec in dict.fromkeys(r["codec"] for r in rows if not is_ours(r["codec"])):
        pairs = [(r, index[key]) for r in rows
                 if r["codec"] == codec and (key := (r["image"], codec, r["setting"])) in index]
        if not pairs:
            continue
        same = sum(a["bytes"] == b["bytes"] for a, b in pairs)
        dpsnr = max(abs(a["psnr"] - b["psnr"]) for a, b in pairs)
        dssim = max(abs(a["ms_ssim"] - b["ms_ssim"]) for a, b in pairs)
        if codec == ANCHOR:
            here = there = "anchor"
        else:
            here = bd_cell(ours[ANCHOR], ours[codec]) if ANCHOR in ours else "n/a"
            there = bd_cell(theirs[ANCHOR], theirs[codec])
        lines.append(f"| {labels[codec]} | {len(pairs)} | {same} | {dpsnr:.4f} | {dssim:.2e} | {here} | "
                     f"{there} |")
    return lines


def bd(anchor: list[dict], test: list[dict]) -> float:
    """BD-rate in percent of ``test`` against ``anchor`` (mean points); NaN without PSNR overlap."""
    return bd_rate([p["bpp"] for p in anchor], [p["psnr"] for p in anchor],
                   [p["bpp"] for p in test], [p["psnr"] for p in test])


def bd_cell(anchor: list[dict], test: list[dict]) -> str:
    """BD-rate of ``test`` vs ``anchor`` with the PSNR range it averages over: a BD-rate over a
    fraction of a dB says little, so the range is always shown next to it."""
    curves = [([p["bpp"] for p in c], [p["psnr"] for p in c]) for c in (anchor, test)]
    span = overlap(*curves[0], *curves[1])
    if span is None:
        return "n/a (no PSNR overlap)"
    return f"{bd(anchor, test):+.1f} % ({span[0]:.1f}-{span[1]:.1f} dB)"


def curve_table(title: str, points: list[dict], setting_name: str, timed: bool = True) -> list[str]:
    """Markdown table of one curve's mean points (published curves carry no comparable times)."""
    head = f"| {setting_name} | bpp | PSNR (dB) | MS-SSIM |"
    head += " encode s/img | decode s/img |" if timed else ""
    lines = [f"### {title}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for p in points:
        row = f"| {p['setting']:g} | {p['bpp']:.3f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} |"
        lines.append(row + (f" {p['enc_s']:.3f} | {p['dec_s']:.3f} |" if timed else ""))
    return [*lines, ""]


def bd_table(curves: dict[str, list[dict]], labels: dict[str, str], sources: dict[str, str]) -> list[str]:
    """One row per curve: how many bits vaecodec (at each effort measured) needs against it, and it
    against JPEG 4:2:0."""
    ours = [name for name in curves if is_ours(name)]
    anchor = curves.get(ANCHOR)
    lines = ["| curve | source | " + " | ".join(f"{labels[o]} vs it" for o in ours) + " | it vs JPEG 4:2:0 |",
             "|---|---|" + "---|" * (len(ours) + 1)]
    for name, points in curves.items():
        vs_anchor = "anchor" if name == ANCHOR else (bd_cell(anchor, points) if anchor else "n/a")
        cells = ["-" if o == name else bd_cell(points, curves[o]) for o in ours]
        lines.append(f"| {labels[name]} | {SOURCES[sources[name]]} | {' | '.join(cells)} | {vs_anchor} |")
    return lines


# what the figure draws, in legend order, each with a fixed colour (tab10) and marker so that a codec looks
# the same in every panel and every figure; curves not listed here are in the tables only. Line style
# tells the source: solid = measured here, dotted = reference measurement, dashed = published.
PLOT_STYLE = {
    "jpeg420": ("tab:blue", "o"),
    "webp": ("tab:orange", "s"),
    "avif": ("tab:green", "^"),
    "jpeg2000": ("tab:red", "v"),
    "jxl": ("tab:purple", "D"),
    "jxl_pil": ("tab:purple", "d"),  # drawn only when cjxl's curve is absent
    "bpg_444_x265_ycbcr": ("tab:brown", "P"),
    "compressai-mbt2018-mean_mse_cuda": ("tab:pink", "X"),
    "vtm": ("tab:olive", "*"),
}
# vaecodec: one style per effort, in run order
OURS_STYLE = (("black", "o", "-"), ("dimgray", "s", "--"), ("darkmagenta", "D", "-."))
SOURCE_LINE = {"measured": "-", "reference": ":", "published": "--"}
LEGEND_SOURCE = {"measured": "measured here", "reference": "reference measurement", "published": "published"}
METRICS = (("psnr", "PSNR, 8-bit RGB (dB)"), ("ms_ssim", "MS-SSIM, 8-bit RGB"))


def plotted(curves: dict[str, list[dict]]) -> list[str]:
    """The curves the figure draws: every vaecodec curve, then PLOT_STYLE's in its order (one JPEG XL)."""
    names = [name for name in curves if is_ours(name)]
    return names + [name for name in PLOT_STYLE
                    if name in curves and not (name == "jxl_pil" and "jxl" in curves)]


def axis_limits(curves: dict[str, list[dict]], names: list[str], key: str,
                xmax: float) -> tuple[float, float]:
    """y range from a little below vaecodec's lowest point to a little above the highest point drawn with
    bpp <= xmax, so that peers' points far outside the range of vaecodec do not stretch the axes."""
    ours = [p[key] for name in names if is_ours(name) for p in curves[name] if p["bpp"] <= xmax]
    shown = [p[key] for name in names for p in curves[name] if p["bpp"] <= xmax and np.isfinite(p[key])]
    lo, hi = min(ours or shown), max(shown)
    pad = 0.04 * (hi - lo)
    return lo - pad, hi + pad


def plot(path: Path, curves: dict[str, list[dict]], labels: dict[str, str], sources: dict[str, str],
         dataset: str, n_images: int) -> str | None:
    """PSNR and MS-SSIM vs bpp, full range (top row) and 0-1 bpp (bottom row), vaecodec in bold on top;
    returns a note instead of drawing when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "rd.png not drawn: matplotlib is not installed (`pip install '.[bench]'`)"
    names = plotted(curves)
    ours_names = [name for name in names if is_ours(name)]
    top = max((p["bpp"] for name in ours_names for p in curves[name]), default=2.0)
    ranges = ((0.0, round(1.08 * top + 0.05, 1)), (0.0, 1.0))
    with plt.rc_context({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9}):
        fig, axes = plt.subplots(2, 2, figsize=(14, 10))
        for row, (x0, x1) in enumerate(ranges):
            for col, (key, ylabel) in enumerate(METRICS):
                ax = axes[row, col]
                for name in names:
                    points = [p for p in curves[name] if np.isfinite(p[key])]
                    if not points:  # a published curve without MS-SSIM
                        continue
                    if is_ours(name):
                        color, marker, line = OURS_STYLE[ours_names.index(name) % len(OURS_STYLE)]
                        kw = {"lw": 2.8, "ms": 7, "zorder": 4}
                    else:
                        (color, marker), line = PLOT_STYLE[name], SOURCE_LINE[sources[name]]
                        kw = {"lw": 1.3, "ms": 5, "zorder": 2, "alpha": 0.9}
                    ax.plot([p["bpp"] for p in points], [p[key] for p in points], color=color, marker=marker,
                            ls=line, label=f"{labels[name]} ({LEGEND_SOURCE[sources[name]]})", **kw)
                ax.set(xlim=(x0, x1), ylim=axis_limits(curves, names, key, x1),
                       xlabel="bits per pixel (file bytes)", ylabel=ylabel,
                       title=f"{ylabel.split(',')[0]} vs bpp, {x0:g}-{x1:g} bpp" + (" (zoom)" if row else ""))
                ax.grid(alpha=0.35)
        handles, legend_labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, legend_labels, loc="lower center", ncol=3, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
        shown = dict.fromkeys(sources[name] for name in names)
        line_names = {"-": "solid", ":": "dotted", "--": "dashed"}
        key_text = "; ".join(f"{line_names[SOURCE_LINE[s]]} = {SOURCES[s]}" for s in shown if s != "measured")
        data_name = dataset[:1].upper() + dataset[1:]
        fig.suptitle(f"{data_name} ({n_images} images): rate-distortion, means over images"
                     f"\nsolid = {SOURCES['measured']} here" + (f"; {key_text}" if key_text else ""),
                     fontsize=13)
        fig.tight_layout(rect=(0, 0.085, 1, 1))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
    # a line plot needs few colours: a 256-colour palette keeps the file at a third of the size
    Image.open(buf).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    return None


def build_curves(rows: list[dict], dataset: str, reference: Path
                 ) -> tuple[dict[str, list[dict]], dict[str, str], dict[str, str], list[str], list[str]]:
    """From a run's rows (measured or read back from ``rd.csv``): the curves to tabulate and draw, their
    labels and sources, the check of the peers against the reference measurements, and notes. The
    reference curves are added for Kodak only."""
    images = {r["image"] for r in rows}
    measured = means(rows)
    # a reference row of a codec measured here too is the same tool; otherwise the reference's tool
    labels = {peer.name: peer.label for peer in all_peers()} | MEASURED_LABELS | REFERENCE_CURVES
    labels |= {name: f"vaecodec effort {effort_of(name)}" for name in measured if is_ours(name)}
    labels |= {peer.name: peer.label for peer in all_peers() if peer.name in measured}
    curves, sources = dict(measured), dict.fromkeys(measured, "measured")
    check: list[str] = []
    notes: list[str] = []
    if dataset == "kodak" and (reference / MEASURED_REFERENCE).is_file():
        ref_rows = load_measured_reference(reference / MEASURED_REFERENCE, images)
        check = reference_check(rows, ref_rows, labels)
        for name, points in means(ref_rows).items():
            if name not in curves:  # a codec this run could not measure (tool missing here)
                curves[name], sources[name] = points, "reference"
    if dataset == "kodak" and (reference / PUBLISHED_REFERENCE).is_file():
        for name, points in load_reference(reference / PUBLISHED_REFERENCE).items():
            curves[name], sources[name] = points, "published"
        if len(images) < 24:
            notes.append(f"published curves are over all 24 Kodak images; measured ones over {len(images)}")
    elif dataset == "kodak":
        notes.append(f"reference curves not drawn: {reference} has none")
    return curves, labels, sources, check, notes


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()})


def read_csv(path: Path) -> list[dict]:
    """The rows ``write_csv`` wrote, with their numbers back as numbers."""
    ints = {"bytes", "width", "height"}
    with path.open() as f:
        return [{k: v if k in ("image", "codec") else int(v) if k in ints else float(v) for k, v in r.items()}
                for r in csv.DictReader(f)]


def replot(folder: Path, reference: Path) -> Path:
    """Redraw ``rd.png`` of a finished run from its ``rd.csv`` (and the reference CSVs), without measuring:
    the same ``build_curves`` and ``plot`` as a full run. The dataset is the one in ``rd.md``'s title (a
    folder such as ``kodak_effort1`` holds a Kodak run), else the folder's name."""
    rows = read_csv(folder / "rd.csv")
    md = folder / "rd.md"
    title = re.match(r"# Rate-distortion on (\S+) ", md.read_text()) if md.is_file() else None
    dataset = title.group(1) if title else folder.resolve().name
    curves, labels, sources, _, _ = build_curves(rows, dataset, reference)
    note = plot(folder / "rd.png", curves, labels, sources, dataset, len({r["image"] for r in rows}))
    if note:
        sys.exit(note)
    return folder / "rd.png"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak", help="folder of images")
    p.add_argument("--qualities", default="1,2,3,4,5,6,7,8,9,10", help="comma-separated vaecodec qualities")
    p.add_argument("--peers", default=",".join(peer.name for peer in all_peers()),
                   help="comma-separated peers (names as in bench/peers.py)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--model", default=None, help="shipped model name or weights file (default: the default)")
    p.add_argument("--effort", default=str(DEFAULT_EFFORT),
                   help="comma-separated vaecodec encoder efforts (a curve each; see vaecodec/refine.py)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for vaecodec")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--reference", type=Path, default=REFERENCE_DIR,
                   help="folder with the reference CSVs (default ../shared/reference)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default bench/results/<dataset>)")
    p.add_argument("--replot", type=Path, default=None, metavar="FOLDER",
                   help="measure nothing: redraw FOLDER/rd.png from FOLDER/rd.csv (and the reference CSVs)")
    args = p.parse_args(argv)
    if args.replot:
        print(replot(args.replot, args.reference))
        return
    torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dataset = args.data.resolve().name
    env = environment(device, args.threads)  # at the start: the commit measured, not the one at the end
    out = args.out or ROOT / "bench" / "results" / dataset

    files = image_files(args.data, args.limit)
    images = {f.name: load_rgb(f) for f in files}
    efforts = tuple(int(e) for e in args.effort.split(","))
    rows = run_vaecodec(images, [float(q) for q in args.qualities.split(",")], device, args.model, efforts)
    wanted = args.peers.split(",") if args.peers else []
    peers = [peer for peer in all_peers() if peer.name in wanted]
    notes = [f"{peer.label}: skipped, {peer.missing}" for peer in peers if peer.missing]
    for peer in peers:
        if not peer.missing:
            rows += run_peer(images, peer)

    curves, labels, sources, check, more = build_curves(rows, dataset, args.reference)
    notes += more

    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "rd.csv", rows)
    plot_note = plot(out / "rd.png", curves, labels, sources, dataset, len(files))
    notes += [plot_note] if plot_note else []

    lines = [f"# Rate-distortion on {dataset} ({len(files)} images)", "", *env,
             f"- vaecodec model: {args.model or DEFAULT_MODEL}",
             "", "bpp = 8 x file bytes / pixels; PSNR and MS-SSIM on 8-bit RGB; means over images per "
             "setting (CompressAI's averaging); times are wall-clock per image, in memory, peers single-"
             "threaded. Every point: `rd.csv`." + (" Plot: `rd.png`." if not plot_note else ""),
             "", "Sources: *measured* = in this run, on this machine; *reference measurement* = "
             f"`../shared/reference/{MEASURED_REFERENCE}` (the same images, measured on a 2-core machine of "
             "this project's kind on 2026-11-25), shown for codecs whose tools this machine lacks; "
             f"*published* = CompressAI's published Kodak curves (`{PUBLISHED_REFERENCE}`, all 24 images).",
             ""]
    lines += [f"- note: {n}" for n in notes] + ([""] if notes else [])
    lines += ["## BD-rate", "", "PSNR, piecewise cubic in log-rate over the overlapping PSNR range "
              "(in brackets); negative = fewer bits for the same PSNR. \"vaecodec vs it\" uses that "
              "curve as anchor.", "", *bd_table(curves, labels, sources), ""]
    if check:
        lines += ["## Peers against the reference measurements", "",
                  "Each peer point of this run against the same image and setting in "
                  f"`{MEASURED_REFERENCE}` (AVIF: Pillow's libavif/aom here vs avifenc 0.11 there, so "
                  "its files differ).", "", *check, ""]
    lines += ["## Curves", ""]
    for name, points in curves.items():
        timed = sources[name] != "published"
        setting = "quality" if is_ours(name) or sources[name] == "published" else "setting"
        lines += curve_table(f"{labels[name]} ({SOURCES[sources[name]]})", points, setting, timed)
    (out / "rd.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
