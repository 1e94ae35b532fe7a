"""Pure decision logic shared by the live engine and ``coe eval replay``: reading answers, the
agreement vote, the confidence baseline, how a tier and a cascade are decided, pricing, GPU-time
shares, and the quality audit's arithmetic (intervals, θ from a target agreement). No I/O, no
clocks."""

from policies.answers import AnswerSpec, Task, normalise
from policies.audit import (
    PatternEvidence,
    PatternReport,
    VotePattern,
    audit_report,
    clopper_pearson,
    collect_evidence,
    lower_bound,
    pattern_report,
    wilson,
)
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
from policies.target import (
    AuditRow,
    StratumBound,
    ThresholdChoice,
    ThresholdOption,
    choose_threshold,
    theta_text,
    votes_needed,
)
from policies.threshold import parse_threshold, reaches
from policies.vote import Ballot, CastVote, Decision, decide, plurality, token_f1

__all__ = [
    "AnswerSpec",
    "Arrival",
    "AuditRow",
    "Ballot",
    "Cascade",
    "CastVote",
    "Cost",
    "Decision",
    "ExitKind",
    "ExitStatus",
    "GpuShareMeter",
    "PatternEvidence",
    "PatternReport",
    "Policy",
    "Price",
    "ShareTicket",
    "StratumBound",
    "Tally",
    "Task",
    "ThresholdChoice",
    "ThresholdOption",
    "TierResult",
    "TokenLogprob",
    "Verdict",
    "VotePattern",
    "answer_probability",
    "audit_report",
    "blended_hourly_usd",
    "choose_threshold",
    "clopper_pearson",
    "collect_evidence",
    "conclude",
    "decide",
    "decide_confidence",
    "estimate_tokens",
    "lower_bound",
    "mean_logprob",
    "normalise",
    "parse_threshold",
    "pattern_report",
    "plurality",
    "price_call",
    "reaches",
    "theta_text",
    "token_f1",
    "votes_needed",
    "wilson",
]
