"""How many tokens each block merges: r schedules and the per-block cap.

r is one int for every block, a list with one int per block, or (ElasticAST) a fraction of each
clip's patch tokens; a block never merges more than half of a sequence's mergeable tokens (all
but the protected CLS and DIST), see `allowed_merges`.
"""

from __future__ import annotations

from collections.abc import Sequence

RSchedule = int | Sequence[int]

# CLS and DIST lead every clip's sequence and are never reduced.
NUM_PREFIX_TOKENS = 2


def max_merge(num_tokens: int, protected: int) -> int:
    """The most tokens one block can merge: half of the mergeable tokens (the size of set B)."""
    return max(num_tokens - protected, 0) // 2


def allowed_merges(num_tokens: int, r: int, protected: int) -> int:
    """Tokens a block merges in a sequence (one clip) of `num_tokens` when asked for `r`.

    The one place the per-block cap is decided: the blocks of both layouts, the token counts
    (`tokens_per_block`) and the capped-merging note all ask this function.
    """
    return min(r, max_merge(num_tokens, protected))


def resolve_schedule(r: RSchedule, depth: int, schedule: str = "constant") -> list[int]:
    """Tokens to merge in each of `depth` blocks.

    r: one int for every block, or a list with one int per block.
    schedule: with an int r, `constant` (r in every block) or `decreasing` (linear from 2r in the
        first block to 0 in the last, rounded so that the total stays r·depth).
    """
    if isinstance(r, int):
        if r < 0:
            raise ValueError(f"r must be >= 0, got {r}")
        if schedule == "constant":
            return [r] * depth
        if schedule == "decreasing":
            return _decreasing(r, depth)
        raise ValueError(f"unknown r schedule {schedule!r}: use 'constant' or 'decreasing'")
    per_block = [int(v) for v in r]
    if len(per_block) != depth:
        raise ValueError(f"an r list needs one value per block ({depth}), got {len(per_block)}")
    if any(v < 0 for v in per_block):
        raise ValueError(f"r values must be >= 0, got {per_block}")
    return per_block


def _decreasing(r: int, depth: int) -> list[int]:
    """Linear ramp 2r → 0 over `depth` blocks, largest-remainder rounded to total r·depth."""
    if depth == 1:
        return [r]
    ideal = [2 * r * (1 - i / (depth - 1)) for i in range(depth)]
    values = [int(v) for v in ideal]
    missing = r * depth - sum(values)
    by_remainder = sorted(range(depth), key=lambda i: ideal[i] - values[i], reverse=True)
    for i in by_remainder[:missing]:
        values[i] += 1
    return values


def tokens_per_block(num_tokens: int, schedule: Sequence[int], protected: int) -> list[int]:
    """Token count after each block for `num_tokens` input tokens, the per-block cap applied."""
    counts = []
    for r in schedule:
        num_tokens -= allowed_merges(num_tokens, r, protected)
        counts.append(num_tokens)
    return counts


def first_capped_block(
    num_tokens: int, schedule: Sequence[int], protected: int
) -> tuple[int, int] | None:
    """The first block (0-based) whose r exceeds what it can merge, and what it can merge
    there; None when every block merges its full r."""
    for block, r in enumerate(schedule):
        allowed = allowed_merges(num_tokens, r, protected)
        if allowed < r:
            return block, allowed
        num_tokens -= r
    return None


def capped_merging_note(num_patches: int, depth: int, r: RSchedule,
                        schedule: str = "constant", protected: int = 2) -> str | None:
    """A one-line note when `r` asks for more merging than `num_patches` patches (+ the
    `protected` CLS and DIST tokens) allow over `depth` blocks: those blocks merge what they
    can, which no result shows. None when every block merges its full r."""
    capped = first_capped_block(num_patches + protected, resolve_schedule(r, depth, schedule),
                                protected)
    if capped is None:
        return None
    block, cap = capped
    return (f"note: r={r} is more than {num_patches} patches allow: block {block + 1} merges "
            f"only {cap} tokens (half of those left), and so on; the merging is capped")
