"""Correctness of reference/training.py: backend equivalence of loss and gradients, bf16 against
fp32, the step's stages and errors, and the loader feeding the step.

A tiny model (64 px images in 16 px patches = 16 image tokens, D=32, 2 heads, one layer of each
kind, 8 text tokens, B=4) keeps the file to a few seconds.

Tolerances (stated, not tuned to pass): backends agree in fp32 within 1e-4 relative on the loss
and on every gradient (max |difference| / max |reference gradient| per parameter); bf16 losses
agree with fp32 within 3 % relative over 3 steps (bfloat16 keeps 8 bits of mantissa: ~0.4 %
per rounding, accumulated over a few layers and steps).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pytest_mmperf.data.synthetic import BatchSpec, SimpleTokenizer, write_jpeg_dataset
from reference.training import (
    PRECISIONS,
    TRAIN_BACKENDS,
    ImageTextModel,
    LoaderTrainingResult,
    ModelConfig,
    TrainBatch,
    canonical_tensors,
    make_train_batch,
    run_loader_training,
    train_step,
)

TINY = ModelConfig(image_size=64, patch_size=16, dim=32, heads=2, image_layers=1, text_layers=1,
                   fusion_layers=1, context_length=8, vocab_size=128, window=4)
# Every key in every window: 2 * max(16 image tokens, 8 text tokens) - 1.
COVERING = ModelConfig(**{**TINY.__dict__, "window": 31})
BATCH = 4
REL_TOL = 1e-4
BF16_REL_TOL = 0.03


def _model(backend: str = "sdpa", config: ModelConfig = TINY) -> ImageTextModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ImageTextModel(config, backend)


def _batch(config: ModelConfig = TINY, seed: int = 0) -> TrainBatch:
    return make_train_batch(config, BATCH, seed=seed)


def _loss_and_grads(model: ImageTextModel, batch: TrainBatch) -> tuple[float, dict[str, Any]]:
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step leaves weights as they are
    loss = train_step(model, batch, opt)
    return loss, canonical_tensors(model, grads=True)


def _assert_close_grads(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor],
                        what: str) -> None:
    assert got.keys() == ref.keys(), f"{what}: gradient names differ"
    for name, g in ref.items():
        scale = g.abs().max().item() or 1.0
        err = (got[name] - g).abs().max().item() / scale
        assert err <= REL_TOL, f"{what}: gradient of {name} differs by {err:.2e} relative"


# --- backends: same function, same gradients ------------------------------------------------------
@pytest.mark.parametrize("backend", [b for b in TRAIN_BACKENDS if b != "math"])
def test_backends_match_math_loss_and_gradients_in_fp32(backend: str) -> None:
    """math/sdpa/mha always; local with a window covering every key; seed_sparse in eval()
    (its dropout off): the configurations in which each computes the dense function."""
    config = COVERING if backend == "local" else TINY
    reference = _model("math", config).eval()
    other = reference.with_backend(backend).eval()
    batch = _batch(config)
    ref_loss, ref_grads = _loss_and_grads(reference, batch)
    loss, grads = _loss_and_grads(other, batch)
    assert abs(loss - ref_loss) <= REL_TOL * abs(ref_loss), (backend, loss, ref_loss)
    _assert_close_grads(grads, ref_grads, backend)


def test_local_with_a_short_window_is_a_different_function() -> None:
    """The sparse backend is not dense attention in disguise: a 4-key window changes the loss."""
    reference = _model("math").eval()
    batch = _batch()
    local_loss, _ = _loss_and_grads(reference.with_backend("local"), batch)
    dense_loss, _ = _loss_and_grads(reference, batch)
    assert abs(local_loss - dense_loss) > 1e-3 * abs(dense_loss)


def test_seed_sparse_dropout_acts_only_in_training_mode() -> None:
    model = _model("seed_sparse")
    batch = _batch()
    with torch.no_grad():
        model.train()
        torch.manual_seed(1)
        a = model(*batch).total.item()
        torch.manual_seed(2)
        b = model(*batch).total.item()
        model.eval()
        c = model(*batch).total.item()
        d = model(*batch).total.item()
        mha = model.with_backend("mha").train()(*batch).total.item()  # no dropout in mha
    assert a != b, "dropout 0.1 should make two training-mode forwards differ"
    assert c == d and mha == pytest.approx(c, rel=REL_TOL)
    assert a != pytest.approx(c, rel=REL_TOL)


def test_with_backend_round_trips_the_packed_layout() -> None:
    model = _model("sdpa")
    back = model.with_backend("seed_sparse").with_backend("sdpa")
    for (name, p), (_, q) in zip(model.state_dict().items(), back.state_dict().items(),
                                 strict=True):
        assert torch.equal(p, q), name
    packed = model.with_backend("seed_sparse")
    names = set(dict(packed.named_parameters()))
    assert any(n.endswith("attention.in_proj_weight") for n in names)
    assert set(canonical_tensors(packed)) == set(dict(model.named_parameters()))


# --- precision ------------------------------------------------------------------------------------
def test_bf16_losses_track_fp32_over_steps() -> None:
    batch = _batch()
    losses: dict[str, list[float]] = {}
    for precision in ("fp32", "bf16"):
        model = _model("sdpa")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        losses[precision] = [train_step(model, batch, opt, precision=precision)
                             for _ in range(3)]
    for f32, b16 in zip(losses["fp32"], losses["bf16"], strict=True):
        assert abs(b16 - f32) <= BF16_REL_TOL * abs(f32), losses
    assert losses["bf16"] != losses["fp32"], "bf16 gave fp32's exact losses: autocast is off"
    assert losses["fp32"][-1] < losses["fp32"][0], f"three steps did not reduce the loss {losses}"


def test_bf16_step_runs_the_linear_layers_in_bfloat16() -> None:
    model = _model("sdpa")
    seen: list[torch.dtype] = []
    model.itm_head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    train_step(model, _batch(), opt, precision="bf16")
    train_step(model, _batch(), opt, precision="fp32")
    assert seen == [torch.bfloat16, torch.float32]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 + GradScaler needs CUDA")
def test_fp16_with_grad_scaler_on_cuda() -> None:
    model = _model("sdpa").cuda()
    batch = make_train_batch(TINY, BATCH, device="cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    ref = _model("sdpa").cuda()
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-3)
    for _ in range(3):
        loss = train_step(model, batch, opt, precision="fp16", scaler=scaler)
        ref_loss = train_step(ref, batch, ref_opt)
        assert abs(loss - ref_loss) <= BF16_REL_TOL * abs(ref_loss)
    assert scaler.get_scale() > 0


# --- the step's stages and errors -----------------------------------------------------------------
def test_step_labels_forward_backward_optimizer() -> None:
    model = _model("sdpa")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            train_step(model, batch, opt)
    names = [e.name for e in prof.events()]
    for stage in ("forward", "backward", "optimizer"):
        assert f"mmperf::{stage}" in names, f"no mmperf::{stage} range in the profile"
    assert names.count("mmperf::optimizer") == 2  # zero_grad, then step


def test_grads_stay_after_the_step_and_are_zeroed_by_the_next() -> None:
    model = _model("sdpa")
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    train_step(model, _batch(seed=0), opt)
    first = {k: v.clone() for k, v in canonical_tensors(model, grads=True).items()}
    train_step(model, _batch(seed=0), opt)
    second = canonical_tensors(model, grads=True)
    assert first and all(torch.equal(first[k], second[k]) for k in first)  # not accumulated


def test_bad_inputs_raise_naming_the_values() -> None:
    model = _model("sdpa")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = _batch()
    with pytest.raises(ValueError, match=r"precision='fp64'.*'fp32', 'bf16', 'fp16'"):
        train_step(model, batch, opt, precision="fp64")
    with pytest.raises(ValueError, match=r"fp16.*CUDA.*on cpu.*'fp32', 'bf16'"):
        train_step(model, batch, opt, precision="fp16", scaler=None)
    with pytest.raises(ValueError, match=r"scaler is only used with precision='fp16'.*'bf16'"):
        train_step(model, batch, opt, precision="bf16", scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(TypeError, match=r"batch must be a TrainBatch.*got dict"):
        train_step(model, {"images": batch.images}, opt)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"optimizer must be a torch.optim.Optimizer, got list"):
        train_step(model, batch, [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"images must be a float tensor \(B, 3, 64, 64\).*"
                                         r"\(4, 3, 32, 32\)"):
        train_step(model, batch._replace(images=batch.images[:, :, :32, :32]), opt)
    with pytest.raises(ValueError, match=r"batch size must be >= 2.*\(1, 3, 64, 64\)"):
        train_step(model, TrainBatch(*(t[:1] for t in batch)), opt)
    with pytest.raises(ValueError, match=r"input_ids must be a \(B, L\).*L <= "
                                         r"config.context_length=8, got \(4, 9\)"):
        train_step(model, batch._replace(input_ids=torch.zeros(4, 9, dtype=torch.long)), opt)
    with pytest.raises(ValueError, match=r"backend='flash'.*'math', 'sdpa', 'mha', 'local', "
                                         r"'seed_sparse'"):
        ImageTextModel(TINY, "flash")
    with pytest.raises(ValueError, match=r"dim=30 is not divisible by heads=4"):
        ModelConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match=r"image_size=100 is not a multiple of patch_size=32"):
        ModelConfig(image_size=100)
    with pytest.raises(ValueError, match=r"ModelConfig.dim must be an int >= 1, got 0"):
        ModelConfig(dim=0)
    assert PRECISIONS == ("fp32", "bf16", "fp16")


# --- the loader feeding the step ------------------------------------------------------------------
def test_run_loader_training_accounts_for_every_step() -> None:
    config = TINY
    batches = [(make_train_batch(config, BATCH, seed=i).images, ["a red cube"] * BATCH)
               for i in range(2)]  # an epoch of two batches, restarted as needed
    model = _model("sdpa")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokenizer = SimpleTokenizer(vocab_size=config.vocab_size, context_length=config.context_length)
    result = run_loader_training(batches, model, opt, tokenizer, steps=3, warmup_steps=1)
    assert isinstance(result, LoaderTrainingResult)
    assert result.steps == 3 and result.images == 3 * BATCH and len(result.losses) == 3
    assert result.wall_s == pytest.approx(result.data_s + result.step_s)
    assert 0.0 <= result.stall_fraction < 1.0
    assert result.images_per_s == pytest.approx(result.images / result.wall_s)
    with pytest.raises(ValueError, match=r"steps must be an int >= 1, got 0"):
        run_loader_training(batches, model, opt, tokenizer, steps=0)


@pytest.mark.parametrize("loader_kind", ["seed", "fast"])
def test_seed_and_fast_loaders_feed_the_step(tmp_path: Path, loader_kind: str) -> None:
    """The real loaders over JPEG files: the seed's exactly as written (4 workers, pinned,
    persistent), the fast one with its defaults; 224 px batches into a 224 px model."""
    from reference.preprocess import make_fast_loader, make_seed_loader

    data = write_jpeg_dataset(tmp_path / "jpeg", BatchSpec(batch_size=8, min_side=240,
                                                           max_side=320), seed=0)
    paths, captions = [str(p) for p in data.paths], list(data.captions)
    config = ModelConfig(dim=32, heads=2, image_layers=1, text_layers=1, context_length=16,
                         vocab_size=256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the seed's 4 workers on fewer cores, pin_memory on CPU
        if loader_kind == "seed":
            loader: Any = make_seed_loader(paths, captions, batch_size=4)
        else:
            loader = make_fast_loader(paths, captions, batch_size=4)
        model = _model("sdpa", config)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        tokenizer = SimpleTokenizer(vocab_size=256, context_length=16)
        result = run_loader_training(loader, model, opt, tokenizer, steps=3)
    assert result.images == 12 and all(torch.isfinite(torch.tensor(result.losses)))
    assert 0.0 < result.stall_fraction < 1.0


def test_models_are_plain_modules() -> None:
    model = _model("local")
    assert isinstance(model, nn.Module)
    assert sum(p.numel() for p in ImageTextModel().parameters()) > 1_000_000
    assert ModelConfig().image_tokens == 49
