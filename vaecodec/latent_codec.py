"""The latent codec: y -> (z, y symbols) -> ANS streams -> y_hat, with the hyperprior and the
checkerboard context.

One class owns everything between the analysis and the synthesis transform: h_a, the rounding of z,
the integer h_s, the integer checkerboard context, the entropy tables and the escape path, and the
order in which y is coded. That order is :func:`two_pass`, written once and used by the encoder, the
decoder, the effort search (:mod:`vaecodec.refine`) and, with the float networks, by training:

1. z is coded first; the integer h_s turns it into a fixed-point mean and a scale index for every
   position of y.
2. y is coded in *parts* (:func:`part_masks`): all of it at once for a plain hyperprior; with the
   checkerboard context, first the anchors (row + column even) with h_s's parameters, then the rest
   with parameters the integer context network refines from the decoded anchors.

Every number that decides a probability is an integer computed exactly (:mod:`vaecodec.prior`), so
a stream decodes to the same symbols on every device.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import entropy, prior
from .errors import CorruptFileError
from .prior import (
    NUM_SCALES,
    IntegerCheckerboardContext,
    IntegerHyperSynthesis,
    checkerboard_anchors,
    ctx_tiled,
    hs_tiled,
    mean_value,
)
from .quantize import symbols
from .transforms import HA_HALO, HA_TILE, tiled

# (symbols so far, mean, scale index) -> (mean, scale index) for every position; anchors unchanged
Context = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# (the part's mask, mean, scale index) -> the symbols of y in that part, zero elsewhere
CodePart = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

_INDEX_TYPE = np.min_scalar_type(NUM_SCALES - 1)  # scale indices as the entropy coder is given them

# Elementwise steps on whole latent tensors (y_hat) go through float64; they run in tiles of
# this many latent cells per side, so that their temporaries are tile-sized, not image-sized.
POINTWISE_TILE = 256


def pointwise(fn: Callable[..., torch.Tensor], *xs: torch.Tensor) -> torch.Tensor:
    """``fn(*xs)`` for an elementwise ``fn`` of latent tensors (B, C, H, W) or broadcast ones, tile
    by tile: the same numbers, with only one image-sized result."""
    return tiled(fn, xs, 1, 1, POINTWISE_TILE, 0)


def part_masks(checkerboard: bool, height: int, width: int, device: torch.device | str = "cpu"
               ) -> list[torch.Tensor]:
    """Boolean masks (1, 1, height, width) of the parts of y, in coding order."""
    if not checkerboard:
        return [torch.ones(1, 1, height, width, dtype=torch.bool, device=device)]
    anchors = checkerboard_anchors(height, width, device)
    return [anchors, ~anchors]


def two_pass(context: Context | None, mean: torch.Tensor, index: torch.Tensor, code_part: CodePart
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Code y part by part: ``code_part`` gives (or takes from a stream) a part's symbols under the
    parameters known at that point, and the context refines the parameters from the parts so far.
    Returns the symbols of every part, summed, and the final (mean, scale index).

    The same function serves the integer networks (symbols are int64, means fixed-point) and their
    float twins in training (symbols are rounded with a straight-through gradient)."""
    masks = part_masks(context is not None, *mean.shape[2:], device=mean.device)
    sym = code_part(masks[0], mean, index)
    for mask in masks[1:]:
        mean, index = context(sym, mean, index)
        sym = sym + code_part(mask, mean, index)
    return sym, mean, index


@dataclass
class Streams:
    """The coded latents of one image: the ANS stream, the escape stream, and the CRC32 of the
    symbols they hold (:func:`checksum`)."""

    stream: bytes
    escapes: bytes
    checksum: int = 0


def checksum(z: np.ndarray, y: np.ndarray) -> int:
    """CRC32 of one image's z and y symbols as int32 little-endian, z first. The file's own CRC
    catches damage in transit; this one catches a payload that was altered and its CRC recomputed,
    which the ANS coder would otherwise decode into a different image without noticing."""
    return zlib.crc32(y.astype("<i4").tobytes(), zlib.crc32(z.astype("<i4").tobytes()))


@dataclass
class Latents:
    """Integer latents of a batch, as the decoder derives them: z symbols (B, N, h, w), y symbols
    ``round(y - mean)``, and the prior's fixed-point means and scale indices (B, M, 4h, 4w), int64."""

    z: torch.Tensor
    y: torch.Tensor
    mean: torch.Tensor
    index: torch.Tensor

    @property
    def y_hat(self) -> torch.Tensor:
        """The decoded latents, float32: each symbol plus its exact mean."""
        return pointwise(lambda y, mean: (y.double() + mean_value(mean)).float(), self.y, self.mean)

    def numpy(self, i: int = 0) -> dict[str, np.ndarray]:
        """Image i's integers as numpy arrays (what the golden-file tests compare)."""
        return {k: getattr(self, k)[i].cpu().numpy() for k in ("z", "y", "mean", "index")}


class LatentCodec:
    """z, the integer h_s, the optional integer checkerboard context and the entropy tables.

    ``h_a`` is needed to compress only; a codec built without it decodes.

    Every network here runs tile by tile on large images (:func:`vaecodec.transforms.tiled`, with
    halos that cover each network's receptive field: :data:`vaecodec.transforms.HA_HALO`,
    :func:`vaecodec.prior.hs_tiled`, :func:`vaecodec.prior.ctx_tiled`), so their activations, float64
    for the integer networks, take memory that follows the tile, not the image. The integer networks
    give the same integers tiled or not, so tiling changes no file. The coding order is not tiled:
    each part of :func:`two_pass` is coded for the whole image at once.
    """

    def __init__(self, h_a: nn.Module | None, h_s: IntegerHyperSynthesis,
                 context: IntegerCheckerboardContext | None, z_coder: entropy.TableCoder,
                 y_coder: entropy.TableCoder) -> None:
        self.h_a, self.h_s, self.context = h_a, h_s, context
        self.z_coder, self.y_coder = z_coder, y_coder
        self.z_channels = h_s.spec[0][1]

    # ---- encoder -----------------------------------------------------------------------------

    @torch.no_grad()
    def hyper(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z symbols of float latents y (B, M, H, W), and h_s's (mean, scale index) from them."""
        z = self._z(y)
        return (z, *hs_tiled(self.h_s, z))

    def _z(self, y: torch.Tensor) -> torch.Tensor:
        """The z symbols of float y: h_a tile by tile, rounded."""
        return symbols(tiled(self.h_a, y, 4, 1, HA_TILE, HA_HALO))

    @torch.no_grad()
    def symbols(self, y: torch.Tensor, mean: torch.Tensor, index: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The y symbols of float y, and the (mean, scale index) the decoder will derive for them,
        given h_s's (mean, scale index).

        The encoder knows every symbol up front, so the whole :func:`two_pass` runs tile by tile
        (the context is its only step that reaches beyond a position): each tile's symbols and
        parameters are those of the whole image, and no image-sized intermediate is made but the
        three results. The order in which the symbols are coded is :meth:`encode`'s, of the whole
        image."""
        return ctx_tiled(self._coded, y, mean, index)

    def _coded(self, y: torch.Tensor, mean: torch.Tensor, index: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:func:`two_pass` of float y (a whole image, or a tile with its halo) given h_s's (mean,
        scale index): its symbols and final (mean, scale index)."""
        def code_part(mask: torch.Tensor, mean: torch.Tensor, _index: torch.Tensor) -> torch.Tensor:
            return torch.where(mask, symbols(y, mean_value(mean)), 0)

        return two_pass(self.context, mean, index, code_part)

    def quantize(self, y: torch.Tensor, z: torch.Tensor, mean: torch.Tensor, index: torch.Tensor
                 ) -> Latents:
        """The latents the decoder will see for float y, given z and h_s's (mean, index) from it."""
        return Latents(z, *self.symbols(y, mean, index))

    @torch.no_grad()
    def latents(self, y: torch.Tensor) -> Latents:
        """The latents the decoder will see for float y: :meth:`quantize` of :meth:`hyper`'s, the same
        integers, computed tile by tile on z's grid from h_s on, so that h_s's parameters for the
        whole image (which only the effort search needs) are never made. A tile reaches
        ``HS_HALO`` z cells for h_s and one more for the context's ``CTX_HALO`` y cells."""
        z, halo = self._z(y), prior.HS_HALO + -(-prior.CTX_HALO // 4)
        coded = tiled(lambda z, y: self._coded(y, *self.h_s(z)), (z, y), (1, 4), 4, prior.HS_TILE, halo)
        return Latents(z, *coded)

    def encode(self, latents: Latents) -> list[Streams]:
        """Entropy-code each image of a batch of latents."""
        z, y, index = (t.cpu().numpy() for t in (latents.z, latents.y, latents.index))
        masks = [np.broadcast_to(m[0].numpy(), y.shape[1:])
                 for m in part_masks(self.context is not None, *y.shape[2:])]
        out = []
        for i in range(len(y)):
            # the coder takes any integer type: narrow ones keep a large image's parts small (symbols
            # are clamped to +-2**20, scale indices below NUM_SCALES) and sort faster
            parts = [(y[i][mask].astype(np.int32), index[i][mask].astype(_INDEX_TYPE)) for mask in masks]
            coded = entropy.encode(self.z_coder, z[i], self.y_coder, parts)
            out.append(Streams(*coded, checksum(z[i], y[i])))
        return out

    def compress(self, y: torch.Tensor) -> tuple[list[Streams], Latents]:
        """Float latents (B, M, H, W) -> each image's streams, and the latents the decoder will see."""
        latents = self.latents(y)
        return self.encode(latents), latents

    # ---- decoder -----------------------------------------------------------------------------

    @torch.inference_mode()
    def decompress(self, streams: Streams, shape: tuple[int, int], device: torch.device) -> Latents:
        """The latents of one image whose y is ``shape`` (H/16, W/16), computed on ``device``.
        Raises CorruptFileError when the streams do not hold exactly the latents their checksum
        names."""
        dec = entropy.StreamDecoder(streams.stream, streams.escapes)
        z = dec.z(self.z_coder, (self.z_channels, shape[0] // 4, shape[1] // 4))
        z = torch.from_numpy(z)[None].to(device)

        def code_part(mask: torch.Tensor, _mean: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            where = np.broadcast_to(mask[0].cpu().numpy(), index.shape[1:])
            values = np.zeros(where.shape, dtype=np.int64)
            values[where] = dec.y(self.y_coder, index[0].cpu().numpy()[where].astype(_INDEX_TYPE))
            return torch.from_numpy(values)[None].to(device)

        def context(sym: torch.Tensor, mean: torch.Tensor, index: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
            # written over h_s's (mean, index), which nothing else holds: the context changes only
            # the non-anchors, and reads no other non-anchor than the one it writes
            return ctx_tiled(self.context, sym, mean, index, out=(mean, index))

        y, mean, index = two_pass(context if self.context is not None else None, *hs_tiled(self.h_s, z),
                                  code_part)
        dec.finish()
        if checksum(z[0].cpu().numpy(), y[0].cpu().numpy()) != streams.checksum:
            raise CorruptFileError("the decoded latents do not match the file's checksum (the payload was "
                                   "altered)")
        return Latents(z, y, mean, index)
