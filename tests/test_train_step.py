"""The training step's speed-ups against what they replace: the batched crop sampler against cutting
and resizing crop by crop, torch.compile against the eager step, and --budget's planned schedule;
and --lambdas, which moves a model's levels to a longer quality range."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import smooth_image
from PIL import Image
from torch.nn import functional as F

from training.__main__ import main
from training.data import CropSampler
from training.export import export_model
from training.grow import relambda
from training.model import ModelConfig, VAEModel


def test_batched_crops_match_crop_by_crop_resizing():
    """Every crop the batched sampler cuts equals the same decisions carried out one crop at a time
    with F.interpolate (bicubic, antialiased, as the sampler did before), up to one grey level where
    the two sums round differently; downscaled, upscaled (a photo smaller than the crop) and flipped
    crops included."""
    shapes = ((150, 200), (97, 131), (48, 70), (64, 64))
    images = [smooth_image(h, w, seed=i) for i, (h, w) in enumerate(shapes)]
    sampler = CropSampler(images, 64, seed=1, device=torch.device("cpu"))
    crops = sampler.draw(64)
    batched = sampler.cut(crops)
    assert batched.shape == (64, 3, 64, 64)
    assert (crops.size != 64).sum() > 10 and (crops.size < 64).any()
    assert crops.flip_v.any() and crops.flip_h.any()
    for b in range(64):
        img = torch.from_numpy(images[int(crops.image[b])]).permute(2, 0, 1)
        size, top, left = int(crops.size[b]), int(crops.top[b]), int(crops.left[b])
        patch = img[:, top : top + size, left : left + size].float()
        if size != 64:
            patch = F.interpolate(patch[None], size=(64, 64), mode="bicubic", antialias=True,
                                  align_corners=False)[0].clamp(0, 255).round()
        flips = [d for d, flip in ((1, crops.flip_v[b]), (2, crops.flip_h[b])) if flip]
        expected = patch.flip(flips) if flips else patch
        diff = (batched[b] * 255 - expected).abs()
        assert float(diff.max()) <= 1.0 + 1e-4, b
        assert float((diff > 0.5).float().mean()) < 0.01, b
        if size == 64:
            assert torch.equal(batched[b] * 255, expected)  # a plain cut is exact


SLOW = pytest.mark.skipif(not os.environ.get("VAECODEC_SLOW_TESTS"),
                          reason="inductor builds C++ kernels for a long time on a small CPU: set "
                                 "VAECODEC_SLOW_TESTS=1 (its result: docs/training.md)")


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=SLOW)])
def test_compiled_step_matches_the_eager_one(backend):
    """torch.compile against the eager step, on the same batch and noise (fallback_random: inductor's
    step draws its noise with torch's generator too): the loss within 1e-5 relative and every
    gradient within 1e-4 of its tensor's largest. aot_eager traces forward and backward as --compile
    does (TorchDynamo, AOTAutograd's decompositions), where a clamp, a rounding or a straight-through
    gradient lost in tracing would show, and runs the traced graph eagerly: cheap enough for every
    run. inductor, what --compile uses, also fuses and reorders float32 sums (the loss adds ~10^4
    terms, each rounded at 2^-24 relative), so bit-equality is not expected; a real difference moves
    the loss by far more. It compiles C++ kernels, so it runs only when asked for (SLOW)."""
    pytest.importorskip("torch._inductor")
    from torch._inductor import config as inductor

    torch.manual_seed(0)
    model = VAEModel(ModelConfig(n=8, m=16, context="checkerboard", postfilter=4)).train()
    x = torch.from_numpy(smooth_image(64, 64)).permute(2, 0, 1)[None].float().div(255).repeat(2, 1, 1, 1)
    level = torch.tensor([-1.5, 6.5])

    def step(net: torch.nn.Module) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad()
        torch.manual_seed(1)
        loss = model.rd_loss(net(x, level), level)
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters()]

    eager_loss, eager_grads = step(model)
    with inductor.patch(fallback_random=True):
        compiled_loss, compiled_grads = step(torch.compile(model, backend=backend))
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    for a, b in zip(eager_grads, compiled_grads, strict=True):
        assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max()) + 1e-8


def test_budget_plans_the_schedule(tmp_path):
    data = tmp_path / "data"
    for sub, count in (("train", 2), ("kodak", 1)):
        (data / sub).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(smooth_image(64, 64, seed=i)).save(data / sub / f"{i}.png")
    run = tmp_path / "run"
    main(["--run-dir", str(run), "--data", str(data), "--N", "8", "--M", "16", "--crop", "64", "--batch", "1",
          "--threads", "1", "--warmup", "10", "--budget", "4", "--calib", "10", "--log-every", "5",
          "--val-every", "100000", "--val-images", "1"])
    ckpt = torch.load(run / "last.pt", weights_only=False)
    planned = ckpt["args"]["steps"]
    assert planned > 10 and planned != 20000  # set at step 10 from the step time, not the default
    assert ckpt["step"] <= planned
    assert f"\n{ckpt['step']}," in (run / "val_log.csv").read_text()  # validated where it stopped
    with pytest.raises(SystemExit, match="fresh run"):
        main(["--run-dir", str(run), "--data", str(data), "--budget", "4"])


def test_lambdas_move_the_levels_and_keep_the_known_ones(tmp_path):
    """--lambdas with the same seven lower lambdas and a top at 0.18: the seven keep their gains to
    the bit, the new top starts beyond the old one (larger gains), and the model exports."""
    torch.manual_seed(0)
    model = VAEModel(ModelConfig(n=8, m=16, context="checkerboard"))
    ckpt = {"config": model.config.to_dict(), "model": model.state_dict(), "step": 7}
    lambdas = [*model.config.lambdas[:-1], 0.18]
    moved = relambda(ckpt, lambdas)
    new = VAEModel(ModelConfig(**moved["config"]))
    new.load_state_dict(moved["model"])
    assert new.config.lambdas == lambdas and moved["step"] == 0
    old_gain, new_gain = model.gains.log_gain.detach(), new.gains.log_gain.detach()
    assert torch.allclose(new_gain[:-1], old_gain[:-1], rtol=0, atol=1e-6)
    assert (new_gain[-1] - old_gain[-1]).mean() > 0
    assert np.isclose(float(new.gains.lambda_at(torch.tensor([7.0]))), 0.18, rtol=1e-5)
    export_model(new, tmp_path / "w.safetensors")
    with pytest.raises(SystemExit, match="must increase"):
        relambda(ckpt, lambdas[::-1])
    with pytest.raises(SystemExit, match="quality levels"):
        relambda(ckpt, lambdas[:3])
