"""``coe eval record``: every endpoint answers every example; resumable; bad data lines named."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.commands import eval as eval_command
from gateway.config import Settings, parse_settings
from gateway.errors import CoEError
from gateway.evaluation.record import record_run
from providers.errors import RecordingError
from providers.recording import read_recording


def keyword(text: str) -> str:
    return "negative" if "bad" in text else "positive"


def always_positive(text: str) -> str:
    return "positive"


def rambles(text: str) -> str:
    return "hard to say"


def fails(text: str) -> str:
    raise RuntimeError("boom")


def settings(tmp_path: Path, tiers: Any = None) -> Settings:
    functions = {
        "kw": "keyword",
        "pos": "always_positive",
        "ramble": "rambles",
        "fail": "fails",
    }
    return parse_settings(
        {
            "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            "endpoints": [
                {
                    "name": name,
                    "kind": "python",
                    "function": f"tests.test_eval_record:{function}",
                    "usd_per_mtok_in": 1.0,
                }
                for name, function in functions.items()
            ],
            "routes": {
                "sentiment": {
                    "labels": ["positive", "negative"],
                    "tiers": tiers or [["kw", "ramble", "fail"], ["pos"]],
                }
            },
        }
    )


def data_file(path: Path, texts: list[str], *, extra: list[str] = ()) -> Path:  # type: ignore[assignment]
    lines = [
        json.dumps({"id": f"ex{i}", "prompt": text, "label": keyword(text)})
        for i, text in enumerate(texts)
    ]
    path.write_text("\n".join([*lines, *extra]) + "\n")
    return path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_every_endpoint_answers_every_example(tmp_path: Path) -> None:
    data = data_file(tmp_path / "data.jsonl", ["a good film", "a bad film", "fine"])
    out = tmp_path / "run.jsonl"
    summary = await record_run(settings(tmp_path), "sentiment", data, out, concurrency=2)
    assert (summary.total, summary.already, summary.recorded) == (3, 0, 3)
    recording = read_recording(out)
    assert sorted(e.id for e in recording.examples) == ["ex0", "ex1", "ex2"]
    bad = next(e for e in recording.examples if e.id == "ex1")
    assert bad.label == "negative"
    assert bad.messages == ({"role": "user", "content": "a bad film"},)
    assert {n: c.status for n, c in bad.calls.items()} == {
        "kw": "ok", "ramble": "unparsable", "fail": "error", "pos": "ok",
    }
    assert bad.calls["kw"].answer == "negative"
    assert bad.calls["pos"].tier == 1
    # No usage from a python endpoint: the prompt's tokens are estimated and priced.
    assert bad.calls["kw"].cost_usd == pytest.approx(3 / 1e6)
    assert recording.header.tiers == (("kw", "ramble", "fail"), ("pos",))


@pytest.mark.anyio
async def test_a_rerun_records_only_new_examples(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    config = settings(tmp_path)
    first = data_file(tmp_path / "a.jsonl", ["one", "two bad"])
    await record_run(config, "sentiment", first, out)
    more = data_file(tmp_path / "b.jsonl", ["one", "two bad", "three", "four bad"])
    summary = await record_run(config, "sentiment", more, out)
    assert (summary.already, summary.recorded) == (2, 2)
    assert len(read_recording(out).examples) == 4
    assert out.read_bytes().count(b"coe_recording") == 1


@pytest.mark.anyio
async def test_malformed_lines_are_named_and_the_rest_recorded(tmp_path: Path) -> None:
    data = data_file(
        tmp_path / "data.jsonl",
        ["good", "bad"],
        extra=['{"id": "x", "prompt": "no label"}', "not json", '{"id": "ex0", "prompt": "dup",'
               ' "label": "positive"}'],
    )
    out = tmp_path / "run.jsonl"
    summary = await record_run(settings(tmp_path), "sentiment", data, out)
    assert [(p.line, p.message.split(" (")[0]) for p in summary.problems] == [
        (3, "'label' must be a string"),
        (4, "not valid JSON"),
        (5, "id 'ex0' appears twice"),
    ]
    assert summary.recorded == 2
    assert len(read_recording(out).examples) == 2


@pytest.mark.anyio
async def test_a_cut_short_last_line_is_recorded_again(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    config = settings(tmp_path)
    data = data_file(tmp_path / "data.jsonl", ["one", "two bad"])
    await record_run(config, "sentiment", data, out)
    lines = out.read_bytes().splitlines()
    out.write_bytes(b"\n".join(lines[:-1]) + b"\n" + lines[-1][:30])
    summary = await record_run(config, "sentiment", data, out)
    assert summary.recorded == 1
    recording = read_recording(out)
    assert not recording.truncated_tail and len(recording.examples) == 2


@pytest.mark.anyio
async def test_another_route_cannot_be_appended(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    data = data_file(tmp_path / "data.jsonl", ["one"])
    await record_run(settings(tmp_path), "sentiment", data, out)
    other = settings(tmp_path, tiers=[["kw"], ["pos"]])
    with pytest.raises(RecordingError, match="another route"):
        await record_run(other, "sentiment", data, out)


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "coe.toml"
    config.write_text(
        f"""
[ledger]
url = "sqlite:///{tmp_path / 'ledger.db'}"

[[endpoints]]
name = "kw"
kind = "python"
function = "tests.test_eval_record:keyword"

[[endpoints]]
name = "pos"
kind = "python"
function = "tests.test_eval_record:always_positive"

[routes.sentiment]
labels = ["positive", "negative"]
tiers = [["kw", "pos"], ["pos2"]]
""".replace('[["kw", "pos"], ["pos2"]]', '[["kw"], ["pos"]]')
    )
    return config


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    eval_command.register(parser.add_subparsers())
    args = parser.parse_args(["eval", *argv])
    return int(args.func(args))


def test_cli_record_exits_1_on_bad_lines_then_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = data_file(tmp_path / "data.jsonl", ["good", "bad"], extra=["{oops"])
    out = tmp_path / "run.jsonl"
    code = cli("record", "--config", str(write_config(tmp_path)), "--route", "sentiment",
               "--data", str(data), "--out", str(out), "--no-logprobs")
    assert code == 1
    assert "data.jsonl:3: not valid JSON" in capsys.readouterr().err
    assert cli("replay", str(out), "--format", "json") == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert {r["config"]: r["accuracy"] for r in rows if r["kind"] == "single"} == {
        "kw": 1.0, "pos": 0.5,
    }


def test_cli_replay_rejects_a_bad_threshold(tmp_path: Path) -> None:
    with pytest.raises(CoEError, match="--threshold"):
        cli("replay", str(tmp_path / "run.jsonl"), "--threshold", "3/2")
