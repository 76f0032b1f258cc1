"""Preference losses (DPO with its sigmoid, IPO and hinge forms; ORPO) from sequence log-probs.

A micro-batch holds B pairs as 2B rows: the B chosen sequences, then the B
rejected ones, so both sides of a pair go through the model in one call. A
side's log-probability is the sum over its reply tokens of the model's
log-probability of each token, computed at those positions only, a chunk of the
vocabulary at a time (`logprobs.sequence_logprobs`, the SFT loss's own path). DPO compares the policy with the
reference (the base model, its log-probs computed once at the start:
`preference_reference.py`); ORPO needs no reference.

Per pair, with policy log-probs pc, pr, reference rc, rr, reply lengths nc, nr:

    DPO   h = beta * ((pc - rc) - (pr - rr))
          sigmoid: -(1 - ls) log sig(h) - ls log sig(-h)      (ls: label smoothing)
          ipo:     ((pc - rc) - (pr - rr) - 1 / (2 beta))^2    (the IPO paper's, on sums)
          hinge:   max(0, 1 - h)
          + sft_weight * (-pc / nc)                            (NLL per chosen token)
          rewards: beta * (pc - rc), beta * (pr - rr)
    ORPO  mc = pc / nc, mr = pr / nr  (mean log-prob per reply token)
          log odds = (mc - mr) - (log(1 - e^mc) - log(1 - e^mr))
          -mc - lambda * log sig(log odds);  rewards: lambda * mc, lambda * mr

The loss of a micro-batch is the sum over its pairs divided by the pairs of
the global batch (per rank), so accumulation and ranks give the global mean.
"""

from __future__ import annotations

import mlx.core as mx
from mlx import nn

from tunewire.trainer.protocol.config import PreferenceSettings
from tunewire.trainer.worker.logprobs import PositionArrays, sequence_logprobs

# The per-pair sums a step returns, in this order (the interval's metrics are their means).
SUMS = ("loss", "chosen_reward", "rejected_reward", "accuracy", "chosen_logps", "rejected_logps")


def sequence_logps(model: nn.Module, tokens: mx.array, positions: PositionArrays) -> mx.array:
    """Each row's summed log-probability of its reply tokens: the one place the preference
    losses (and the reference pass) reach the model."""
    return sequence_logprobs(model, tokens, positions)


def reply_lengths(tokens: mx.array, positions: PositionArrays) -> mx.array:
    """(rows,) float32: each row's trained (reply) tokens."""
    return mx.zeros((tokens.shape[0],), mx.float32).at[positions.row].add(positions.weight)


def pair_terms(
    policy: mx.array, lengths: mx.array, reference: mx.array, settings: PreferenceSettings
) -> tuple[mx.array, mx.array, mx.array]:
    """(loss, chosen reward, rejected reward) per pair, from 2B policy log-probs and reply
    lengths (chosen rows first) and the (B, 2) reference log-probs."""
    pairs = policy.shape[0] // 2
    pc, pr = policy[:pairs], policy[pairs:]
    nc, nr = mx.maximum(lengths[:pairs], 1.0), mx.maximum(lengths[pairs:], 1.0)
    if settings.method == "orpo":
        mc, mr = pc / nc, pr / nr
        # log(1 - e^m) for m < 0; m is kept a hair below 0 so a certain reply stays finite.
        mc_, mr_ = mx.minimum(mc, -1e-7), mx.minimum(mr, -1e-7)
        log_odds = (mc - mr) - (mx.log1p(-mx.exp(mc_)) - mx.log1p(-mx.exp(mr_)))
        lam = settings.orpo_lambda
        loss = -mc - lam * nn.log_sigmoid(log_odds)
        return loss, lam * mc, lam * mr
    beta = settings.beta
    chosen_ratio, rejected_ratio = pc - reference[:, 0], pr - reference[:, 1]
    margin = chosen_ratio - rejected_ratio
    if settings.loss == "ipo":
        loss = (margin - 1.0 / (2.0 * beta)) ** 2
    elif settings.loss == "hinge":
        loss = nn.relu(1.0 - beta * margin)
    else:
        smoothing = settings.label_smoothing
        loss = -(1.0 - smoothing) * nn.log_sigmoid(beta * margin) - smoothing * nn.log_sigmoid(
            -beta * margin
        )
    if settings.sft_weight:
        loss = loss + settings.sft_weight * (-pc / nc)
    return loss, beta * chosen_ratio, beta * rejected_ratio


def preference_loss(
    model: nn.Module,
    tokens: mx.array,
    positions: PositionArrays,
    reference: mx.array,
    normalizer: mx.array,
    settings: PreferenceSettings,
) -> tuple[mx.array, mx.array]:
    """(loss to differentiate, the SUMS over this micro-batch's pairs); `positions`: the
    batch's reply positions (`logprobs.trained_positions` of its mask)."""
    policy = sequence_logps(model, tokens, positions)
    lengths = reply_lengths(tokens, positions)
    loss, chosen, rejected = pair_terms(policy, lengths, reference, settings)
    pairs = policy.shape[0] // 2
    sums = mx.stack(
        [
            loss.sum(),
            chosen.sum(),
            rejected.sum(),
            # Ties count half: at the start policy equals reference, and accuracy reads 0.5.
            ((chosen > rejected).astype(mx.float32) + 0.5 * (chosen == rejected)).sum(),
            policy[:pairs].sum(),
            policy[pairs:].sum(),
        ]
    )
    return loss.sum() / normalizer, mx.stop_gradient(sums)
