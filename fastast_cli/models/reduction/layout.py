"""Where each clip's tokens sit: packed rows, the block-diagonal mask, and per-clip views.

Two layouts run the same blocks:

- dense (the fixed AST): tokens [B, N, D], one clip per row; no `Layout` (None);
- packed (ElasticAST): the tokens of all clips of a batch live back to back in one flat tensor
  [N, D] (clip 0's tokens, then clip 1's, ...; each clip `[CLS, DIST, patches...]`). Every
  per-token layer (LayerNorm, qkv, MLP) runs on that flat tensor, so padding costs nothing there.
  Only attention and the similarity of a matching need rows: a `Layout` scatters the flat tokens
  into rows [R, L, C], where each row holds whole clips (greedy first-fit-decreasing packing, at
  most `max_tokens` tokens per row) followed by zero padding, and gathers them back.

Attention inside a row is block-diagonal (`block_diagonal_bias`): a token attends only to tokens
of its own clip. The mask is built from the per-slot `segment` (the clip id, -1 for padding):
query and key must have the same segment. Padding slots thus attend only to padding (no
all-masked row, no NaN) and are never attended by a real token, so padding never influences a
result. Proportional attention adds log(size) of each key on top of the same mask.

`ClipView` lays the mergeable tokens of every clip (either layout) out as padded rows [K, T], on
which the methods that are not ToMe's bipartite matching score, rank and pick partners.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch


def first_fit_decreasing(counts: Sequence[int], max_tokens: int) -> list[int]:
    """Row of every clip: longest clips first, each into the first row with room left.

    counts: tokens per clip. Returns one row index per clip; rows are numbered in order of
    opening. Raises ValueError for a clip longer than `max_tokens`.
    """
    too_long = [(i, n) for i, n in enumerate(counts) if n > max_tokens]
    if too_long:
        clip, count = too_long[0]
        raise ValueError(
            f"clip {clip} has {count} tokens, more than max_tokens={max_tokens}: raise "
            "max_tokens or cut the clip"
        )
    rows = [0] * len(counts)
    free: list[int] = []  # tokens left in each open row
    for clip in sorted(range(len(counts)), key=lambda i: -counts[i]):
        row = next((j for j, room in enumerate(free) if room >= counts[clip]), len(free))
        if row == len(free):
            free.append(max_tokens)
        free[row] -= counts[clip]
        rows[clip] = row
    return rows


def host_to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor built on the host (from clip lengths, per-clip counts) moved to `device` without
    a device sync: on CUDA through pinned memory, copied asynchronously (a copy from pageable
    memory waits for the device, once per index tensor of every merging block)."""
    if device.type != "cuda" or torch.compiler.is_compiling():  # Dynamo cannot trace pinning
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


def device_tensor(values: Sequence[int], device: torch.device) -> torch.Tensor:
    """[len(values)] int64 tensor of host integers on `device`, without a device sync."""
    return host_to_device(torch.tensor(values, dtype=torch.long), device)


def exclusive_cumsum(values: torch.Tensor) -> torch.Tensor:
    """[0, v0, v0 + v1, ...] without the total: the start of each run of a ragged sequence."""
    return torch.cumsum(values, 0) - values


@dataclass(frozen=True, eq=False)
class Layout:
    """Where the flat tokens of each clip sit in packed rows.

    counts: tokens of each clip, in flat order. rows: the row each clip is packed into; within a
    row, clips keep their flat (ascending id) order, then padding fills the row to `length`.
    Everything derived (offsets, per-slot segment, index maps) is computed once, on `device`.
    """

    counts: tuple[int, ...]
    rows: tuple[int, ...]
    device: torch.device = torch.device("cpu")

    @classmethod
    def pack(
        cls, counts: Sequence[int], max_tokens: int, device: torch.device | str = "cpu"
    ) -> Layout:
        """Clips packed greedily into rows of at most `max_tokens` tokens."""
        return cls(tuple(counts), tuple(first_fit_decreasing(counts, max_tokens)), device)

    @classmethod
    def one_per_row(cls, counts: Sequence[int], device: torch.device | str = "cpu") -> Layout:
        """Every clip in its own row, padded to the longest clip (a classic padded batch)."""
        return cls(tuple(counts), tuple(range(len(counts))), device)

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", torch.device(self.device))

    def resized(self, counts: Sequence[int]) -> Layout:
        """The same clips in the same rows, with new token counts (after merging)."""
        return Layout(tuple(counts), self.rows, self.device)

    @property
    def num_clips(self) -> int:
        return len(self.counts)

    @property
    def num_tokens(self) -> int:
        return sum(self.counts)

    @cached_property
    def num_rows(self) -> int:
        return max(self.rows, default=-1) + 1

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """First slot of each clip inside its row."""
        filled = [0] * self.num_rows
        offsets = []
        for row, count in zip(self.rows, self.counts, strict=True):
            offsets.append(filled[row])
            filled[row] += count
        return tuple(offsets)

    @cached_property
    def length(self) -> int:
        """Slots per row: the fullest row's tokens."""
        filled = [0] * self.num_rows
        for row, count in zip(self.rows, self.counts, strict=True):
            filled[row] += count
        return max(filled, default=0)

    @cached_property
    def rows_are_clips(self) -> bool:
        """One clip per row and no padding: rows are a plain reshape of the flat tokens."""
        return list(self.rows) == list(range(self.num_clips)) and all(
            count == self.length for count in self.counts
        )

    @cached_property
    def count_tensor(self) -> torch.Tensor:
        """[K] tokens of each clip, as a tensor."""
        return device_tensor(self.counts, self.device)

    @cached_property
    def starts(self) -> torch.Tensor:
        """[K] flat index of each clip's first token."""
        return exclusive_cumsum(self.count_tensor)

    @cached_property
    def token_clip(self) -> torch.Tensor:
        """[N] clip of every flat token."""
        clips = torch.arange(self.num_clips, device=self.device)
        # output_size spares a device → host sync on CUDA
        return clips.repeat_interleave(self.count_tensor, output_size=self.num_tokens)

    @cached_property
    def token_position(self) -> torch.Tensor:
        """[N] position of every flat token inside its clip (0 = CLS, 1 = DIST, ...)."""
        return torch.arange(self.num_tokens, device=self.device) - self.starts[self.token_clip]

    @cached_property
    def row_tensor(self) -> torch.Tensor:
        """[K] row of every clip, on the device."""
        return device_tensor(self.rows, self.device)

    @cached_property
    def offset_tensor(self) -> torch.Tensor:
        """[K] first slot of every clip in its row, on the device."""
        return device_tensor(self.offsets, self.device)

    @cached_property
    def slot(self) -> torch.Tensor:
        """[N] index of every flat token in the rows, flattened to [R·L]."""
        clip = self.token_clip
        return (self.row_tensor[clip] * self.length + self.offset_tensor[clip]
                + self.token_position)

    @cached_property
    def segment(self) -> torch.Tensor:
        """[R, L] clip of every row slot, -1 for padding."""
        segment = torch.full((self.num_rows * self.length,), -1, device=self.device)
        segment[self.slot] = self.token_clip
        return segment.view(self.num_rows, self.length)

    @cached_property
    def attention_mask(self) -> torch.Tensor:
        """[R, 1, L, L] additive float mask: 0 where query and key share a segment, else -inf.

        Padding (segment -1) thus attends only to padding and no real token attends to it.
        """
        same_clip = self.segment[:, :, None] == self.segment[:, None, :]  # [R, L, L]
        mask = torch.zeros(same_clip.shape, device=self.device)
        return mask.masked_fill_(~same_clip, float("-inf"))[:, None]

    def forget_mask(self) -> None:
        """Free the cached attention mask (R·L² floats) once no attention will use it."""
        self.__dict__.pop("attention_mask", None)

    def to_rows(self, values: torch.Tensor) -> torch.Tensor:
        """Flat values [N, C] → rows [R, L, C], padding slots zero."""
        channels = values.shape[-1]
        if self.rows_are_clips:
            return values.reshape(self.num_rows, self.length, channels)
        rows = values.new_zeros(self.num_rows * self.length, channels)
        return rows.index_copy(0, self.slot, values).view(self.num_rows, self.length, channels)

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows [R, L, C] → flat values [N, C]; padding slots are dropped."""
        flat = rows.reshape(self.num_rows * self.length, rows.shape[-1])
        return flat if self.rows_are_clips else flat.index_select(0, self.slot)


def block_diagonal_bias(
    layout: Layout, log_sizes: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """Additive SDPA mask: tokens attend within their clip, plus log(size) per key.

    log_sizes: [N, 1] log of every flat token's size (proportional attention), or None.
    Returns [R, 1, L, L] (-inf across clips and between padding and real tokens), or, when the
    rows are the clips (one per row, no padding), only the size term [R, 1, 1, L] or None.
    """
    key_bias = None if log_sizes is None else layout.to_rows(log_sizes.to(dtype))[..., 0]
    if layout.rows_are_clips:
        return None if key_bias is None else key_bias[:, None, None, :]
    blocked = layout.attention_mask.to(dtype)
    return blocked if key_bias is None else blocked + key_bias[:, None, None, :]


@dataclass
class ClipView:
    """The mergeable tokens (all but the `protected` CLS and DIST) of every clip as padded rows
    [K, T]: K clips, T the longest clip's mergeable tokens (dense: K = B rows, no padding).

    One batched computation on the view serves both layouts and never mixes clips. A method
    reads everything layout-dependent through it: `gather` (tokens → [K, T, C]), `clip_rows`
    (attention rows → the row of each clip), `per_clip` (a pattern made on the host per clip
    shape) and `rank`; `matching.regroup` turns its answer into a matching.

    clip_r: tokens each clip loses, as `ReductionStep.clip_r` (dense: [r] for every row).
    remove: [K] the same on the device, one value per view row (dense: r repeated).
    valid: [K, T] real (not padding) entries. layout, index: the packed layout and [K, T] flat
    token index of each entry (packed only; index 0 at padding). row, slot: [K] attention row
    of each clip and [K, T] slot of each entry in it; prefix_slot: [K, P] slots of its CLS and
    DIST.
    """

    protected: int
    clip_r: list[int]
    remove: torch.Tensor
    valid: torch.Tensor
    row: torch.Tensor
    slot: torch.Tensor
    prefix_slot: torch.Tensor
    layout: Layout | None = None
    index: torch.Tensor | None = None

    @classmethod
    def of(cls, tokens: torch.Tensor, layout: Layout | None, clip_r: list[int],
           protected: int) -> ClipView:
        """The view of dense rows (`layout` None: tokens [B, N, D]) or of packed clips (flat
        tokens [N, D] laid out by `layout`)."""
        if layout is None:
            return cls.of_rows(tokens, clip_r, protected)
        return cls.of_clips(tokens, layout, clip_r, protected)

    @classmethod
    def of_rows(cls, tokens: torch.Tensor, clip_r: list[int], protected: int) -> ClipView:
        """Dense rows: `tokens` [B, N, D], one clip per row, every row losing `clip_r[0]`
        (no padding; the view's rows are the attention rows)."""
        device = tokens.device
        batch, length = tokens.shape[:2]
        position = torch.arange(protected, length, device=device).expand(batch, -1)  # [B, T]
        remove = torch.full((batch,), clip_r[0], device=device, dtype=torch.long)
        everywhere = torch.ones_like(position, dtype=torch.bool)
        leading = torch.arange(protected, device=device)
        return cls(protected, list(clip_r), remove, everywhere, torch.arange(batch, device=device),
                   position, leading.expand(batch, -1))

    @classmethod
    def of_clips(cls, tokens: torch.Tensor, layout: Layout, clip_r: list[int],
                 protected: int) -> ClipView:
        """Packed clips: flat `tokens` [N, D] laid out by `layout`, clip c losing
        `clip_r[c]`."""
        device = tokens.device
        leading = torch.arange(protected, device=device)
        mergeable = (layout.count_tensor - protected).clamp_min(0)  # [K]
        longest = max(max(layout.counts) - protected, 1)  # from the host: no device sync
        within = torch.arange(longest, device=device)  # [T]
        valid = within < mergeable[:, None]  # [K, T]
        index = torch.where(valid, layout.starts[:, None] + protected + within, 0)
        offsets = layout.offset_tensor
        slot = torch.where(valid, offsets[:, None] + protected + within, 0)
        remove = device_tensor(clip_r, device)
        rows = layout.row_tensor
        return cls(protected, list(clip_r), remove, valid, rows, slot,
                   offsets[:, None] + leading, layout, index)

    @cached_property
    def target(self) -> torch.Tensor:
        """[K·T] flat token of every entry, padding sent to a spare slot N past the last token
        (packed only): scatters through it need no boolean-mask indexing."""
        spare = self.layout.num_tokens
        return torch.where(self.valid, self.index, spare).flatten()

    @property
    def padding_mask(self) -> torch.Tensor | None:
        """`valid` where some clip is shorter than the view's width, None where every entry is
        real (dense rows; packed clips of one length): read from the host, no device sync."""
        counts = set(() if self.layout is None else self.layout.counts)
        if len(counts) <= 1 and min(counts, default=self.protected + 1) > self.protected:
            return None
        return self.valid

    @property
    def counts(self) -> torch.Tensor:
        """[K] mergeable tokens of each clip."""
        return self.valid.sum(dim=1)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Per-token values (dense [B, N, C], packed flat [N, C]) → [K, T, C]."""
        if self.index is None:
            return values[:, self.protected :]
        return values[self.index]

    def scatter(self, values: torch.Tensor, prefix: float) -> torch.Tensor:
        """[K, T] per-entry values → per token (dense [B, N, 1], packed [N, 1]); CLS and DIST
        get `prefix`."""
        if self.index is None:
            ahead = values.new_full((values.shape[0], self.protected), prefix)
            return torch.cat([ahead, values], dim=1)[..., None]
        flat = values.new_full((self.layout.num_tokens + 1,), prefix)
        flat = flat.scatter(0, self.target, values.flatten())
        return flat[: self.layout.num_tokens, None]

    def clip_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Per attention row values [R, ...] → the row of every clip [K, ...] (dense: the rows
        themselves, no copy)."""
        if self.index is None:
            return rows
        return rows[self.row]

    def per_clip(self, make: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
        """[K, T] from a rule evaluated on the host: `make(count, remove)` → [T] for a clip of
        `count` mergeable tokens that loses `remove` (T: this view's width).

        Dense rows all have one shape: one call, expanded over the rows (the batch size stays
        symbolic when the model is exported); packed: one call per clip. Nothing is read back
        from the device.
        """
        width = self.valid.shape[1]
        if self.index is None:
            return host_to_device(make(width, self.clip_r[0]), self.valid.device).expand(
                self.valid.shape[0], -1)
        counts = [max(count - self.protected, 0) for count in self.layout.counts]
        return host_to_device(torch.stack([make(count, remove) for count, remove
                                           in zip(counts, self.clip_r, strict=True)]),
                              self.valid.device)

    def rank(self, score: torch.Tensor) -> torch.Tensor:
        """[K, T] rank of every entry in its clip by descending `score` (ties: earlier first;
        padding last)."""
        score = score.masked_fill(~self.valid, float("-inf"))
        order = score.argsort(dim=1, descending=True, stable=True)
        within = torch.arange(score.shape[1], device=score.device).expand_as(order)
        return torch.empty_like(order).scatter_(1, order, within)
