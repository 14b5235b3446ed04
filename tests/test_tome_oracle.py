"""An oracle for ToMe independent of the engine: bipartite soft matching restated from the paper
with Python loops, compared with the engine's dense and packed merges.

Bolya et al. 2023, "Token Merging: Your ViT but Faster", Sec. 3 ("Token merging", "Proportional
attention"), restated for one clip:

1. the protected prefix (CLS, DIST) takes no part; the other tokens alternate into set A (first,
   third, ...) and set B (second, fourth, ...);
2. each A token draws one edge, to the B token whose key is most similar by cosine similarity;
3. the r strongest edges merge: each group (a B token and the A tokens that chose it) becomes
   the average of its tokens weighted by their sizes, and its size is the sum of theirs.

The engine's ordering of the result, restated: [protected, unmerged A in position order, B in
position order]; ties are broken by position (of two equal edges the earlier A token merges
first; of two equally similar B tokens the earlier one is chosen).

Nothing from the package is used to compute an expected value: the oracle runs on Python floats.
"""

from __future__ import annotations

import math

import pytest
import torch

from fastast_cli import build_model
from fastast_cli.models.elastic import build_elastic
from fastast_cli.models.reduction.layout import Layout
from fastast_cli.models.reduction.tome import (
    ToMe,
    bipartite_soft_matching,
    packed_bipartite_matching,
)
from fastast_cli.models.vit import TokenState

PROTECTED = 2


def cosine(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def tome_oracle(tokens: list[list[float]], keys: list[list[float]], sizes: list[float], r: int,
                protected: int = PROTECTED) -> tuple[list[list[float]], list[float]]:
    """One clip's tokens [n][d], keys [n][c] and sizes [n] → its tokens and sizes after ToMe
    removes r of them (see the module docstring)."""
    count = len(tokens)
    set_a = [p for p in range(protected, count) if (p - protected) % 2 == 0]
    set_b = [p for p in range(protected, count) if (p - protected) % 2 == 1]
    edges = []  # (similarity, A token, its B token), in A's position order
    for a in set_a:
        best, partner = -math.inf, None
        for b in set_b:  # in position order: strictly better replaces, so the earliest wins ties
            similarity = cosine(keys[a], keys[b])
            if similarity > best:
                best, partner = similarity, b
        edges.append((best, a, partner))
    strongest = sorted(edges, key=lambda edge: -edge[0])  # stable: ties keep position order
    joins = {a: b for _, a, b in strongest[:r]}
    groups: dict[int, list[int]] = {b: [b] for b in set_b}
    for a, b in joins.items():
        groups[b].append(a)
    order = list(range(protected)) + [a for a in set_a if a not in joins] + set_b
    merged_tokens, merged_sizes = [], []
    for token in order:
        members = groups.get(token, [token])
        total = sum(sizes[m] for m in members)
        merged_tokens.append([sum(sizes[m] * tokens[m][i] for m in members) / total
                              for i in range(len(tokens[token]))])
        merged_sizes.append(total)
    return merged_tokens, merged_sizes


def random_clip(count: int, generator: torch.Generator, dim: int = 6, key_dim: int = 5,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens [n, dim], keys [n, key_dim] and sizes [n, 1] (1 to 4 patches; prefix 1)."""
    tokens = torch.randn(count, dim, generator=generator)
    keys = torch.randn(count, key_dim, generator=generator)
    sizes = torch.randint(1, 5, (count, 1), generator=generator).float()
    sizes[:PROTECTED] = 1.0
    return tokens, keys, sizes


def one_hot_keys(count: int, generator: torch.Generator, key_dim: int = 3) -> torch.Tensor:
    """Keys that are scaled basis vectors: every cosine similarity is exactly 0 or 1 in any
    precision, so many edges tie exactly (the tie-breaking is what is tested)."""
    axis = torch.randint(0, key_dim, (count,), generator=generator)
    scale = torch.randint(1, 4, (count, 1), generator=generator).float()
    return torch.eye(key_dim)[axis] * scale


def expected_clip(tokens: torch.Tensor, keys: torch.Tensor, sizes: torch.Tensor,
                  r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracle on one clip's tensors ([n, d], [n, c], [n, 1]) → tokens [n - r, d], sizes
    [n - r, 1]."""
    merged, merged_sizes = tome_oracle(tokens.double().tolist(), keys.double().tolist(),
                                       sizes[:, 0].double().tolist(), r)
    return (torch.tensor(merged, dtype=torch.float64).reshape(-1, tokens.shape[1]),
            torch.tensor(merged_sizes, dtype=torch.float64)[:, None])


def check_clip(merged: torch.Tensor, sizes: torch.Tensor, expected: torch.Tensor,
               expected_sizes: torch.Tensor) -> None:
    assert merged.shape == expected.shape
    assert torch.equal(sizes.double(), expected_sizes)  # sums of small integers: exact
    torch.testing.assert_close(merged.double(), expected, atol=1e-5, rtol=1e-5)


# --- the matching and the state, directly ------------------------------------------------------


@pytest.mark.parametrize("count, r", [(4, 1), (6, 1), (13, 0), (13, 3), (13, 5), (40, 7),
                                      (40, 19), (77, 20), (77, 37)])
@pytest.mark.parametrize("ties", [False, True])
def test_dense_rows_merge_as_the_paper_says(count, r, ties):
    generator = torch.Generator().manual_seed(count * 100 + r)
    rows = [random_clip(count, generator) for _ in range(3)]
    tokens = torch.stack([row[0] for row in rows])  # [3, n, d]
    keys = torch.stack([one_hot_keys(count, generator) if ties else row[1] for row in rows])
    sizes = torch.stack([row[2] for row in rows])
    state = TokenState(sizes=sizes.clone())
    merged = state.apply(bipartite_soft_matching(keys, r, PROTECTED), tokens)
    for row in range(3):
        expected, expected_sizes = expected_clip(tokens[row], keys[row], sizes[row], r)
        check_clip(merged[row], state.sizes[row], expected, expected_sizes)


PACKINGS = [
    # counts per clip (CLS and DIST included), tokens each clip loses, the row budget
    ((12, 7, 20, 9, 3, 15), (3, 2, 9, 1, 0, 6), 30),
    ((26, 10, 18, 34), (5, 4, 5, 16), 40),
    ((5, 5, 5, 5, 5, 5), (1, 0, 1, 1, 0, 1), 12),
    ((61, 8, 33), (29, 3, 0), 70),
]


@pytest.mark.parametrize("counts, remove, max_tokens", PACKINGS)
@pytest.mark.parametrize("ties", [False, True])
def test_packed_clips_merge_as_the_paper_says(counts, remove, max_tokens, ties):
    generator = torch.Generator().manual_seed(sum(counts) + max_tokens)
    clips = [random_clip(count, generator) for count in counts]
    if ties:
        clips = [(tokens, one_hot_keys(len(tokens), generator), sizes)
                 for tokens, _, sizes in clips]
    layout = Layout.pack(counts, max_tokens)
    assert layout.num_rows < len(counts)  # clips do share rows
    state = TokenState(layout, torch.cat([clip[2] for clip in clips]))
    matching = packed_bipartite_matching(torch.cat([clip[1] for clip in clips]), layout,
                                         list(remove), PROTECTED)
    merged = state.apply(matching, torch.cat([clip[0] for clip in clips]))
    after = [count - r for count, r in zip(counts, remove, strict=True)]
    assert list(state.layout.counts) == after
    for clip, (tokens, keys, sizes) in enumerate(clips):
        expected, expected_sizes = expected_clip(tokens, keys, sizes, remove[clip])
        check_clip(merged.split(after)[clip], state.sizes.split(after)[clip], expected,
                   expected_sizes)


# --- inside the models' blocks -----------------------------------------------------------------


class Recorder(ToMe):
    """ToMe, keeping every step it is shown."""

    def __init__(self) -> None:
        self.steps = []

    def match(self, step):
        self.steps.append(step)
        return super().match(step)


def clip_slots(counts: list[int], rows: list[int]) -> list[list[tuple[int, int]]]:
    """Where each clip's tokens sit in packed rows: (row, position in the row), the clips of a
    row in clip order."""
    filled = [0] * (max(rows) + 1)
    slots = []
    for count, row in zip(counts, rows, strict=True):
        slots.append([(row, filled[row] + i) for i in range(count)])
        filled[row] += count
    return slots


def record_blocks(model, inputs) -> tuple[list, list, list, list]:
    """Run `model` with a recording ToMe: per block, the step, the sizes before the block, and
    the block's output and the state after it (sizes, and the packed token counts)."""
    before, outputs, after = [], [], []

    def pre(block, args):
        sizes = args[1].sizes
        before.append(None if sizes is None else sizes.clone())

    def post(block, args, out):
        state = args[1]
        outputs.append(out)
        after.append((state.sizes.clone(), None if state.layout is None else state.layout.counts))

    model.reduction = Recorder()
    hooks = [hook for block in model.blocks for hook in (
        block.register_forward_pre_hook(pre), block.register_forward_hook(post))]
    with torch.no_grad():
        model(inputs)
    for hook in hooks:
        hook.remove()
    return model.reduction.steps, before, outputs, after


def check_block(block, output: torch.Tensor, sizes: torch.Tensor, expected: torch.Tensor,
                expected_sizes: torch.Tensor) -> None:
    """A block's output for one clip is the oracle's merge through the block's MLP branch."""
    assert torch.equal(sizes.double(), expected_sizes)
    merged = expected.to(output.dtype)
    torch.testing.assert_close(output, merged + block.mlp(block.norm2(merged)),
                               atol=1e-4, rtol=1e-4)


def test_every_block_of_an_ast_merges_as_the_paper_says():
    torch.manual_seed(0)
    model = build_model("tiny", 4, target_length=64, depth=3).eval().set_r([9, 14, 12])
    steps, before, outputs, after = record_blocks(model, torch.randn(2, 64, 128))
    assert [step.clip_r for step in steps] == [[9], [14], [12]]
    for index, step in enumerate(steps):
        keys = step.key.mean(dim=1)  # [B, N, hd]: the keys averaged over heads
        sizes = before[index]
        if sizes is None:
            sizes = torch.ones(*step.tokens.shape[:2], 1)
        for row in range(2):
            expected, expected_sizes = expected_clip(step.tokens[row], keys[row], sizes[row],
                                                     step.clip_r[0])
            check_block(model.blocks[index], outputs[index][row], after[index][0][row],
                        expected, expected_sizes)


def test_every_block_of_an_elastic_ast_merges_each_packed_clip_as_the_paper_says():
    torch.manual_seed(0)
    model = build_elastic("tiny", 4, target_length=128, depth=3, max_tokens=60).eval()
    model.set_r(0.3)  # a different r per clip
    clips = [torch.randn(frames, 128) for frames in (48, 16, 32, 64, 80)]
    steps, before, outputs, after = record_blocks(model, clips)
    assert len(steps) == 3 and steps[0].layout.num_rows < len(clips)  # clips do share rows
    assert len(set(steps[0].clip_r)) > 1
    for index, step in enumerate(steps):
        counts, rows = list(step.layout.counts), list(step.layout.rows)
        keys = step.key.mean(dim=1)  # [R, L, hd]: the keys averaged over heads, in rows
        sizes = before[index]
        if sizes is None:
            sizes = torch.ones(sum(counts), 1)
        sizes_after, counts_after = after[index]
        assert list(counts_after) == [n - r for n, r in zip(counts, step.clip_r, strict=True)]
        start = 0
        for clip, slots in enumerate(clip_slots(counts, rows)):
            clip_keys = torch.stack([keys[row, position] for row, position in slots])
            flat = slice(start, start + counts[clip])
            expected, expected_sizes = expected_clip(step.tokens[flat], clip_keys, sizes[flat],
                                                     step.clip_r[clip])
            out = slice(sum(counts_after[:clip]), sum(counts_after[: clip + 1]))
            check_block(model.blocks[index], outputs[index][out], sizes_after[out], expected,
                        expected_sizes)
            start += counts[clip]
