"""Rate-distortion of vaecodec against the codecs a user would otherwise pick, on the same images in
the same run, plus the published Kodak curves as reference.

    python -m bench.rd                               # ../shared/data/kodak -> bench/results/kodak/
    python -m bench.rd --data ../shared/data/eval    # another folder -> bench/results/eval/
    python -m bench.rd --limit 3 --peers jpeg420,webp --qualities 1,4,7,10 --out /tmp/rd

For every image, every vaecodec quality and every peer setting (``bench/peers.py``: JPEG 4:2:0 and
4:4:4, WebP, AVIF, JPEG 2000, JPEG XL; a peer whose library or tool is missing is skipped with a
note) it records the real file bytes (-> bpp), PSNR on 8-bit RGB and MS-SSIM (``bench/metrics.py``),
and encode/decode wall time (image in memory -> bytes -> RGB image; one thread for vaecodec unless
``--threads``). Curves are averaged per setting the CompressAI way (mean bpp, mean PSNR over images).
BD-rate (``bench/bdrate.py``: PSNR, piecewise cubic in log-rate, overlapping PSNR range) is given for
vaecodec against every peer and reference curve, and for every curve against JPEG 4:2:0.

Writes ``rd.csv`` (every point), ``rd.md`` (machine, date, commit, command; per-setting tables;
BD-rates) and ``rd.png`` (PSNR vs bpp; needs matplotlib, the ``bench`` extra, else skipped with a note).
The published curves (``../shared/reference/kodak_published_rd.csv``) are over all 24 Kodak images and
only drawn for a folder named ``kodak``; they are marked "published", never mixed with measured ones.

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
from vaecodec.codec import DEFAULT_EFFORT
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
OURS_COLORS = ("black", "firebrick", "darkmagenta")
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


def plot(path: Path, curves: dict[str, list[dict]], labels: dict[str, str], sources: dict[str, str],
         title: str) -> str | None:
    """PSNR vs bpp; returns a note instead of drawing when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "rd.png not drawn: matplotlib is not installed (`pip install '.[bench]'`)"
    fig, ax = plt.subplots(figsize=(12.5, 6.5))
    style = {"measured": "o-", "reference": "s:", "published": "--"}
    ours_names = [name for name in curves if is_ours(name)]  # one colour per effort, in run order
    for name, points in curves.items():
        ours, source = is_ours(name), sources[name]
        color = OURS_COLORS[ours_names.index(name) % len(OURS_COLORS)] if ours else None
        ax.plot([p["bpp"] for p in points], [p["psnr"] for p in points], style[source],
                ms=5 if ours else 3, lw=2.5 if ours else 1.2, color=color,
                alpha=1 if source == "measured" else 0.8, zorder=3 if ours else 2,
                label=f"{labels[name]} ({SOURCES[source]})")
    ax.set(xlabel="bits per pixel (file bytes)", ylabel="PSNR, 8-bit RGB (dB)", title=title, xlim=(0, 2.2))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the plot, hiding no curve
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()})


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
    args = p.parse_args(argv)
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

    measured = means(rows)
    # a reference row of a codec measured here too is the same tool; otherwise the reference's tool
    labels = {peer.name: peer.label for peer in all_peers()} | MEASURED_LABELS | REFERENCE_CURVES
    labels |= {vaecodec_name(e): f"vaecodec effort {e}" for e in efforts}
    labels |= {peer.name: peer.label for peer in peers if not peer.missing}
    curves, sources = dict(measured), dict.fromkeys(measured, "measured")
    check: list[str] = []
    ref_rows = []
    if dataset == "kodak" and (args.reference / MEASURED_REFERENCE).is_file():
        ref_rows = load_measured_reference(args.reference / MEASURED_REFERENCE, set(images))
        check = reference_check(rows, ref_rows, labels)
        for name, points in means(ref_rows).items():
            if name not in curves:  # a codec this run could not measure (tool missing here)
                curves[name], sources[name] = points, "reference"
    if dataset == "kodak" and (args.reference / PUBLISHED_REFERENCE).is_file():
        for name, points in load_reference(args.reference / PUBLISHED_REFERENCE).items():
            curves[name], sources[name] = points, "published"
        if len(files) < 24:
            notes.append(f"published curves are over all 24 Kodak images; measured ones over {len(files)}")
    elif dataset == "kodak":
        notes.append(f"reference curves not drawn: {args.reference} has none")

    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "rd.csv", rows)
    plot_note = plot(out / "rd.png", curves, labels, sources, f"{dataset} ({len(files)} images)")
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
