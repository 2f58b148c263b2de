"""Local (sliding-window) attention whose time and memory grow as O(N·w), not O(N·M).

Private helper of :mod:`reference.attention`; everything here works on tensors that are
already projected and split into heads: ``q`` (B, H, N_q, d), ``k``/``v`` (B, H, N_kv, d).
One window definition (:func:`window_bounds`, :func:`window_center`) serves every
implementation and the FLOP count.

Implementations (``impl``, chosen by :func:`resolve_impl`): ``"blocked"`` (query blocks with
their key spans in one masked ``F.scaled_dot_product_attention`` call: the fused kernel does the
work and never materialises scores), ``"flex"`` (compiled FlexAttention, the default on CUDA) and
``"flex_eager"`` (a cross-check of the mask in tests, never a fast path). Why the blocked kernel
has the shape it has, with the measurements: docs/local-attention.md.

Rows whose window holds only padded keys produce zeros (the convention of
``F.scaled_dot_product_attention`` and ``flex_attention``), never NaN.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F

LOCAL_IMPLS: tuple[str, ...] = ("auto", "blocked", "flex", "flex_eager")


def check_window(window: object, where: str = "window") -> int:
    """Return ``window`` as an int, or raise ``ValueError`` naming the bad value."""
    if isinstance(window, bool) or not isinstance(window, int):
        raise ValueError(f"{where} must be an int >= 1 (number of keys each query sees), "
                         f"got {window!r} of type {type(window).__name__}")
    if window < 1:
        raise ValueError(f"{where} must be >= 1 (number of keys each query sees), got {window}")
    return window


def window_bounds(window: int) -> tuple[int, int]:
    """Keys before and after the centre: ``((w - 1) // 2, w // 2)``; they sum to ``w - 1``.

    So a window holds exactly ``w`` keys away from the edges (``w = 1``: only the centre; even
    ``w``: one more key after than before). Near the edges the window is clipped, never shifted,
    so edge queries see fewer keys. A window of ``w >= 2 * N_kv - 1`` covers every key for every
    query: the result then equals dense attention (tested).
    """
    check_window(window)
    return (window - 1) // 2, window // 2


def window_center(i: int, n_q: int, n_kv: int) -> int:
    """Centre key of query ``i``: ``floor((i + 0.5) * n_kv / n_q)`` (``i`` itself when equal).

    Self-attention over a joint sequence (``n_q == n_kv``): the centre of query ``i`` is key
    ``i``. Cross-attention: positions are aligned proportionally, both sequences read as
    samplings of the same interval. That suits aligned streams (audio frames against video
    frames); for text queries over image patches it is a structural sparsity pattern, not a
    semantic one.
    """
    return ((2 * i + 1) * n_kv) // (2 * n_q)


def window_centers(n_q: int, n_kv: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Centres of all queries, (n_q,) int64; same formula as :func:`window_center`."""
    i = torch.arange(n_q, device=device, dtype=torch.int64)
    return ((2 * i + 1) * n_kv).div(2 * n_q, rounding_mode="floor")


def local_window_mask(n_q: int, n_kv: int, window: int,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """Dense (n_q, n_kv) bool mask, True where query i may attend key j (O(N²): tests only)."""
    left, right = window_bounds(window)
    c = window_centers(n_q, n_kv, device)[:, None]
    j = torch.arange(n_kv, device=device)[None, :]
    return (j >= c - left) & (j <= c + right)


def local_pair_count(n_q: int, n_kv: int, window: int) -> int:
    """Exact number of (query, key) pairs the window allows, edge clipping included."""
    left, right = window_bounds(window)
    c = window_centers(n_q, n_kv)
    lo = (c - left).clamp(min=0)
    hi = (c + right).clamp(max=n_kv - 1)
    return int((hi - lo + 1).clamp(min=0).sum().item())


def resolve_impl(impl: str, device: torch.device) -> str:
    """Map ``"auto"`` to ``"flex"`` on CUDA (where FlexAttention compiles to a fused kernel)
    and to ``"blocked"`` elsewhere; validate explicit choices.

    * ``"blocked"``: :func:`_local_blocked`. Work O(N_q · (w + block_size)); extra memory
      O(N_q · span) bytes of mask (plus, for cross-attention, the gathered key/value windows).
    * ``"flex"``: ``torch.compile(flex_attention)`` with a ``create_block_mask`` block mask; the
      fused kernel skips fully-masked 128x128 tiles. On CPU it works, but its first call
      compiles for a long time and its steady state is slower than ``"blocked"``
      (docs/local-attention.md#design-choices), so ``"auto"`` keeps CPUs on ``"blocked"``. torch
      has no CPU backward for FlexAttention: on CPU both flex variants are forward-only.
    * ``"flex_eager"``: ``flex_attention`` without compilation. It materialises the full
      (N_q, N_kv) score matrix per head, so it only cross-checks the mask definition in tests.
    """
    if impl not in LOCAL_IMPLS:
        raise ValueError(f"impl={impl!r} is not a local attention implementation; "
                         f"accepted: {', '.join(map(repr, LOCAL_IMPLS))}")
    if impl != "auto":
        return impl
    return "flex" if device.type == "cuda" and _flex_importable() else "blocked"


@functools.cache
def _flex_importable() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:  # torch < 2.5
        return False
    return True


# Query rows per block of the "blocked" implementation. A block computes (block + w - 1) keys
# per query (rounded up to a multiple of 16) for w useful ones, so smaller blocks waste less
# (1.125x at 32, w=256; 1.25x at 64; 1.5x at 128) but make more, smaller tiles. 32 is the
# fastest of 16 / 32 / 64 / 128 at 4096 tokens on the CPUs measured
# (docs/local-attention.md#block-size).
DEFAULT_BLOCK_SIZE = 32


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, *,
                    key_padding_mask: torch.Tensor | None = None,
                    block_size: int = DEFAULT_BLOCK_SIZE,
                    impl: str = "auto") -> torch.Tensor:
    """Sliding-window attention on projected heads, scaled by 1/sqrt(d).

    Args:
        q: (B, H, N_q, d) queries. k, v: (B, H, N_kv, d) keys and values.
        window: keys per query (centres and clipping: :func:`window_bounds`, :func:`window_center`).
        key_padding_mask: optional (B, N_kv) bool, True = ignore that key.
        block_size: query rows per block of the ``"blocked"`` implementation.
        impl: one of :data:`LOCAL_IMPLS`.

    Returns:
        (B, H, N_q, d) attended values.
    """
    check_window(window)
    check_window(block_size, "block_size")
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] \
            or q.shape[-1] != k.shape[-1]:
        raise ValueError("local_attention expects q (B, H, N_q, d) and k, v (B, H, N_kv, d) "
                         f"with equal B, H, d; got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if key_padding_mask is not None:
        expected = (k.shape[0], k.shape[2])
        if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != expected:
            raise ValueError(f"key_padding_mask must be a torch.bool tensor of shape (B, N_kv) = "
                             f"{expected}, got {key_padding_mask.dtype} "
                             f"{tuple(key_padding_mask.shape)}")
    chosen = resolve_impl(impl, q.device)
    if chosen == "blocked":
        return _local_blocked(q, k, v, window, key_padding_mask, block_size)
    return _local_flex(q, k, v, window, key_padding_mask, compiled=chosen == "flex")


_SPAN_MULTIPLE = 16


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _local_blocked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                   key_padding_mask: torch.Tensor | None, block_size: int) -> torch.Tensor:
    """Banded attention: query blocks become the "heads" of one SDPA call whose batch entries
    are the (batch, head) pairs, each block paired with a window of ``span`` keys and a
    (block, span) mask (blocks go to the batch dimension instead when padding differs between
    batch entries). q (B, H, N_q, d), k and v (B, H, N_kv, d) -> (B, H, N_q, d).

    A block sees the keys from its first query's window start to its last query's window end:
    ``span = block + w - 1`` keys for self-attention (rounded up to a multiple of 16), about
    ``block * N_kv / N_q + w`` for cross-attention. At N = 4096, w = 256 and 32-row blocks
    (288 keys) the arithmetic ratio against dense attention is 4096 / 288 = 14.2x; the measured
    one is lower, since the fused kernel runs many small masked tiles.

    One large call rather than a Python loop of small ones: under contention every call is an
    OpenMP barrier that waits for a descheduled thread (docs/local-attention.md#design-choices).
    For self-attention the key windows are strided views (``unfold``) of the padded keys, so no
    (N/block) x span copy is made; for cross-attention block starts are not evenly spaced and
    the windows are gathered (a copy of N_q/block x span keys).
    """
    bsz, heads, n_q, dim_head = q.shape
    n_kv = k.shape[2]
    left, right = window_bounds(window)
    block = min(block_size, n_q)
    n_blocks = -(-n_q // block)
    dev = q.device
    keep = None if key_padding_mask is None else ~key_padding_mask  # (B, N_kv), True = attend

    if n_q == n_kv:  # self-attention: block j sees keys [j*block - left, (j+1)*block + right)
        # Rounded up to a multiple of 16 keys (the mask drops the extra ones): the fused CPU
        # kernel's tiles are SIMD-width multiples (docs/local-attention.md#design-choices).
        span = _round_up(block + left + right, _SPAN_MULTIPLE)
        pad_r = (n_blocks - 1) * block + span - left - n_kv
        key_pos = (torch.arange(n_blocks, device=dev) * block - left)[:, None] \
            + torch.arange(span, device=dev)  # (n_blocks, span), may fall outside [0, n_kv)

        def windows(x: torch.Tensor) -> torch.Tensor:  # (B, H, N, d) -> (B, H, nb, span, d)
            xp = F.pad(x, (0, 0, left, pad_r)).unfold(2, span, block)  # (B, H, nb, d, span)
            return xp.transpose(-1, -2)

        keep_w = None if keep is None else F.pad(keep, (left, pad_r)).unfold(1, span, block)
    else:  # cross-attention: proportional centres, gathered windows
        # Centres are non-decreasing, so a block needs the keys from its first query's window
        # start to its last query's window end.
        firsts = [window_center(j * block, n_q, n_kv) - left for j in range(n_blocks)]
        lasts = [window_center(min((j + 1) * block, n_q) - 1, n_q, n_kv) + right
                 for j in range(n_blocks)]
        span = min(n_kv, max(hi - lo + 1 for lo, hi in zip(firsts, lasts, strict=True)))
        # Windows sticking out of [0, n_kv) are shifted back inside: they still hold every key
        # their block needs (that range is clipped to [0, n_kv) and at most `span` long).
        starts = torch.tensor([min(max(lo, 0), n_kv - span) for lo in firsts], device=dev)
        key_pos = starts[:, None] + torch.arange(span, device=dev)

        def windows(x: torch.Tensor) -> torch.Tensor:  # (B, H, N_kv, d) -> (B, H, nb, span, d)
            return x[:, :, key_pos]

        keep_w = None if keep is None else keep[:, key_pos]  # (B, n_blocks, span)

    centers = window_centers(n_q, n_kv, dev)
    centers = torch.cat([centers, centers[-1:].expand(n_blocks * block - n_q)])  # padded rows
    centers = centers.view(n_blocks, block, 1)
    pos = key_pos[:, None, :]
    mask = (pos >= centers - left) & (pos <= centers + right) & (pos >= 0) & (pos < n_kv)
    extra = n_blocks * block - n_q
    q_padded = q if extra == 0 else F.pad(q, (0, 0, 0, extra))  # (B, H, nb * block, d)
    k_w, v_w = windows(k), windows(v)
    if keep_w is None or bsz == 1:
        # Blocks go in SDPA's head dimension and (batch, head) pairs in its batch dimension:
        # q is a view, the windows are views (self-attention), one (nb, block, span) mask
        # serves every head, and the output is (B, H, N, d) already, with no copy back
        # (docs/local-attention.md#design-choices).
        if keep_w is not None:
            mask = mask & keep_w[0][:, None, :]
        out = F.scaled_dot_product_attention(
            q_padded.reshape(bsz * heads, n_blocks, block, dim_head),
            k_w.reshape(bsz * heads, n_blocks, span, dim_head),
            v_w.reshape(bsz * heads, n_blocks, span, dim_head), attn_mask=mask[None])
        return out.view(bsz, heads, n_blocks * block, dim_head)[:, :, :n_q]
    # Padding that differs between batch entries: blocks in the batch dimension, so that one
    # (block, span) mask per (batch entry, block) serves all heads (the other layout would
    # need one per head; SDPA's fused CPU kernel takes 4-d inputs only).
    mask = mask[None] if keep_w is None else mask[None] & keep_w[:, :, None, :]
    mask = mask.expand(bsz, n_blocks, block, span).reshape(bsz * n_blocks, 1, block, span)

    def by_block(x: torch.Tensor, rows: int) -> torch.Tensor:  # (B, H, nb, r, d) -> (B*nb, H, r, d)
        return x.transpose(1, 2).reshape(bsz * n_blocks, heads, rows, dim_head)

    out = F.scaled_dot_product_attention(
        by_block(q_padded.view(bsz, heads, n_blocks, block, dim_head), block),
        by_block(k_w, span), by_block(v_w, span), attn_mask=mask)
    out = out.view(bsz, n_blocks, heads, block, dim_head).transpose(1, 2)
    return out.reshape(bsz, heads, n_blocks * block, dim_head)[:, :, :n_q]


@functools.lru_cache(maxsize=16)
def _cached_block_mask(n_q: int, n_kv: int, window: int, device: str) -> Any:
    # create_block_mask evaluates the mask over the whole (n_q, n_kv) grid, slow at 4096 x 4096
    # on a CPU: reuse it when no padding is given.
    return _make_block_mask(n_q, n_kv, window, None, torch.device(device))


def _make_block_mask(n_q: int, n_kv: int, window: int, key_padding_mask: torch.Tensor | None,
                     device: torch.device) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    left, right = window_bounds(window)
    centers = window_centers(n_q, n_kv, device)

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor,
                 kv_idx: torch.Tensor) -> torch.Tensor:
        c = centers[q_idx]
        ok = (kv_idx >= c - left) & (kv_idx <= c + right)
        if key_padding_mask is not None:
            ok = ok & ~key_padding_mask[b, kv_idx]
        return ok

    batch = None if key_padding_mask is None else key_padding_mask.shape[0]
    return create_block_mask(mask_mod, batch, None, n_q, n_kv, device=device)


@functools.cache
def _compiled_flex() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _local_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                key_padding_mask: torch.Tensor | None, compiled: bool) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    n_q, n_kv = q.shape[2], k.shape[2]
    if key_padding_mask is None:
        block_mask = _cached_block_mask(n_q, n_kv, window, str(q.device))
    else:
        block_mask = _make_block_mask(n_q, n_kv, window, key_padding_mask, q.device)
    if compiled:
        return _compiled_flex()(q, k, v, block_mask=block_mask)
    with warnings.catch_warnings():
        # The eager path warns that it is unfused; that is the point of "flex_eager".
        warnings.simplefilter("ignore", UserWarning)
        return flex_attention(q, k, v, block_mask=block_mask)
