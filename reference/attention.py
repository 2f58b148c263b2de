"""Cross-modal attention from the seed article, as written and corrected.

* :class:`SeedCrossAttention`: the article's module verbatim (the "before"); see its defects.
* :class:`SeedSparseAttention`: the article's "optimised" ``SparseAttention`` verbatim: dense
  ``nn.MultiheadAttention`` with ``need_weights=True`` and dropout 0.1; see its defects.
* :func:`cross_attention` / :class:`CrossAttention`: text queries over image keys/values. Three
  backends compute the same maths from the same parameters (:class:`AttentionWeights`):
  ``"math"`` (explicit matmul, softmax, matmul: the obviously correct reference, kept next to
  the fused paths), ``"sdpa"`` (``F.scaled_dot_product_attention``) and ``"mha"``
  (``F.multi_head_attention_forward``, the function behind ``nn.MultiheadAttention``, with
  ``need_weights=False``).
* :class:`SelfAttention`: the same over one joint sequence (:func:`joint_sequence`).
  :class:`LocalAttention`: genuinely sparse sliding-window attention, O(N·w) time and memory
  (:mod:`reference._sparse`).
* :func:`attention_flops`, :func:`autocast_context`.

Bad inputs raise ``ValueError`` naming the shapes or values and what is accepted. Inputs are
never modified. Rows whose keys are all padded return the output-projection bias in every
backend (attention output 0, as SDPA does), not NaN.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from reference._sparse import (
    DEFAULT_BLOCK_SIZE,
    LOCAL_IMPLS,
    check_window,
    local_attention,
    local_pair_count,
)

BACKENDS: tuple[str, ...] = ("math", "sdpa", "mha")

__all__ = [
    "BACKENDS", "LOCAL_IMPLS", "AttentionWeights", "CrossAttention", "LocalAttention",
    "SeedCrossAttention", "SeedSparseAttention", "SelfAttention", "attention_core",
    "attention_flops", "autocast_context", "cross_attention",
    "joint_sequence", "local_attention", "local_cross_attention", "seed_attention_flops",
]


class SeedCrossAttention(nn.Module):
    """The seed article's ``CrossAttention``, kept verbatim as the baseline.

    ``forward(x (B, N_x, D), y (B, N_y, D)) -> (B, N_x, N_y)``. Its four defects:

    1. **One projection for both modalities.** ``to_qkv`` is applied to text and image alike,
       and the scores even use the *query* slice on both sides (``qkv_y[0]``), so scores are the
       symmetric form ``x Wq (y Wq)^T``: swapping x and y transposes them, and the key/value
       rows of ``to_qkv`` are dead weight.
    2. **No 1/sqrt(d) scaling.** Logits have standard deviation ~sqrt(D)/3 at default init
       (~9 for D=768), so the softmax saturates to near one-hot rows.
    3. **No heads.** ``heads`` is stored and never used: one D-dimensional head.
    4. **Returns the softmax weights, not the attended values.** The output is (B, N_x, N_y),
       rows summing to 1; no weighted sum with values, and ``to_out`` is never called.
    """

    def __init__(self, dim: int, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.dim = dim
        self.to_qkv = nn.Linear(dim, dim * 3)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        qkv_x = self.to_qkv(x).chunk(3, dim=-1)
        qkv_y = self.to_qkv(y).chunk(3, dim=-1)
        attention_scores = torch.matmul(qkv_x[0], qkv_y[0].transpose(-2, -1))
        attention_weights = F.softmax(attention_scores, dim=-1)
        return attention_weights


class SeedSparseAttention(nn.Module):
    """The seed article's ``SparseAttention``, kept verbatim as the "after" it proposes.

    ``forward(x (B, N_x, D), y (B, N_y, D)) -> (B, N_x, D)``: x queries y through
    ``nn.MultiheadAttention(embed_dim=dim, num_heads=heads, batch_first=True, dropout=0.1)``.
    Its maths is correct multi-head attention (unlike :class:`SeedCrossAttention`); its defects
    are in what the article says it is and in how it is called:

    1. **Dense, not sparse.** Every query attends to every key: time O(N_x·N_y·D) and, because
       the weights are materialised (2.), memory O(B·H·N_x·N_y), quadratic in the context length
       for self-attention. :class:`LocalAttention` is the sparse version.
    2. **need_weights=True (the default).** ``self.attention(x, y, y)`` asks for the attention
       weights and throws them away (``output, _``): every call computes the (B, H, N_x, N_y)
       softmax explicitly, averages it over heads into a (B, N_x, N_y) tensor, and cannot use
       the fused kernel (``need_weights=False`` lets ``nn.MultiheadAttention`` call SDPA).
    3. **Dropout 0.1 on the attention weights in training mode:** training steps are not
       deterministic and differ from ``eval()``. It also keeps training off the fused path even
       with ``need_weights=False``: the CPU SDPA kernel has no dropout, so SDPA falls back to
       explicit maths: memory quadratic in N in ``train()`` with or without weights, in
       ``eval()`` only with them.

    What need_weights=True costs, and the memory exponents:
    docs/reference-results.md#the-seeds-sparse-attention.

    Parameters: ``attention.in_proj_weight`` (3D, D) = [W_q; W_k; W_v] and ``attention.out_proj``,
    the layout :meth:`CrossAttention.to_multihead_attention` produces.
    """

    def __init__(self, dim: int, heads: int = 8) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(
            embed_dim=dim,
            num_heads=heads,
            batch_first=True,
            dropout=0.1,
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        output, _ = self.attention(x, y, y)
        return output


class AttentionWeights(NamedTuple):
    """Parameters of the corrected attention, shared by every corrected module.

    Module names: ``q_proj`` (D -> D, applied to text), ``kv_proj`` (D -> 2D, applied to image;
    rows [:D] are keys, rows [D:] values) and ``out_proj`` (D -> D), so state dicts move between
    the corrected modules. Stacking ``q_proj.weight`` over ``kv_proj.weight`` gives exactly
    ``nn.MultiheadAttention.in_proj_weight``.
    """

    q_weight: torch.Tensor  # (D, D): text -> queries
    q_bias: torch.Tensor | None  # (D,)
    kv_weight: torch.Tensor  # (2D, D): image -> keys (rows :D) and values (rows D:)
    kv_bias: torch.Tensor | None  # (2D,)
    out_weight: torch.Tensor  # (D, D)
    out_bias: torch.Tensor | None  # (D,)


def _check_heads(dim: int, heads: int) -> None:
    for name, value in (("dim", dim), ("heads", heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if dim % heads:
        divisors = [h for h in range(1, min(dim, 64) + 1) if dim % h == 0]
        raise ValueError(f"dim={dim} is not divisible by heads={heads}; heads must divide dim "
                         f"(divisors of {dim} up to 64: {divisors})")


def _check_inputs(query: torch.Tensor, context: torch.Tensor, weights: AttentionWeights,
                  heads: int, key_padding_mask: torch.Tensor | None,
                  names: tuple[str, str] = ("text", "image")) -> None:
    """Shape/dtype checks shared by every corrected entry point (plain Python, no syncs)."""
    q_name, c_name = names
    dim = weights.q_weight.shape[1]
    _check_heads(dim, heads)
    if query.dim() != 3 or context.dim() != 3:
        raise ValueError(f"{q_name} and {c_name} must be (B, N, D) tensors, got {q_name} "
                         f"{tuple(query.shape)} and {c_name} {tuple(context.shape)}")
    if query.shape[-1] != dim or context.shape[-1] != dim:
        raise ValueError(f"feature dims must match the module's dim={dim}: got {q_name} "
                         f"{tuple(query.shape)} and {c_name} {tuple(context.shape)}; project "
                         f"both modalities to D={dim} first")
    if query.shape[0] != context.shape[0]:
        raise ValueError(f"batch sizes differ: {q_name} {tuple(query.shape)} vs {c_name} "
                         f"{tuple(context.shape)}")
    if key_padding_mask is not None:
        expected = (context.shape[0], context.shape[1])
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            got = getattr(key_padding_mask, "dtype", type(key_padding_mask).__name__)
            raise ValueError(f"key_padding_mask must be a torch.bool tensor (True = ignore that "
                             f"{c_name} token, torch's convention), got {got}")
        if tuple(key_padding_mask.shape) != expected:
            raise ValueError(f"key_padding_mask has shape {tuple(key_padding_mask.shape)}; "
                             f"expected (B, N_{c_name}) = {expected} for {c_name} "
                             f"{tuple(context.shape)}")


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, H, N, D/H)."""
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _project(query: torch.Tensor, context: torch.Tensor, weights: AttentionWeights,
             heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return q (B, H, N_q, d), k and v (B, H, N_kv, d): one GEMM per modality."""
    with record_function("mmperf::projections"):
        q = _split_heads(F.linear(query, weights.q_weight, weights.q_bias), heads)
        kv = F.linear(context, weights.kv_weight, weights.kv_bias)  # (B, N_kv, 2D)
        b, n, two_d = kv.shape
        kv = kv.view(b, n, 2, heads, two_d // (2 * heads)).permute(2, 0, 3, 1, 4)
        return q, kv[0], kv[1]


def _output(attended: torch.Tensor, weights: AttentionWeights) -> torch.Tensor:
    """(B, H, N_q, d) -> merge heads -> output projection -> (B, N_q, D)."""
    with record_function("mmperf::output"):
        b, h, n, d = attended.shape
        merged = attended.transpose(1, 2).reshape(b, n, h * d)
        return F.linear(merged, weights.out_weight, weights.out_bias)


def cross_attention(text: torch.Tensor, image: torch.Tensor, weights: AttentionWeights,
                    heads: int, backend: str = "math",
                    key_padding_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                    training: bool = False) -> torch.Tensor:
    """Multi-head cross-attention: text tokens query image tokens.

    Args:
        text: (B, N_txt, D) queries. image: (B, N_img, D) keys and values.
        weights: the projections (:class:`AttentionWeights`).
        heads: number of heads H; d_head = D / H and scores are scaled by 1/sqrt(d_head).
        backend: ``"math"``, ``"sdpa"`` or ``"mha"``: identical maths, different kernels.
        key_padding_mask: optional (B, N_img) bool, True = that image token is ignored.
        dropout_p: dropout on the attention weights, applied only when ``training``.
        training: whether dropout is active (modules pass ``self.training``).

    Returns:
        (B, N_txt, D). Text padding needs no mask: every query row is computed independently,
        so padded text positions never change the outputs of real ones.

    Profiler labels (``torch.profiler.record_function``): ``mmperf::projections``,
    ``mmperf::scores``, ``mmperf::softmax``, ``mmperf::weighted_sum``, ``mmperf::output``.
    Fused kernels cannot be split, so ``"sdpa"`` and the local variant label scores + softmax +
    weighted sum as one ``mmperf::attention`` range, and ``"mha"`` labels its whole call
    (projections and output included) ``mmperf::attention``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; accepted: "
                         f"{', '.join(map(repr, BACKENDS))}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p!r}")
    _check_inputs(text, image, weights, heads, key_padding_mask)
    p = dropout_p if training else 0.0
    if backend == "mha":
        return _mha(text, image, weights, heads, key_padding_mask, p, training)
    q, k, v = _project(text, image, weights, heads)
    return _output(attention_core(q, k, v, backend, key_padding_mask, p), weights)


def attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "math",
                   key_padding_mask: torch.Tensor | None = None,
                   dropout_p: float = 0.0) -> torch.Tensor:
    """Scaled dot-product attention on projected heads, without projections.

    q (B, H, N_q, d), k and v (B, H, N_kv, d), optional key_padding_mask (B, N_kv) bool (True =
    ignore) -> (B, H, N_q, d). ``backend`` is ``"math"`` or ``"sdpa"`` (``"mha"`` has no
    separate core). ``dropout_p`` is applied as given: pass 0 outside training. Shapes are
    checked by the callers; this is the hot loop of the benchmarks.
    """
    if backend == "sdpa":
        with record_function("mmperf::attention"):
            mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    if backend != "math":
        raise ValueError(f"attention_core backend={backend!r} is not supported; accepted: "
                         "'math', 'sdpa'")
    with record_function("mmperf::scores"):
        # Scale q (N_q x d values) rather than the scores (N_q x N_kv values): same maths.
        scores = torch.matmul(q * (q.shape[-1] ** -0.5), k.transpose(-2, -1))
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    with record_function("mmperf::softmax"):
        attn = torch.softmax(scores, dim=-1)
        if key_padding_mask is not None:
            # A row with every key masked is all -inf -> NaN; SDPA/MHA return 0 there.
            dead_rows = key_padding_mask.all(dim=-1)[:, None, None, None]
            attn = attn.masked_fill(dead_rows, 0.0)
        if dropout_p > 0.0:
            attn = F.dropout(attn, p=dropout_p, training=True)
    with record_function("mmperf::weighted_sum"):
        return torch.matmul(attn, v)


def _mha(text: torch.Tensor, image: torch.Tensor, weights: AttentionWeights, heads: int,
         key_padding_mask: torch.Tensor | None, p: float, training: bool) -> torch.Tensor:
    """``nn.MultiheadAttention``'s functional core on the shared parameters (no copies of
    weights; only the small bias vectors are concatenated into its packed layout)."""
    dim = weights.q_weight.shape[1]
    in_bias = None
    if weights.q_bias is not None and weights.kv_bias is not None:
        in_bias = torch.cat([weights.q_bias, weights.kv_bias])
    with record_function("mmperf::attention"):
        out, _ = F.multi_head_attention_forward(
            text.transpose(0, 1), image.transpose(0, 1), image.transpose(0, 1),  # (N, B, D)
            dim, heads, None, in_bias, None, None, False, p,
            weights.out_weight, weights.out_bias, training=training,
            key_padding_mask=key_padding_mask, need_weights=False,
            use_separate_proj_weight=True, q_proj_weight=weights.q_weight,
            k_proj_weight=weights.kv_weight[:dim], v_proj_weight=weights.kv_weight[dim:])
    return out.transpose(0, 1)


def local_cross_attention(query: torch.Tensor, context: torch.Tensor, weights: AttentionWeights,
                          heads: int, window: int, key_padding_mask: torch.Tensor | None = None,
                          block_size: int = DEFAULT_BLOCK_SIZE, impl: str = "auto") -> torch.Tensor:
    """Sparse sliding-window attention with the projections of :func:`cross_attention`.

    query (B, N_q, D), context (B, N_kv, D) (pass the same tensor for self-attention), optional
    key_padding_mask (B, N_kv) bool -> (B, N_q, D). Query i sees ``window`` keys around its
    centre (``i`` for self-attention; proportional alignment otherwise, see
    :mod:`reference._sparse`). Time and memory O(N_q · (window + block_size)).
    """
    check_window(window)
    _check_inputs(query, context, weights, heads, key_padding_mask, names=("query", "context"))
    q, k, v = _project(query, context, weights, heads)
    with record_function("mmperf::attention"):
        attended = local_attention(q, k, v, window, key_padding_mask=key_padding_mask,
                                   block_size=block_size, impl=impl)
    return _output(attended, weights)


class _ProjectedAttention(nn.Module):
    """Holds q_proj / kv_proj / out_proj; subclasses choose the attention pattern."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        _check_heads(dim, heads)
        self.dim, self.heads = dim, heads
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def weights(self) -> AttentionWeights:
        """The live parameters (not copies) as :class:`AttentionWeights`."""
        return AttentionWeights(self.q_proj.weight, self.q_proj.bias, self.kv_proj.weight,
                                self.kv_proj.bias, self.out_proj.weight, self.out_proj.bias)

    def to_multihead_attention(self, dropout: float = 0.0) -> nn.MultiheadAttention:
        """A stand-alone ``nn.MultiheadAttention(batch_first=True)`` with copied weights."""
        bias = self.q_proj.bias is not None
        mha = nn.MultiheadAttention(self.dim, self.heads, dropout=dropout, bias=bias,
                                    batch_first=True, device=self.q_proj.weight.device,
                                    dtype=self.q_proj.weight.dtype)
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.cat([self.q_proj.weight, self.kv_proj.weight]))
            mha.out_proj.weight.copy_(self.out_proj.weight)
            if bias:
                mha.in_proj_bias.copy_(torch.cat([self.q_proj.bias, self.kv_proj.bias]))
                mha.out_proj.bias.copy_(self.out_proj.bias)
        return mha


class CrossAttention(_ProjectedAttention):
    """Corrected cross-attention module over :func:`cross_attention`.

    ``forward(text (B, N_txt, D), image (B, N_img, D), key_padding_mask (B, N_img) bool | None)
    -> (B, N_txt, D)``. ``backend`` may be reassigned at any time; the parameters, and hence the
    result, do not change with it. Dropout acts only in ``train()`` mode.
    """

    def __init__(self, dim: int, heads: int = 8, backend: str = "math", dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__(dim, heads, bias)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = dropout
        self.backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ValueError(f"backend={value!r} is not supported; accepted: "
                             f"{', '.join(map(repr, BACKENDS))}")
        self._backend = value

    def forward(self, text: torch.Tensor, image: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return cross_attention(text, image, self.weights(), self.heads, self.backend,
                               key_padding_mask, self.dropout, self.training)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, backend={self.backend!r}, " \
               f"dropout={self.dropout}"


class SelfAttention(CrossAttention):
    """Dense self-attention over one (joint) sequence: ``forward(tokens (B, N, D),
    key_padding_mask (B, N) bool | None) -> (B, N, D)``; same parameters as CrossAttention."""

    def forward(self, tokens: torch.Tensor,  # type: ignore[override]
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return cross_attention(tokens, tokens, self.weights(), self.heads, self.backend,
                               key_padding_mask, self.dropout, self.training)


class LocalAttention(_ProjectedAttention):
    """Sparse sliding-window attention, O(N·w) time and memory (no dropout).

    ``forward(tokens (B, N_q, D), context (B, N_kv, D) | None = None, key_padding_mask
    (B, N_kv) bool | None = None) -> (B, N_q, D)``: self-attention when ``context`` is None.
    Same parameter layout as :class:`CrossAttention`, so ``load_state_dict`` works both ways;
    with ``window >= 2 * N_kv - 1`` it equals the dense module.
    """

    def __init__(self, dim: int, heads: int = 8, window: int = 256,
                 block_size: int = DEFAULT_BLOCK_SIZE, impl: str = "auto",
                 bias: bool = True) -> None:
        super().__init__(dim, heads, bias)
        check_window(window)
        check_window(block_size, "block_size")
        if impl not in LOCAL_IMPLS:
            raise ValueError(f"impl={impl!r} is not supported; accepted: "
                             f"{', '.join(map(repr, LOCAL_IMPLS))}")
        self.window, self.block_size, self.impl = window, block_size, impl

    def forward(self, tokens: torch.Tensor, context: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        ctx = tokens if context is None else context
        return local_cross_attention(tokens, ctx, self.weights(), self.heads, self.window,
                                     key_padding_mask, self.block_size, self.impl)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, window={self.window}, " \
               f"block_size={self.block_size}, impl={self.impl!r}"


def joint_sequence(text: torch.Tensor, image: torch.Tensor,
                   text_padding_mask: torch.Tensor | None = None,
                   image_padding_mask: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate text (B, N_txt, D) and image (B, N_img, D) into (B, N_txt + N_img, D),
    text first, with the matching (B, N) bool padding mask (None when neither is given)."""
    if text.dim() != 3 or image.dim() != 3 or text.shape[0] != image.shape[0] \
            or text.shape[2] != image.shape[2]:
        raise ValueError(f"text and image must be (B, N, D) with equal B and D, got text "
                         f"{tuple(text.shape)} and image {tuple(image.shape)}")
    tokens = torch.cat([text, image], dim=1)
    if text_padding_mask is None and image_padding_mask is None:
        return tokens, None
    masks = []
    for name, m, x in (("text", text_padding_mask, text), ("image", image_padding_mask, image)):
        if m is None:
            m = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        elif m.dtype != torch.bool or tuple(m.shape) != tuple(x.shape[:2]):
            raise ValueError(f"{name}_padding_mask must be torch.bool of shape "
                             f"{tuple(x.shape[:2])}, got {m.dtype} {tuple(m.shape)}")
        masks.append(m)
    return tokens, torch.cat(masks, dim=1)


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def attention_flops(batch: int, n_q: int, n_kv: int, dim: int, heads: int,
                    window: int | None = None, *, projections: bool = True) -> int:
    """Analytic FLOPs of one corrected attention forward (2 FLOPs per multiply-add).

    Counts the matrix products only: projections ``2·B·D²·(N_q + 2·N_kv)`` (q on the queries,
    k and v on the context), ``QK^T`` and ``AV`` ``2·B·P·D`` each, where P is the number of
    attended (query, key) pairs (``N_q·N_kv`` dense; the exact clipped window count for
    ``window``), and the output projection ``2·B·N_q·D²``. Softmax, scaling and masking
    (O(B·H·P)) are left out, as ``torch.utils.flop_counter`` does. ``heads`` does not change
    the count (H heads of D/H dims) but must divide ``dim``. ``projections=False`` gives the
    attention core alone. The blocked sparse kernel computes some masked pairs too; this
    counts the useful work, so GFLOP/s compare implementations on equal terms.
    """
    _check_sizes(batch=batch, n_q=n_q, n_kv=n_kv)
    _check_heads(dim, heads)
    pairs = n_q * n_kv if window is None else local_pair_count(n_q, n_kv, check_window(window))
    flops = 2 * 2 * batch * pairs * dim
    if projections:
        flops += 2 * batch * dim * dim * (n_q + 2 * n_kv) + 2 * batch * n_q * dim * dim
    return flops


def seed_attention_flops(batch: int, n_x: int, n_y: int, dim: int) -> int:
    """FLOPs of :class:`SeedCrossAttention`: ``to_qkv`` (D -> 3D) on both inputs, then one
    (N_x, D) x (D, N_y) product per batch item (2 FLOPs per multiply-add)."""
    _check_sizes(batch=batch, n_x=n_x, n_y=n_y, dim=dim)
    return 2 * batch * (n_x + n_y) * dim * 3 * dim + 2 * batch * n_x * n_y * dim


def autocast_context(device: torch.device | str,
                     dtype: torch.dtype | None = None) -> contextlib.AbstractContextManager[None]:
    """``torch.autocast`` for ``device``: bfloat16 on CPU; on CUDA bfloat16 where the GPU has it
    natively, else float16. ``dtype`` overrides (bfloat16 or float16 only). Whether bf16 pays on a
    CPU (AVX512-BF16 / AMX) is the caller's question (``pytest_mmperf.devices.has_native_bf16``
    in this repository's tests and benchmarks): without native support it is a slowdown."""
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"autocast_context supports 'cpu' and 'cuda' devices, got {device!r}")
    if dtype is None:
        native = dev.type == "cuda" and torch.cuda.is_available() and \
            torch.cuda.is_bf16_supported(including_emulation=False)
        dtype = torch.bfloat16 if dev.type == "cpu" or native else torch.float16
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"autocast dtype must be torch.bfloat16 or torch.float16, got {dtype}")
    return torch.autocast(device_type=dev.type, dtype=dtype)
