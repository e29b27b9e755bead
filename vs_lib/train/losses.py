"""The contrastive loss: similarities → softmax with a temperature → cross-entropy.

Each training example is a query, one positive and n − 1 negatives; the label is the index
of the positive among the n candidates:

    s_j = cos(query, candidate_j) / temperature,   j = 1..n
    p = softmax(s);   loss = −log p[label]          (cross-entropy against the positive)

In a batch of n (query, positive) pairs the candidates of query i are the n positives of
the batch: its own positive is candidate i, the other n − 1 are its negatives ("in-batch
negatives").  :func:`symmetric_loss` also asks each positive to find its query;
:func:`both_views_loss` (SimCLR's NT-Xent) lets the other queries be negatives too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(queries: torch.Tensor, candidates: torch.Tensor, temperature: float) -> None:
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"expected (n, d) queries and (m, d) candidates, got {tuple(queries.shape)} and {tuple(candidates.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _masked(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``logits`` with the masked candidates at −inf (probability 0); the positive is never masked."""
    if mask is None:
        return logits
    keep_positive = F.one_hot(labels, logits.shape[1]).bool()
    return logits.masked_fill(mask & ~keep_positive, float("-inf"))


def contrastive_loss(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float = 0.1,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of the softmax over query–candidate similarities.

    ``queries`` (n, d) and ``candidates`` (m, d), both L2-normalised; ``labels`` (n,) the
    index of each query's positive among the candidates (default ``arange(n)``: the
    positive of query i is candidate i); ``mask`` (n, m) bool, True where a candidate must
    be left out of query i's softmax (e.g. another image of the same class).  The steps:
    similarities ``queries @ candidates.T``, divided by the temperature, then
    ``F.cross_entropy`` (log-softmax, −log p[label]); the tests check it against a plain loop.
    """
    _check(queries, candidates, temperature)
    if labels is None:
        labels = torch.arange(queries.shape[0], device=queries.device)
    logits = queries @ candidates.T / temperature  # (n, m) cosine similarities, sharpened
    return F.cross_entropy(_masked(logits, labels, mask), labels)


def symmetric_loss(
    a: torch.Tensor, b: torch.Tensor, temperature: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Average of the loss with ``a`` as queries (candidates ``b``) and the reverse.

    ``a``, ``b``: (n, d) L2-normalised, row i of ``a`` and row i of ``b`` a positive pair;
    ``mask``: (n, n), True where ``b``'s row j must not be a candidate for ``a``'s row i, or
    (2n, 2n) over ``cat([a, b])`` (its two off-diagonal blocks are used).  One similarity
    matrix serves both directions (its transpose is the reverse).
    """
    _check(a, b, temperature)
    n = a.shape[0]
    if mask is None:
        a_to_b = b_to_a = None
    elif mask.shape[0] == 2 * n:
        a_to_b, b_to_a = mask[:n, n:], mask[n:, :n]
    else:
        a_to_b, b_to_a = mask, mask.T
    logits = a @ b.T / temperature  # (n, n): row i = a_i against every b_j; the diagonal holds the pairs
    target = torch.arange(n, device=a.device)
    forward = F.cross_entropy(_masked(logits, target, a_to_b), target)
    backward = F.cross_entropy(_masked(logits.T, target, b_to_a), target)
    return (forward + backward) / 2


def both_views_loss(
    a: torch.Tensor, b: torch.Tensor, temperature: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """SimCLR's NT-Xent: each of the 2n images is a query whose candidates are the other
    2n − 1 (its positive + 2n − 2 negatives); the image itself is masked out.

    ``mask``: (n, n), applied to all four query/candidate blocks, or (2n, 2n) over
    ``cat([a, b])`` (e.g. True wherever two rows show the same training image)."""
    n = a.shape[0]
    z = torch.cat([a, b])
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    self_mask = torch.eye(2 * n, dtype=torch.bool)
    if mask is not None:
        self_mask = self_mask | (mask if mask.shape[0] == 2 * n else mask.repeat(2, 2))
    # the positive must stay: contrastive_loss never masks the label column
    return contrastive_loss(z, z, temperature, labels=labels, mask=self_mask)


def pair_loss(
    queries: torch.Tensor,
    positives: torch.Tensor,
    temperature: float,
    negatives: str = "batch",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The training loss of a batch of (query, positive) pairs, both (n, d) L2-normalised.

    ``negatives="batch"``: :func:`symmetric_loss` (n − 1 negatives per query);
    ``"both_views"``: :func:`both_views_loss` (2n − 2).
    """
    if negatives == "both_views":
        return both_views_loss(queries, positives, temperature, mask)
    if negatives == "batch":
        return symmetric_loss(queries, positives, temperature, mask)
    raise ValueError(f"negatives must be 'batch' or 'both_views', got {negatives!r}")
