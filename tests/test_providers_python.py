"""Python functions as ensemble members, and the two real classifiers that ship."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from providers import CallRecord, CallRequest, PythonProvider
from providers.classifiers import textblob_sentiment, vader_sentiment
from providers.endpoint import EndpointConfig
from providers.errors import EndpointConfigError

pytestmark = pytest.mark.anyio

HERE = __name__
RELEASE = threading.Event()
ENTERED = threading.Event()
ENTRIES: list[str] = []


def shout(text: str) -> str:
    return text.upper()


def broken(text: str) -> str:
    raise ValueError(f"cannot read {text!r}")


def not_a_string(text: str) -> int:
    return len(text)


def blocked(text: str) -> str:
    ENTRIES.append(text)
    ENTERED.set()
    RELEASE.wait()
    return "late"


class Namespace:
    @staticmethod
    def method(text: str) -> str:
        return f"<{text}>"


@pytest.fixture
def release_blocked() -> Iterator[None]:
    RELEASE.clear()
    ENTERED.clear()
    ENTRIES.clear()
    yield
    RELEASE.set()


def endpoint(function: str, **fields: Any) -> EndpointConfig:
    return EndpointConfig(name="py", kind="python", function=function, **fields)


def ask(*messages: dict[str, Any]) -> CallRequest:
    return CallRequest(messages=messages)


async def test_calls_the_function_with_the_last_user_text() -> None:
    provider = PythonProvider(endpoint(f"{HERE}:shout"))
    record = await provider.complete(
        ask(
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"},
        )
    )
    assert (record.endpoint, record.status, record.text) == ("py", "ok", "SECOND")
    assert (record.tokens_in, record.tokens_out) == (None, None)


async def test_text_parts_are_joined() -> None:
    provider = PythonProvider(endpoint(f"{HERE}:shout"))
    parts = [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]
    record = await provider.complete(ask({"role": "user", "content": parts}))
    assert record.text == "A\nB"


async def test_dotted_attribute() -> None:
    provider = PythonProvider(endpoint(f"{HERE}:Namespace.method"))
    record = await provider.complete(ask({"role": "user", "content": "x"}))
    assert record.text == "<x>"


async def test_function_raising_is_an_error() -> None:
    record = await PythonProvider(endpoint(f"{HERE}:broken")).complete(
        ask({"role": "user", "content": "x"})
    )
    assert record.status == "error"
    assert record.error == "ValueError: cannot read 'x'"


async def test_function_returning_a_non_string_is_an_error() -> None:
    record = await PythonProvider(endpoint(f"{HERE}:not_a_string")).complete(
        ask({"role": "user", "content": "x"})
    )
    assert (record.status, record.error) == ("error", "function returned int, not str")


async def test_no_user_message_is_an_error() -> None:
    record = await PythonProvider(endpoint(f"{HERE}:shout")).complete(
        ask({"role": "system", "content": "x"})
    )
    assert record.status == "error"


async def test_slow_function_times_out(release_blocked: None) -> None:
    provider = PythonProvider(endpoint(f"{HERE}:blocked", timeout_s=0.05))
    record = await provider.complete(ask({"role": "user", "content": "x"}))
    assert record.status == "timeout"


async def test_concurrency_limit_holds_calls_back(release_blocked: None) -> None:
    provider = PythonProvider(endpoint(f"{HERE}:blocked", max_concurrency=1))
    records: list[CallRecord] = []

    async def run(text: str) -> None:
        records.append(await provider.complete(ask({"role": "user", "content": text})))

    async with anyio.create_task_group() as group:
        group.start_soon(run, "first")
        await anyio.to_thread.run_sync(ENTERED.wait)
        group.start_soon(run, "second")
        await anyio.wait_all_tasks_blocked()
        assert ENTRIES == ["first"]
        RELEASE.set()
    assert ENTRIES == ["first", "second"]
    assert [r.text for r in records] == ["late", "late"]


@pytest.mark.parametrize(
    "function", ["no_such_module_xyz:f", f"{HERE}:missing", f"{HERE}:HERE"]
)
def test_unimportable_or_uncallable_function_is_a_config_error(function: str) -> None:
    with pytest.raises(EndpointConfigError, match="'py'"):
        PythonProvider(endpoint(function))


POSITIVE = ["I loved this film, it was wonderful.", "Great acting and a beautiful score."]
NEGATIVE = ["A terrible, boring waste of time.", "The plot was awful and the acting bad."]


@pytest.mark.parametrize("classify", [vader_sentiment, textblob_sentiment])
def test_classifiers_on_easy_sentences(classify: Any) -> None:
    assert [classify(t) for t in POSITIVE] == ["positive", "positive"]
    assert [classify(t) for t in NEGATIVE] == ["negative", "negative"]


@pytest.mark.parametrize("name", ["vader_sentiment", "textblob_sentiment"])
async def test_classifiers_serve_as_python_endpoints(name: str) -> None:
    provider = PythonProvider(endpoint(f"providers.classifiers:{name}"))
    record = await provider.complete(ask({"role": "user", "content": NEGATIVE[0]}))
    assert (record.status, record.text) == ("ok", "negative")
