"""A linear-chain CRF over BIO tags, in torch only (shipped with checkpoints as remote code).

* Transitions (tag -> tag), start and end scores are learned parameters.
* BIO constraints are hard: `I-X` may only follow `B-X` or `I-X`, and a sequence may not start with `I-X`. Forbidden
  moves get a score of -10000 in the partition function, the gold path and Viterbi alike, so the decoded path is
  always valid BIO and the model puts no probability on invalid paths.
* The chain runs over the *selected* positions of each sequence only (a boolean mask, `[batch, seq]`): in training,
  the positions whose label is not -100 (special tokens and later sub-tokens are skipped, so consecutive words are
  neighbours in the chain); at inference, the positions the caller marks (each word's first sub-token), or every
  attended position. Selected positions are packed to the left before the recursions and the results put back.

The loss is the negative log-likelihood of the gold paths summed over sequences and divided by the number of
labelled positions, so its scale (and a good learning rate) is close to token-level cross-entropy.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.utils import logging

logger = logging.get_logger(__name__)

FORBIDDEN = -10000.0


def bio_constraints(labels: list[str]) -> tuple[list[list[bool]], list[bool], list[int]]:
    """For tag names in order: allowed[i][j] (may tag j follow tag i), allowed_start[j], and for each tag the id to
    repair it to when it breaks the rules (`I-X` -> `B-X` where the label set has one, else itself)."""
    def parts(label: str) -> tuple[str, str]:
        if len(label) > 2 and label[1] == "-" and label[0] in "BI":
            return label[0], label[2:]
        return "", label

    split = [parts(str(label)) for label in labels]
    index = {str(label): i for i, label in enumerate(labels)}
    allowed = [[True] * len(labels) for _ in labels]
    allowed_start = [True] * len(labels)
    repair = list(range(len(labels)))
    for j, (prefix_j, type_j) in enumerate(split):
        if prefix_j != "I":
            continue
        allowed_start[j] = False
        repair[j] = index.get("B-" + type_j, j)
        for i, (prefix_i, type_i) in enumerate(split):
            allowed[i][j] = prefix_i in ("B", "I") and type_i == type_j
    return allowed, allowed_start, repair


def continuation_tags(labels: list[str]) -> list[int]:
    """For each tag, the tag a later sub-token of the same word carries: `B-X` -> `I-X` (where it exists), else
    itself."""
    index = {str(label): i for i, label in enumerate(labels)}
    return [index.get("I-" + str(label)[2:], i) if str(label).startswith("B-") else i for i, label in enumerate(labels)]


def pack_left(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move the selected positions of each row to the front, keeping their order.

    Returns (packed values, packed mask, order) where `packed[b, t] = values[b, order[b, t]]`."""
    seq_len = mask.shape[1]
    # a stable sort on "not selected" keeps the selected positions first, in their original order
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    index = order.view(*order.shape, *([1] * (values.dim() - 2))).expand_as(values)
    packed = values.gather(1, index)
    lengths = mask.sum(dim=1, keepdim=True)
    packed_mask = torch.arange(seq_len, device=mask.device).unsqueeze(0) < lengths
    return packed, packed_mask, order


class LinearChainCRF(nn.Module):
    """Linear-chain CRF with hard BIO constraints, built from the label names (`config.id2label` in id order)."""

    def __init__(self, labels: list[str]):
        super().__init__()
        self.num_tags = len(labels)
        allowed, allowed_start, repair = bio_constraints(labels)
        self._continuation = continuation_tags(labels)
        self._outside = [str(label) for label in labels].index("O") if "O" in map(str, labels) else 0
        # plain Python state (not buffers): rebuilt from the config's labels, so checkpoints hold only the parameters
        self._allowed = allowed
        self._allowed_start = allowed_start
        self._repair = repair
        self.start_transitions = nn.Parameter(torch.zeros(self.num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(self.num_tags))
        self.transitions = nn.Parameter(torch.zeros(self.num_tags, self.num_tags))

    def reset_parameters(self):
        nn.init.zeros_(self.start_transitions)
        nn.init.zeros_(self.end_transitions)
        nn.init.zeros_(self.transitions)

    # -- constrained scores ---------------------------------------------------------------------------------------
    def constrained(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(start [T], transitions [T, T], end [T]) in float32 with forbidden moves at -10000."""
        allowed = torch.tensor(self._allowed, dtype=torch.bool, device=device)
        allowed_start = torch.tensor(self._allowed_start, dtype=torch.bool, device=device)
        forbidden = torch.tensor(FORBIDDEN, device=device)
        start = torch.where(allowed_start, self.start_transitions.float(), forbidden)
        transitions = torch.where(allowed, self.transitions.float(), forbidden)
        return start, transitions, self.end_transitions.float()

    def is_valid(self, tags: list[int]) -> bool:
        """Whether a tag-id sequence obeys the BIO constraints."""
        if tags and not self._allowed_start[tags[0]]:
            return False
        return all(self._allowed[a][b] for a, b in zip(tags, tags[1:]))

    # -- recursions over packed sequences ---------------------------------------------------------------------------
    def _log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        start, transitions, end = self.constrained(emissions.device)
        alpha = start + emissions[:, 0]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha.unsqueeze(2) + transitions.unsqueeze(0), dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def _gold_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        start, transitions, end = self.constrained(emissions.device)
        batch = torch.arange(emissions.shape[0], device=emissions.device)
        score = start[tags[:, 0]] + emissions[batch, 0, tags[:, 0]]
        for t in range(1, emissions.shape[1]):
            step = transitions[tags[:, t - 1], tags[:, t]] + emissions[batch, t, tags[:, t]]
            score = score + torch.where(mask[:, t], step, torch.zeros_like(step))
        last = tags.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)
        return score + end[last]

    def repair_tags(self, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Turn gold `I-X` that break BIO (after `O` / another type, or first) into `B-X` (IOB1 -> IOB2), so the gold
        path is one the CRF can score. Works on packed tags."""
        if all(r == i for i, r in enumerate(self._repair)):
            return tags
        repair = torch.tensor(self._repair, device=tags.device)
        allowed = torch.tensor(self._allowed, dtype=torch.bool, device=tags.device)
        allowed_start = torch.tensor(self._allowed_start, dtype=torch.bool, device=tags.device)
        tags = tags.clone()
        bad = ~allowed_start[tags[:, 0]] & mask[:, 0]
        tags[:, 0] = torch.where(bad, repair[tags[:, 0]], tags[:, 0])
        count = int(bad.sum())
        for t in range(1, tags.shape[1]):  # left to right: a repaired tag is the next one's predecessor
            bad = ~allowed[tags[:, t - 1], tags[:, t]] & mask[:, t]
            tags[:, t] = torch.where(bad, repair[tags[:, t]], tags[:, t])
            count += int(bad.sum())
        if count:
            logger.warning_once(
                "CRF: gold tags break the BIO scheme (I-X after O or another type, or at the start); they are read "
                "as B-X for the loss (IOB1 -> IOB2). Convert the data to IOB2 to silence this."
            )
        return tags

    # -- public API -------------------------------------------------------------------------------------------------
    def neg_log_likelihood(self, emissions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean NLL per labelled position of the gold paths. `emissions` `[batch, seq, tags]`, `labels` `[batch, seq]`
        with -100 on positions outside the chain."""
        mask = labels != -100
        total = mask.sum()
        if int(total) == 0:
            return emissions.sum() * 0.0
        packed, packed_mask, _ = pack_left(emissions.float(), mask)
        tags, _, _ = pack_left(labels.masked_fill(~mask, 0), mask)
        keep = packed_mask[:, 0]  # sequences without any labelled position contribute nothing
        packed, packed_mask, tags = packed[keep], packed_mask[keep], tags[keep]
        width = int(packed_mask.sum(1).max())
        packed, packed_mask, tags = packed[:, :width], packed_mask[:, :width], tags[:, :width]
        tags = self.repair_tags(tags, packed_mask)
        nll = self._log_partition(packed, packed_mask) - self._gold_score(packed, tags, packed_mask)
        return nll.sum() / total

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Viterbi: the best valid tag path over the masked positions, `[batch, seq]` ids with -100 elsewhere."""
        mask = torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device) if mask is None \
            else mask.bool()
        result = torch.full(emissions.shape[:2], -100, dtype=torch.long, device=emissions.device)
        if not bool(mask.any()):
            return result
        packed, packed_mask, order = pack_left(emissions.float(), mask)
        start, transitions, end = self.constrained(emissions.device)
        score = start + packed[:, 0]
        history = []
        for t in range(1, packed.shape[1]):
            candidates = score.unsqueeze(2) + transitions.unsqueeze(0)  # [batch, previous, next]
            best, best_previous = candidates.max(dim=1)
            history.append(best_previous)
            score = torch.where(packed_mask[:, t].unsqueeze(1), best + packed[:, t], score)
        best_last = (score + end).argmax(dim=1)
        lengths = packed_mask.sum(1)
        path = torch.zeros(packed.shape[:2], dtype=torch.long, device=emissions.device)
        current = best_last
        for t in range(packed.shape[1] - 1, -1, -1):
            # at a row's last position (and past it) the tag is its best last tag; earlier, follow the back-pointers
            current = torch.where(t >= lengths - 1, best_last, current)
            path[:, t] = current
            if t > 0:
                back = history[t - 1].gather(1, current.unsqueeze(1)).squeeze(1)
                current = torch.where(t <= lengths - 1, back, current)
        path = path.masked_fill(~packed_mask, -100)
        return result.scatter(1, order, path)

    def path_scores(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-position tag scores, `[batch, seq, tags]`, whose argmax is the Viterbi path: the log marginals over the
        masked positions (the Viterbi tag raised to the top where the marginal prefers another, which is rare), and
        elsewhere a one-hot of the previous decoded tag's continuation (`B-X` -> `I-X`; `O` before the first), so a
        word's later sub-tokens follow its first. What the model returns as `logits`, and what an ONNX export
        computes from the graph's emissions."""
        mask = mask.to(emissions.device).bool()
        path = self.decode(emissions, mask)
        log_marginals = self.marginals(emissions, mask)
        top = log_marginals.max(-1).values
        at_path = log_marginals.gather(-1, path.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        raised = torch.where(log_marginals.argmax(-1) != path, top + 1e-4, at_path)
        scores = log_marginals.scatter(-1, path.clamp(min=0).unsqueeze(-1), raised.unsqueeze(-1))
        positions = torch.arange(emissions.shape[1], device=emissions.device).expand_as(mask)
        last = torch.where(mask, positions, torch.full_like(positions, -1)).cummax(dim=1).values
        inherited = torch.where(last >= 0, path.gather(1, last.clamp(min=0)), torch.full_like(last, self._outside))
        inherited = torch.tensor(self._continuation, device=emissions.device)[inherited.clamp(min=0)]
        one_hot = torch.full_like(scores, FORBIDDEN).scatter(-1, inherited.unsqueeze(-1), 0.0)
        return torch.where(mask.unsqueeze(-1), scores, one_hot).to(emissions.dtype)

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Log marginal probability of each tag at each masked position (forward-backward), `[batch, seq, tags]`;
        0 elsewhere."""
        packed, packed_mask, order = pack_left(emissions.float(), mask.bool())
        start, transitions, end = self.constrained(emissions.device)
        steps = packed.shape[1]
        alphas = [start + packed[:, 0]]
        for t in range(1, steps):
            step = torch.logsumexp(alphas[-1].unsqueeze(2) + transitions.unsqueeze(0), dim=1) + packed[:, t]
            alphas.append(torch.where(packed_mask[:, t].unsqueeze(1), step, alphas[-1]))
        lengths = packed_mask.sum(1)
        betas = [None] * steps
        beta = end.unsqueeze(0).expand_as(alphas[0])
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                inner = torch.logsumexp(transitions.unsqueeze(0) + (packed[:, t + 1] + betas[t + 1]).unsqueeze(1),
                                        dim=2)
                beta = torch.where((t < lengths - 1).unsqueeze(1), inner, end.unsqueeze(0).expand_as(inner))
            betas[t] = beta
        log_z = torch.logsumexp(alphas[-1] + end, dim=1, keepdim=True)
        log_marginals = torch.stack([a + b for a, b in zip(alphas, betas)], dim=1) - log_z.unsqueeze(1)
        log_marginals = log_marginals.masked_fill(~packed_mask.unsqueeze(2), 0.0)
        index = order.unsqueeze(2).expand_as(log_marginals)
        return torch.zeros_like(log_marginals).scatter(1, index, log_marginals)


__all__ = ["LinearChainCRF", "bio_constraints", "continuation_tags", "pack_left", "FORBIDDEN"]
