"""Pure decision logic shared by the live engine and ``coe eval replay``: reading answers, the
agreement vote, the confidence baseline, how a tier and a cascade are decided, pricing and GPU-time
shares. No I/O, no clocks."""

from policies.answers import AnswerSpec, Task, normalise
from policies.cascade import (
    Arrival,
    Cascade,
    ExitKind,
    ExitStatus,
    Policy,
    Tally,
    TierResult,
    Verdict,
    conclude,
)
from policies.confidence import answer_probability, decide_confidence
from policies.gpu_share import GpuShareMeter, ShareTicket
from policies.logprobs import TokenLogprob, mean_logprob
from policies.pricing import Cost, Price, blended_hourly_usd, estimate_tokens, price_call
from policies.threshold import parse_threshold, reaches
from policies.vote import Ballot, CastVote, Decision, decide, plurality, token_f1

__all__ = [
    "AnswerSpec",
    "Arrival",
    "Ballot",
    "Cascade",
    "CastVote",
    "Cost",
    "Decision",
    "ExitKind",
    "ExitStatus",
    "GpuShareMeter",
    "Policy",
    "Price",
    "ShareTicket",
    "Tally",
    "Task",
    "TierResult",
    "TokenLogprob",
    "Verdict",
    "answer_probability",
    "blended_hourly_usd",
    "conclude",
    "decide",
    "decide_confidence",
    "estimate_tokens",
    "mean_logprob",
    "normalise",
    "parse_threshold",
    "plurality",
    "price_call",
    "reaches",
    "token_f1",
]
