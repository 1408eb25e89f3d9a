"""``--grow-m``: a model with a wider latent, built from a trained one, codes as that one does at
step 0 (training/grow.py), and its new channels learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_image
from PIL import Image

from training.__main__ import DEFAULT_DATA, main
from training.export import export_model, init_from_weights, tables_from_state
from training.grow import grow_latent
from training.model import ModelConfig, VAEModel
from vaecodec import Codec, weights

KODAK = DEFAULT_DATA / "kodak"
GROWN_M = 320


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> tuple[Codec, Codec]:
    """The shipped model and the same grown to M=320, exported with the shipped z tables (which the
    rebuilt checkpoint carries: z does not change)."""
    ckpt = grow_latent(init_from_weights(weights.DEFAULT_MODEL), GROWN_M)
    model = VAEModel(ModelConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    path = tmp_path_factory.mktemp("grown") / "grown.safetensors"
    export_model(model, path, tables_from_state(ckpt["z_tables"]))
    return Codec(device="cpu"), Codec(path, device="cpu")


def kodak_crops() -> list[np.ndarray]:
    if not KODAK.is_dir():
        pytest.skip(f"no Kodak images at {KODAK}")
    one, two = (np.asarray(Image.open(KODAK / f"kodim{i:02d}.png").convert("RGB")) for i in (1, 23))
    return [one[:128, :128], two[300:428, 200:328], one[200:264, 400:496]]


def test_the_grown_model_codes_kodak_crops_as_the_shipped_one(grown):
    """The same z, the same y symbols in the old channels and 0 in the new ones, files of the same
    size (their bytes differ: the model id, the symbols' CRC over 320 channels, and an ANS state that
    also coded the zeros, each at a probability of 1 - a few counts in 2**24) and the same pixels,
    Wiener filter included."""
    shipped, wide = grown
    assert wide.model.config.m == GROWN_M and shipped.model.config.m < GROWN_M
    m0 = shipped.model.config.m
    for crop in kodak_crops():
        for quality in (1.0, 5.5, 10.0):
            a, b = shipped.latents([crop], quality), wide.latents([crop], quality)
            assert torch.equal(a.z, b.z)
            assert torch.equal(a.y, b.y[:, :m0]) and not b.y[:, m0:].any()
            fa, fb = shipped.compress(crop, quality), wide.compress(crop, quality)
            assert len(fa) == len(fb), (crop.shape, quality)
            assert np.array_equal(np.asarray(shipped.decompress(fa)), np.asarray(wide.decompress(fb)))


def test_the_old_integer_prior_is_kept_to_the_bit(grown):
    """Every old integer weight of h_s and the context network is exported unchanged (the new
    hidden units' random weights stay below each layer's largest, so no layer's fixed point moves)."""
    shipped, wide = grown
    m0, m = shipped.model.config.m, GROWN_M
    for old, new in ((shipped.model.latent.h_s, wide.model.latent.h_s),
                     (shipped.model.latent.context, wide.model.latent.context)):
        for i, (kind, *_rest) in enumerate(old.spec):
            (wa, ba, sa), (wb, bb, sb) = old.params(i), new.params(i)
            if kind == "deconv":
                wa, wb = wa.transpose(0, 1), wb.transpose(0, 1)
            last = i == len(old.spec) - 1
            outs = torch.cat([torch.arange(m0), m + torch.arange(m0)]) if last else torch.arange(wa.shape[0])
            ins = torch.arange(wa.shape[1])
            if new is wide.model.latent.context and i == 1:  # [features, mean, scale index]
                ins = torch.cat([torch.arange(m0), m + torch.arange(m0), 2 * m + torch.arange(m0)])
            assert torch.equal(wb[outs][:, ins], wa)
            assert torch.equal(bb[outs], ba) and torch.equal(sb[outs], sa)


def test_grow_m_trains_the_new_channels(tmp_path):
    """A tiny model grown from M=16 to 24 by the command line: after a few steps the new channels
    carry something (g_a's new rows moved off zero) and the run exports and codes."""
    data = tmp_path / "data"
    for sub, count, size in (("train", 3, (96, 80)), ("kodak", 1, (64, 64))):
        (data / sub).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(smooth_image(*size, seed=i)).save(data / sub / f"{i}.png")
    tiny = ["--N", "8", "--crop", "64", "--batch", "2", "--threads", "1", "--lr", "1e-2", "--warmup", "1",
            "--log-every", "1", "--val-every", "1000", "--val-images", "1", "--data", str(data)]
    small, wide = tmp_path / "small", tmp_path / "wide"
    main(["--run-dir", str(small), "--M", "16", "--context", "checkerboard", "--steps", "1", *tiny])
    main(["--run-dir", str(wide), "--init", str(small / "last.pt"), "--grow-m", "24", "--steps", "4", *tiny])
    state = torch.load(wide / "last.pt", weights_only=False)["model"]
    assert state["g_a.6.weight"].shape[0] == 24 and state["g_a.6.weight"][16:].abs().sum() > 0
    main(["--run-dir", str(wide), "--export", str(tmp_path / "wide.safetensors")])
    codec = Codec(tmp_path / "wide.safetensors", device="cpu")
    assert codec.decompress(codec.compress(smooth_image(64, 64), quality=5)).size == (64, 64)
    with pytest.raises(SystemExit, match="already has M=24"):
        main(["--run-dir", str(tmp_path / "again"), "--init", str(wide / "last.pt"), "--grow-m", "24",
              "--steps", "1", *tiny])
    with pytest.raises(SystemExit):  # argparse: --grow-m needs --init
        main(["--run-dir", str(tmp_path / "none"), "--grow-m", "24", "--steps", "1", *tiny])

