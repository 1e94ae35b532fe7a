"""policies re-exports a sorted __all__ of names that resolve."""

from __future__ import annotations

import policies


def test_all_is_sorted_and_unique() -> None:
    assert list(policies.__all__) == sorted(set(policies.__all__))


def test_every_exported_name_resolves() -> None:
    for name in policies.__all__:
        assert getattr(policies, name) is not None, name


def test_the_engine_and_replay_names_are_exported() -> None:
    assert {
        "AnswerSpec",
        "Ballot",
        "CastVote",
        "Decision",
        "GpuShareMeter",
        "answer_probability",
        "decide",
        "decide_confidence",
        "normalise",
        "parse_threshold",
        "plurality",
        "price_call",
        "reaches",
    } <= set(policies.__all__)
