"""Correctness of reference/attention.py: the seed's defects, backend equivalence, masks,
dropout, mixed precision, the sparse local variant, and every bad input.

Sizes are small (B=2, 16 text / 50 image tokens, D=64, 4 heads) so the file runs in seconds.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from pytest_mmperf.data.synthetic import FeatureBatch, FeatureSpec, make_features
from reference._sparse import local_attention, local_pair_count, local_window_mask
from reference.attention import (
    BACKENDS,
    CrossAttention,
    LocalAttention,
    SeedCrossAttention,
    SeedSparseAttention,
    SelfAttention,
    attention_core,
    attention_flops,
    autocast_context,
    cross_attention,
    joint_sequence,
    seed_attention_flops,
)

DIM, HEADS = 64, 4
SPEC = FeatureSpec(batch_size=2, image_tokens=50, text_tokens=16, dim=DIM, heads=HEADS,
                   pad_fraction=0.5)


@pytest.fixture
def device() -> torch.device:
    return torch.device("cpu")


@pytest.fixture
def feats(device: torch.device) -> FeatureBatch:
    return make_features(SPEC, seed=0, device=device)


def _module(device: torch.device, backend: str = "math", **kw: object) -> CrossAttention:
    torch.manual_seed(0)
    return CrossAttention(DIM, HEADS, backend=backend, **kw).to(device).eval()  # type: ignore[arg-type]


def _image_mask(feats: FeatureBatch) -> torch.Tensor:
    """Row 0 ignores its last 20 image tokens, row 1 every third one."""
    b, n = feats.image_tokens.shape[:2]
    mask = torch.zeros(b, n, dtype=torch.bool, device=feats.image_tokens.device)
    mask[0, -20:] = True
    mask[1, ::3] = True
    return mask


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# --- the seed module and its four defects -----------------------------------------------------
def _double_centre(a: torch.Tensor) -> torch.Tensor:
    """Remove row and column constants: log-softmax differs from the logits by row constants."""
    return a - a.mean(-1, keepdim=True) - a.mean(-2, keepdim=True) + a.mean((-2, -1), keepdim=True)


def test_seed_returns_softmax_weights_not_values(feats: FeatureBatch) -> None:
    torch.manual_seed(0)
    seed = SeedCrossAttention(DIM, HEADS).eval()
    x, y = feats.text_tokens, feats.image_tokens
    out = seed(x, y)
    assert out.shape == (2, 16, 50)  # (B, N_x, N_y): weights, where attention needs (B, N_x, D)
    assert out.shape != x.shape
    assert (out >= 0).all()
    torch.testing.assert_close(out.sum(-1), torch.ones(2, 16), atol=1e-5, rtol=0)
    with torch.no_grad():  # to_out is never called: changing it changes nothing
        seed.to_out.weight.mul_(-3.0).add_(1.0)
    assert torch.equal(seed(x, y), out)


def test_seed_uses_one_projection_for_both_modalities(feats: FeatureBatch) -> None:
    torch.manual_seed(0)
    seed = SeedCrossAttention(DIM, HEADS).eval()
    x, y = feats.text_tokens, feats.image_tokens[:, :16]
    before = seed(x, y)
    with torch.no_grad():  # the key and value rows of to_qkv are dead weight
        seed.to_qkv.weight[DIM:].normal_()
    assert torch.equal(seed(x, y), before)
    with torch.no_grad():
        seed.to_qkv.weight[:DIM].mul_(1.5)
    assert _max_diff(seed(x, y), before) > 1e-3
    # Shared query projection on both sides: scores(x, y) = scores(y, x)^T, a symmetric form.
    lx = _double_centre(torch.log(seed(x, y)))
    ly = _double_centre(torch.log(seed(y, x)))
    torch.testing.assert_close(lx, ly.transpose(-2, -1), atol=2e-3, rtol=1e-4)
    # The corrected module has separate projections: its scores are not symmetric.
    fixed = _module(torch.device("cpu"))
    w = fixed.weights()
    qx = F.linear(x, w.q_weight, w.q_bias)
    ky = F.linear(y, w.kv_weight[:DIM], None if w.kv_bias is None else w.kv_bias[:DIM])
    qy = F.linear(y, w.q_weight, w.q_bias)
    kx = F.linear(x, w.kv_weight[:DIM], None if w.kv_bias is None else w.kv_bias[:DIM])
    assert _max_diff(qx @ ky.transpose(-2, -1), (qy @ kx.transpose(-2, -1)).transpose(-2, -1)) > 0.1


def test_seed_scores_are_not_scaled_and_saturate() -> None:
    torch.manual_seed(0)
    dim = 256
    seed = SeedCrossAttention(dim).eval()
    x, y = torch.randn(2, 16, dim), torch.randn(2, 50, dim)
    q_x = seed.to_qkv(x)[..., :dim]
    q_y = seed.to_qkv(y)[..., :dim]
    logits = q_x @ q_y.transpose(-2, -1)
    out = seed(x, y)
    torch.testing.assert_close(out, logits.softmax(-1), atol=1e-6, rtol=1e-5)
    scaled = (logits / math.sqrt(dim)).softmax(-1)
    assert _max_diff(out, scaled) > 0.1
    seed_peak, scaled_peak = out.max(-1).values.mean().item(), scaled.max(-1).values.mean().item()
    print(f"mean row max: seed {seed_peak:.3f}, scaled {scaled_peak:.3f} (uniform = {1 / 50:.3f})")
    assert seed_peak > 0.5 > 0.2 > scaled_peak


def test_seed_heads_argument_has_no_effect(feats: FeatureBatch) -> None:
    torch.manual_seed(0)
    one = SeedCrossAttention(DIM, heads=1).eval()
    many = SeedCrossAttention(DIM, heads=8).eval()
    many.load_state_dict(one.state_dict())
    x, y = feats.text_tokens, feats.image_tokens
    assert torch.equal(one(x, y), many(x, y))
    expected_flops = 2 * 2 * 66 * DIM * 3 * DIM + 2 * 2 * 16 * 50 * DIM
    assert seed_attention_flops(2, 16, 50, DIM) == expected_flops


# --- the seed's "sparse" attention and its three defects --------------------------------------
def _seed_sparse(device: torch.device) -> tuple[SeedSparseAttention, CrossAttention]:
    """The seed's module with the weights of the corrected module (eval mode)."""
    corrected = _module(device)
    seed = SeedSparseAttention(DIM, HEADS).to(device)
    seed.attention.load_state_dict(corrected.to_multihead_attention().state_dict())
    return seed.eval(), corrected


def test_seed_sparse_is_the_article_module_as_written() -> None:
    seed = SeedSparseAttention(DIM, HEADS)
    mha = seed.attention
    assert type(mha) is torch.nn.MultiheadAttention
    assert (mha.embed_dim, mha.num_heads, mha.batch_first, mha.dropout) == (DIM, HEADS, True, 0.1)
    assert [name for name, _ in seed.named_children()] == ["attention"]


def test_seed_sparse_in_eval_equals_corrected_attention(feats: FeatureBatch,
                                                        device: torch.device) -> None:
    """Its maths is right: without dropout it is the corrected module (any dense backend)."""
    seed, corrected = _seed_sparse(device)
    text, image = feats.text_tokens, feats.image_tokens
    with torch.no_grad():
        out = seed(text, image)
        for backend in BACKENDS:
            corrected.backend = backend
            assert _max_diff(out, corrected(text, image)) <= 1e-5, backend
    assert out.shape == text.shape


def test_seed_sparse_is_dense_every_key_reaches_every_query(feats: FeatureBatch,
                                                            device: torch.device) -> None:
    """Defect 1: nothing is sparse. Changing only the last image token changes the output of
    every text token; a window of 4 keys (the truly sparse module) leaves the first one alone."""
    seed, corrected = _seed_sparse(device)
    text, image = feats.text_tokens, feats.image_tokens
    changed = image.clone()
    changed[:, -1] += 1.0
    local = LocalAttention(DIM, HEADS, window=4).to(device)
    local.load_state_dict(corrected.state_dict())
    with torch.no_grad():
        moved = (seed(text, changed) - seed(text, image)).abs().amax(-1)  # (B, N_text)
        local_moved = (local(text, changed) - local(text, image)).abs().amax(-1)
    assert (moved > 1e-6).all(), "some query did not see the last key: not dense?"
    assert (local_moved[:, 0] == 0).all()


def test_seed_sparse_computes_and_discards_the_attention_weights(feats: FeatureBatch,
                                                                 device: torch.device) -> None:
    """Defect 2: need_weights=True (the default) returns head-averaged (B, N_x, N_y) weights
    on every call, which forward throws away; they carry no information the output needs."""
    seed, _ = _seed_sparse(device)
    text, image = feats.text_tokens, feats.image_tokens
    returned: list[Any] = []
    seed.attention.register_forward_hook(lambda m, args, out: returned.append(out[1]))
    with torch.no_grad():
        out = seed(text, image)
        lean, none = seed.attention(text, image, image, need_weights=False)
    weights = returned[0]
    assert weights is not None and weights.shape == (2, 16, 50)  # averaged over the 4 heads
    assert torch.allclose(weights.sum(-1), torch.ones(2, 16), atol=1e-5)
    assert none is None and _max_diff(out, lean) <= 1e-5


def test_seed_sparse_dropout_acts_in_training(feats: FeatureBatch, device: torch.device) -> None:
    """Defect 3: dropout 0.1 on the attention weights in train() mode."""
    seed, _ = _seed_sparse(device)
    text, image = feats.text_tokens, feats.image_tokens
    with torch.no_grad():
        evals = seed(text, image), seed(text, image)
        seed.train()
        torch.manual_seed(0)
        trains = seed(text, image), seed(text, image)
    assert torch.equal(*evals)
    assert _max_diff(*trains) > 1e-3 and _max_diff(trains[0], evals[0]) > 1e-3


# --- corrected cross-attention ----------------------------------------------------------------
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "key-mask"])
def test_backends_agree_with_math_and_nn_multihead_attention(
        feats: FeatureBatch, device: torch.device, masked: bool) -> None:
    module = _module(device)
    text, image = feats.text_tokens, feats.image_tokens
    mask = _image_mask(feats) if masked else None
    with torch.inference_mode():
        reference = module(text, image, mask)
        mha = module.to_multihead_attention().eval()  # an independent torch implementation
        diffs = {"nn.MultiheadAttention": _max_diff(
            mha(text, image, image, key_padding_mask=mask, need_weights=False)[0], reference)}
        for backend in BACKENDS[1:]:
            module.backend = backend
            diffs[backend] = _max_diff(module(text, image, mask), reference)
    print("max abs diff vs math:", diffs)
    assert reference.shape == text.shape
    assert max(diffs.values()) <= 1e-5
    # The mask matters (otherwise this test could not tell a dropped mask).
    if masked:
        module.backend = "math"
        assert _max_diff(module(text, image), reference) > 1e-3


def test_backends_agree_on_gradients(feats: FeatureBatch, device: torch.device) -> None:
    grads = {}
    for backend in BACKENDS:
        module = _module(device, backend)
        module(feats.text_tokens, feats.image_tokens, _image_mask(feats)).square().sum().backward()
        grads[backend] = torch.cat([p.grad.flatten() for p in module.parameters()
                                    if p.grad is not None])
    assert _max_diff(grads["sdpa"], grads["math"]) <= 1e-4
    assert _max_diff(grads["mha"], grads["math"]) <= 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_padded_text_positions_do_not_change_real_positions(
        feats: FeatureBatch, device: torch.device, backend: str) -> None:
    module = _module(device, backend)
    pad = feats.text_padding_mask
    assert pad.any() and (~pad).any()
    noisy = feats.text_tokens.masked_fill(pad[..., None], 100.0)
    with torch.inference_mode():
        a = module(feats.text_tokens, feats.image_tokens)
        b = module(noisy, feats.image_tokens)
    assert _max_diff(a[~pad], b[~pad]) <= 1e-5
    assert _max_diff(a[pad], b[pad]) > 1e-3  # the padded rows themselves did change


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_image_keys_have_no_influence(
        feats: FeatureBatch, device: torch.device, backend: str) -> None:
    module = _module(device, backend)
    text, image = feats.text_tokens, feats.image_tokens
    mask = torch.zeros(image.shape[:2], dtype=torch.bool, device=device)
    mask[:, -10:] = True
    noisy = image.masked_fill(mask[..., None], -50.0)
    with torch.inference_mode():
        out = module(text, image, mask)
        assert _max_diff(module(text, noisy, mask), out) <= 1e-5
        assert _max_diff(module(text, image[:, :-10]), out) <= 1e-5  # same as dropping them
        assert _max_diff(module(text, image), out) > 1e-3


def test_all_keys_masked_gives_output_bias_in_every_backend(
        feats: FeatureBatch, device: torch.device) -> None:
    module = _module(device)
    mask = torch.zeros(feats.image_tokens.shape[:2], dtype=torch.bool, device=device)
    mask[1] = True
    with torch.inference_mode():
        for backend in BACKENDS:
            module.backend = backend
            out = module(feats.text_tokens, feats.image_tokens, mask)
            assert not out.isnan().any(), backend
            torch.testing.assert_close(out[1], module.out_proj.bias.expand(16, DIM))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_only_in_training_mode(
        feats: FeatureBatch, device: torch.device, backend: str) -> None:
    module = _module(device, backend, dropout=0.5)
    plain = _module(device, backend)
    args = (feats.text_tokens, feats.image_tokens)
    with torch.no_grad():
        eval_a, eval_b = module(*args), module(*args)
        assert torch.equal(eval_a, eval_b)
        assert _max_diff(eval_a, plain(*args)) <= 1e-6  # same init seed, dropout inactive
        module.train()
        torch.manual_seed(1)
        train_a = module(*args)
        torch.manual_seed(2)
        train_b = module(*args)
        plain.train()  # p = 0 in training: still deterministic
        assert _max_diff(plain(*args), eval_a) <= 1e-6
    assert _max_diff(train_a, eval_a) > 1e-3
    assert _max_diff(train_a, train_b) > 1e-3


@pytest.mark.parametrize("backend", [*BACKENDS, "local"])
def test_bf16_autocast_close_to_float32(
        feats: FeatureBatch, device: torch.device, backend: str) -> None:
    module: torch.nn.Module = _module(device, "math" if backend == "local" else backend)
    if backend == "local":
        local = LocalAttention(DIM, HEADS, window=9, block_size=4).to(device)
        local.load_state_dict(module.state_dict())
        module = local
    mask = _image_mask(feats)
    with torch.inference_mode():
        ref = module(feats.text_tokens, feats.image_tokens, mask)
        with autocast_context(device):
            low = module(feats.text_tokens, feats.image_tokens, mask)
    assert low.dtype == torch.bfloat16  # autocast really ran the GEMMs in bf16
    rel = ((low.float() - ref).norm() / ref.norm()).item()
    rel_max = (_max_diff(low, ref) / ref.abs().max()).item()
    print(f"{backend}: bf16 vs float32 relative error {rel:.2e} (norm), {rel_max:.2e} (max)")
    assert rel <= 2e-2 and rel_max <= 2e-2


def test_autocast_context_and_bf16_detection() -> None:
    with autocast_context("cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast_context("cpu", torch.float16):
        assert torch.get_autocast_dtype("cpu") == torch.float16
    with pytest.raises(ValueError, match="torch.float32"):
        autocast_context("cpu", torch.float32)
    with pytest.raises(ValueError, match="'meta'"):
        autocast_context("meta")


def test_functional_form_matches_module_and_does_not_mutate(feats: FeatureBatch,
                                                            device: torch.device) -> None:
    module = _module(device, "sdpa")
    text, image, mask = feats.text_tokens, feats.image_tokens, _image_mask(feats)
    copies = [t.clone() for t in (text, image, mask)]
    out = cross_attention(text, image, module.weights(), HEADS, "sdpa", mask)
    assert torch.equal(out, module(text, image, mask))
    assert all(torch.equal(a, b) for a, b in zip(copies, (text, image, mask), strict=True))


def test_profiler_labels_name_each_stage(feats: FeatureBatch, device: torch.device) -> None:
    expected = {
        "math": {"projections", "scores", "softmax", "weighted_sum", "output"},
        "sdpa": {"projections", "attention", "output"},
        "mha": {"attention"},
    }
    module = _module(device)
    local = LocalAttention(DIM, HEADS, window=8).to(device)
    for backend, stages in [*expected.items(), ("local", {"projections", "attention", "output"})]:
        module.backend = backend if backend != "local" else "math"
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            if backend == "local":
                local(feats.image_tokens)
            else:
                module(feats.text_tokens, feats.image_tokens)
        names = {e.name.removeprefix("mmperf::") for e in prof.events()
                 if e.name.startswith("mmperf::")}
        assert names == stages, backend


# --- joint sequences and sparse local attention -----------------------------------------------
def _dense_masked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  allowed: torch.Tensor) -> torch.Tensor:
    """Independent reference: explicit softmax over allowed keys; rows with none give 0."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)
    return weights @ v


def _loop_window_mask(n_q: int, n_kv: int, window: int) -> torch.Tensor:
    """The documented window, written as plain loops (centre floor((i + 0.5) * n_kv / n_q))."""
    allowed = torch.zeros(n_q, n_kv, dtype=torch.bool)
    for i in range(n_q):
        centre = math.floor((i + 0.5) * n_kv / n_q)
        for j in range(centre - (window - 1) // 2, centre + window // 2 + 1):
            if 0 <= j < n_kv:
                allowed[i, j] = True
    return allowed


@pytest.mark.parametrize(("n_q", "n_kv"), [(37, 37), (13, 41), (41, 13)])
@pytest.mark.parametrize("window", [1, 2, 5, 16])
@pytest.mark.parametrize("block_size", [1, 7, 64])
def test_local_attention_matches_dense_masked_reference(
        n_q: int, n_kv: int, window: int, block_size: int) -> None:
    gen = torch.Generator().manual_seed(window * 100 + block_size)
    q = torch.randn(2, 3, n_q, 8, generator=gen)
    k, v = torch.randn(2, 2, 3, n_kv, 8, generator=gen)
    pad = torch.zeros(2, n_kv, dtype=torch.bool)
    pad[1, : n_kv // 2] = True  # some windows of row 1 hold only padding -> zeros
    allowed = _loop_window_mask(n_q, n_kv, window)
    assert torch.equal(local_window_mask(n_q, n_kv, window), allowed)
    assert local_pair_count(n_q, n_kv, window) == int(allowed.sum())
    for key_mask in (None, pad):
        full = allowed if key_mask is None else allowed & ~key_mask[:, None, None, :]
        out = local_attention(q, k, v, window, key_padding_mask=key_mask, block_size=block_size,
                              impl="blocked")
        assert _max_diff(out, _dense_masked(q, k, v, full)) <= 1e-5
    # one batch entry with padding takes the other layout (blocks as SDPA's heads)
    one = local_attention(q[1:], k[1:], v[1:], window, key_padding_mask=pad[1:],
                          block_size=block_size, impl="blocked")
    full = allowed & ~pad[1:, None, None, :]
    assert _max_diff(one, _dense_masked(q[1:], k[1:], v[1:], full)) <= 1e-5


def test_flex_eager_matches_blocked() -> None:
    gen = torch.Generator().manual_seed(3)
    q, k, v = torch.randn(3, 2, 4, 200, 16, generator=gen)
    pad = torch.zeros(2, 200, dtype=torch.bool)
    pad[0, 150:] = True
    with torch.no_grad():  # torch has no CPU backward for FlexAttention
        for key_mask in (None, pad):
            blocked = local_attention(q, k, v, 33, key_padding_mask=key_mask, impl="blocked")
            flex = local_attention(q, k, v, 33, key_padding_mask=key_mask, impl="flex_eager")
            assert _max_diff(flex, blocked) <= 1e-5


@pytest.mark.parametrize("block_size", [5, 16, 128])
def test_local_equals_dense_when_window_covers_everything(
        feats: FeatureBatch, device: torch.device, block_size: int) -> None:
    tokens, mask = joint_sequence(feats.text_tokens, feats.image_tokens, feats.text_padding_mask)
    n = tokens.shape[1]
    dense = SelfAttention(DIM, HEADS).to(device)
    for window in (2 * n - 1, 4 * n):
        local = LocalAttention(DIM, HEADS, window=window, block_size=block_size).to(device)
        local.load_state_dict(dense.state_dict())
        for key_mask in (None, mask):
            assert _max_diff(local(tokens, key_padding_mask=key_mask),
                             dense(tokens, key_mask)) <= 1e-5
        # cross-attention form: text queries over image context
        cross = CrossAttention(DIM, HEADS).to(device)
        cross.load_state_dict(dense.state_dict())
        assert _max_diff(local(feats.text_tokens, feats.image_tokens),
                         cross(feats.text_tokens, feats.image_tokens)) <= 1e-5
    narrow = LocalAttention(DIM, HEADS, window=9, block_size=block_size).to(device)
    narrow.load_state_dict(dense.state_dict())
    assert _max_diff(narrow(tokens), dense(tokens)) > 1e-3


@pytest.mark.parametrize(("n_q", "n_kv"), [(40, 40), (12, 40)])
def test_local_attention_gradients_match_dense_masked_reference(n_q: int, n_kv: int) -> None:
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(2, 2, n_q, 8, generator=gen, requires_grad=True)
    k, v = (torch.randn(2, 2, n_kv, 8, generator=gen).requires_grad_() for _ in range(2))
    pad = torch.zeros(2, n_kv, dtype=torch.bool)
    pad[0, -7:] = True
    allowed = _loop_window_mask(n_q, n_kv, 6) & ~pad[:, None, None, :]
    sparse = torch.autograd.grad(local_attention(q, k, v, 6, key_padding_mask=pad,
                                                 block_size=8, impl="blocked").sum(), (q, k, v))
    dense = torch.autograd.grad(_dense_masked(q, k, v, allowed).sum(), (q, k, v))
    for a, b in zip(sparse, dense, strict=True):
        assert _max_diff(a, b) <= 1e-5


def _peak_cpu_bytes(fn: object) -> int:
    """Peak live tensor bytes during fn(), from the profiler's ordered [memory] events."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        fn()  # type: ignore[operator]
    # The raw kineto records hold every allocation and free (FunctionEvent lists fold
    # allocations into their ops and keep only the frees outside them).
    records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for record in sorted(records, key=lambda e: e.start_ns()):
        live += record.nbytes()
        peak = max(peak, live)
    return peak


def test_local_attention_memory_grows_linearly() -> None:
    def run(n: int, window: int | None) -> int:
        q, k, v = torch.randn(3, 1, 2, n, 16)
        if window is None:
            everything = torch.ones(n, n, dtype=torch.bool)
            return _peak_cpu_bytes(lambda: _dense_masked(q, k, v, everything))
        return _peak_cpu_bytes(lambda: local_attention(q, k, v, window, impl="blocked"))

    with torch.inference_mode():
        local_ratio = run(2048, 32) / run(512, 32)
        dense_ratio = run(2048, None) / run(512, None)
    print(f"peak memory x4 tokens: local x{local_ratio:.1f}, dense x{dense_ratio:.1f}")
    assert local_ratio < 6 < 12 < dense_ratio  # linear ~4, quadratic ~16


def test_attention_flops_formula() -> None:
    b, nq, nk, d = 2, 3, 5, 8
    proj = 2 * b * (nq * d * d + 2 * nk * d * d + nq * d * d)
    assert attention_flops(b, nq, nk, d, 2) == proj + 2 * 2 * b * nq * nk * d
    assert attention_flops(b, nq, nk, d, 2, projections=False) == 4 * b * nq * nk * d
    small = int(_loop_window_mask(300, 300, 64).sum())
    assert attention_flops(1, 300, 300, 16, 2, 64, projections=False) == 4 * small * 16
    # N=4096, w=256: 127 keys before and 128 after the centre, clipped at both ends.
    pairs = 4096 * 256 - sum(range(1, 128)) - sum(range(1, 129))
    assert attention_flops(1, 4096, 4096, 768, 12, 256, projections=False) == 4 * pairs * 768


def test_joint_sequence_concatenates_text_then_image(feats: FeatureBatch) -> None:
    tokens, mask = joint_sequence(feats.text_tokens, feats.image_tokens, feats.text_padding_mask)
    assert tokens.shape == (2, 66, DIM) and mask is not None and mask.shape == (2, 66)
    assert torch.equal(tokens[:, :16], feats.text_tokens)
    assert torch.equal(mask[:, :16], feats.text_padding_mask) and not mask[:, 16:].any()
    assert joint_sequence(feats.text_tokens, feats.image_tokens)[1] is None


# --- bad input --------------------------------------------------------------------------------
def test_bad_inputs_raise_naming_the_values(feats: FeatureBatch, device: torch.device) -> None:
    module = _module(device)
    text, image = feats.text_tokens, feats.image_tokens
    q4, k4, v4 = torch.randn(1, 2, 8, 4), torch.randn(1, 2, 8, 4), torch.randn(1, 2, 8, 4)
    cases = [
        (lambda: module(text, image[..., :32]), r"\(2, 16, 64\).*\(2, 50, 32\)"),
        (lambda: module(text, image, torch.zeros(2, 49, dtype=torch.bool)),
         r"\(2, 49\).*\(2, 50\)"),
        (lambda: module(text, image, torch.zeros(2, 50)), r"torch.bool.*torch.float32"),
        (lambda: module(text, image, torch.zeros(2, 50, dtype=torch.int64)), r"torch.int64"),
        (lambda: module(text, image[:1]), r"batch sizes differ.*\(1, 50, 64\)"),
        (lambda: module(text[0], image), r"\(B, N, D\).*\(16, 64\)"),
        (lambda: CrossAttention(60, 8), r"dim=60 is not divisible by heads=8"),
        (lambda: CrossAttention(64, 0), r"heads must be an int >= 1, got 0"),
        (lambda: CrossAttention(64, 4, backend="flash"), r"'flash'.*'math', 'sdpa', 'mha'"),
        (lambda: setattr(module, "backend", "xformers"), r"'xformers'"),
        (lambda: cross_attention(text, image, module.weights(), HEADS, "fused"), r"'fused'"),
        (lambda: cross_attention(text, image, module.weights(), 5), r"dim=64.*heads=5"),
        (lambda: CrossAttention(64, 4, dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (lambda: LocalAttention(64, 4, window=0), r"window must be >= 1.*got 0"),
        (lambda: LocalAttention(64, 4, window=2.5), r"window must be an int.*2.5"),  # type: ignore[arg-type]
        (lambda: LocalAttention(64, 4, block_size=0), r"block_size must be >= 1"),
        (lambda: LocalAttention(64, 4, impl="triton"), r"'triton'.*'blocked'"),
        (lambda: LocalAttention(64, 4)(text, key_padding_mask=torch.zeros(2, 50, dtype=torch.bool)),
         r"\(2, 50\).*\(2, 16\)"),
        (lambda: local_attention(q4, k4, v4, 0), r"window must be >= 1"),
        (lambda: attention_core(q4, k4, v4, "mha"), r"'mha'.*'math', 'sdpa'"),
        (lambda: attention_flops(1, 0, 5, 64, 4), r"n_q must be an int >= 1, got 0"),
        (lambda: joint_sequence(text, image[..., :32]), r"\(2, 16, 64\).*\(2, 50, 32\)"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            call()


@pytest.mark.parametrize(("n", "window", "block"), [(4096, 256, 32), (300, 7, 64), (50, 1, 16)])
def test_self_attention_key_windows_are_16_aligned(monkeypatch: pytest.MonkeyPatch, n: int,
                                                   window: int, block: int) -> None:
    """The blocked path hands the fused kernel spans of a multiple of 16 keys (an odd span is
    slower: docs/local-attention.md); the extra keys are masked out, so the result is
    unchanged."""
    import reference._sparse as sparse

    seen: list[tuple[int, ...]] = []
    real = F.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: Any) -> torch.Tensor:
        seen.append(tuple(k.shape))
        return real(q, k, v, **kw)

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 8, generator=gen) for _ in range(3))
    monkeypatch.setattr(sparse.F, "scaled_dot_product_attention", spy)
    out = local_attention(q, k, v, window, block_size=block, impl="blocked")
    monkeypatch.undo()
    (shape,) = seen
    assert shape[-2] % 16 == 0 and shape[-2] >= min(block, n) + window - 1
    mask = local_window_mask(n, n, window)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(8)
    expected = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
