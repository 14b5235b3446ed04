"""PiToMe: protect informative tokens with an energy score, merge the redundant ones.

Tran et al., "Accelerating Transformers with Spectrum-Preserving Token Merging", NeurIPS 2024
(arXiv 2405.16148), §3 and Algorithm 1. Per block and clip, on the attention keys averaged over
heads of the T mergeable tokens (CLS and DIST excluded):

1. energy (Eq. 4, in the form the authors' code computes it): with cosine similarities
   S_ij = k̂_i·k̂_j over all T tokens (S_ii = 1 included),
   E_i = (1/T) Σ_j ELU_α(S_ij − m_l), margin m_l = m_0 − slope·l/L at block l of L;
   a token in a large cluster of similar tokens has high energy (redundant), an isolated one
   low energy (informative);
2. the 2r highest-energy tokens are candidates; the other T − 2r are protected and stay as they
   are;
3. the candidates, in descending energy, alternate into A (even ranks) and B (odd ranks); every
   A token joins its most similar B token, so exactly r tokens go, merged by ToMe's
   size-weighted average (sizes add, proportional attention works as in ToMe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastast_cli.models.reduction.matching import ReductionStep, Regrouping, regroup


def energy(similarity: torch.Tensor, valid: torch.Tensor | None, margin: float,
           alpha: float) -> torch.Tensor:
    """PiToMe's energy score (Eq. 4): similarity [K, T, T] of each clip's tokens, valid [K, T]
    (None: every entry is real) → [K, T], the mean of ELU_α(S_ij − margin) over the clip's real
    tokens j."""
    terms = F.elu(similarity - margin, alpha=alpha, inplace=True)  # one [K, T, T] temporary
    if valid is None:
        return terms.sum(dim=-1) / similarity.shape[-1]
    terms = terms.masked_fill(~valid[:, None, :], 0.0)
    return terms.sum(dim=-1) / valid.sum(dim=-1, keepdim=True).clamp_min(1)


def best_partners(similarity: torch.Tensor, set_a: torch.Tensor, set_b: torch.Tensor,
                  order: torch.Tensor, most: int) -> torch.Tensor:
    """Every entry's partner [K, T]: an A entry's most similar B entry (ties: the earlier one),
    every other entry itself.

    similarity [K, T, T]; set_a, set_b [K, T]; order [K, T] the entries by descending energy
    (A and B alternate from its front); most: the largest number of A entries of a clip (the
    largest r). Only the A rows of `similarity` are read.
    """
    clips, width = set_a.shape
    candidate = order[:, : 2 * most : 2]  # [K, R] every clip's A entries (and a few more)
    flat = candidate + torch.arange(clips, device=order.device)[:, None] * width
    rows = similarity.reshape(clips * width, width).index_select(0, flat.flatten())
    rows = rows.view(clips, -1, width).masked_fill_(~set_b[:, None, :], float("-inf"))
    chosen = torch.where(set_a.gather(1, candidate), rows.argmax(dim=-1), candidate)  # [K, R]
    return _positions(set_a).scatter(1, candidate, chosen)


class PiToMe:
    """PiToMe's energy-protected bipartite merging (paper defaults: margin 0.9 − 0.9·l/L, α = 1).

    margin_start, margin_slope: m_l = margin_start − margin_slope·l/L. alpha: ELU's α.
    """

    name = "pitome"

    def __init__(self, margin_start: float = 0.9, margin_slope: float = 0.9,
                 alpha: float = 1.0) -> None:
        self.margin_start, self.margin_slope, self.alpha = margin_start, margin_slope, alpha

    @property
    def options(self) -> dict[str, float]:
        """What `make_method` needs to rebuild this method (checkpoints, recipes)."""
        return {"margin_start": self.margin_start, "margin_slope": self.margin_slope,
                "alpha": self.alpha}

    def margin(self, block: int, depth: int) -> float:
        """The energy margin m_l of block `block` of `depth`."""
        return self.margin_start - self.margin_slope * block / max(depth, 1)

    def match(self, step: ReductionStep) -> Regrouping:
        view = step.clip_view()
        keys = view.gather(step.summed_keys())  # [K, T, hd]
        keys = keys / keys.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        similarity = keys @ keys.transpose(-1, -2)  # [K, T, T]
        score = energy(similarity, view.padding_mask, self.margin(step.block, step.depth),
                       self.alpha)
        rank = view.rank(score)  # 0 = highest energy
        candidate = rank < 2 * view.remove[:, None]
        set_a = candidate & (rank % 2 == 0)
        set_b = candidate & (rank % 2 == 1)
        order = torch.empty_like(rank).scatter_(1, rank, _positions(rank))  # by energy
        partner = best_partners(similarity, set_a, set_b, order, max(view.clip_r))
        return regroup(view, ~set_a, partner)


def _positions(like: torch.Tensor) -> torch.Tensor:
    """[K, T] 0, 1, ..., T - 1 in every row, shaped as `like`."""
    return torch.arange(like.shape[1], device=like.device).expand_as(like)
