"""Sequence packing for variable-length clips: where each clip's tokens sit in attention rows.

Representation. The tokens of all clips of a batch live back to back in one flat tensor
`[N, D]` (clip 0's tokens, then clip 1's, ...; each clip `[CLS, DIST, patches...]`). Every
per-token layer (LayerNorm, qkv, MLP) runs on that flat tensor, so padding costs nothing there.
Only attention and the ToMe similarity need rows: a `Layout` scatters the flat tokens into rows
`[R, L, C]`, where each row holds whole clips (greedy first-fit-decreasing packing, at most
`max_tokens` tokens per row) followed by zero padding, and gathers them back.

Attention inside a row is block-diagonal: a token attends only to tokens of its own clip. The
mask is built from the per-slot `segment` (the clip id, -1 for padding): query and key must
have the same segment. Padding slots thus attend only to padding (no all-masked row, no NaN)
and are never attended by a real token, so padding never influences a result. Proportional
attention adds log(size) of each key on top of the same mask.

Token merging inside packed rows lives with the reduction methods
(`fastast_cli.models.reduction.tome.packed_bipartite_matching`); the token state
(`fastast_cli.models.token_state.PackedState`) carries the layout from block to block.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    def is_dense(self) -> bool:
        """One clip per row and no padding: rows are a plain reshape of the flat tokens."""
        return list(self.rows) == list(range(self.num_clips)) and all(
            count == self.length for count in self.counts
        )

    @cached_property
    def count_tensor(self) -> torch.Tensor:
        """[K] tokens of each clip, as a tensor."""
        return torch.tensor(self.counts, device=self.device, dtype=torch.long)

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
        return torch.tensor(self.rows, device=self.device)

    @cached_property
    def offset_tensor(self) -> torch.Tensor:
        """[K] first slot of every clip in its row, on the device."""
        return torch.tensor(self.offsets, device=self.device)

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
        if self.is_dense:
            return values.reshape(self.num_rows, self.length, channels)
        rows = values.new_zeros(self.num_rows * self.length, channels)
        return rows.index_copy(0, self.slot, values).view(self.num_rows, self.length, channels)

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows [R, L, C] → flat values [N, C]; padding slots are dropped."""
        flat = rows.reshape(self.num_rows * self.length, rows.shape[-1])
        return flat if self.is_dense else flat.index_select(0, self.slot)


def block_diagonal_bias(
    layout: Layout, log_sizes: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """Additive SDPA mask: tokens attend within their clip, plus log(size) per key.

    log_sizes: [N, 1] log of every flat token's size (proportional attention), or None.
    Returns [R, 1, L, L] (-inf across clips and between padding and real tokens), or, for a
    dense layout (one clip per row, no padding), only the size term [R, 1, 1, L] or None.
    """
    key_bias = None if log_sizes is None else layout.to_rows(log_sizes.to(dtype))[..., 0]
    if layout.is_dense:
        return None if key_bias is None else key_bias[:, None, None, :]
    blocked = layout.attention_mask.to(dtype)
    return blocked if key_bias is None else blocked + key_bias[:, None, None, :]
