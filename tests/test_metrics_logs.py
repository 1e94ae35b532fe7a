"""Structured JSON logs: one object per line, the request id from the context, no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.logs import (
    REDACTED,
    JsonFormatter,
    TextFormatter,
    bind_request_id,
    configure_logging,
    request_id_var,
)


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("coe.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_the_standard_fields(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture

    logger.info("tier %d decided", 0)

    [entry] = lines(stream)
    assert entry["message"] == "tier 0 decided"
    assert entry["level"] == "info"
    assert entry["logger"] == "coe.test.logs"
    assert entry["time"].endswith("+00:00")
    assert "request_id" not in entry


def test_the_bound_request_id_is_on_every_record(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture

    with bind_request_id("trace-123"):
        logger.info("inside")
    logger.info("outside")

    inside, outside = lines(stream)
    assert inside["request_id"] == "trace-123"
    assert "request_id" not in outside
    assert request_id_var.get() is None


def test_extra_fields_are_written(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture

    logger.info("call done", extra={"endpoint": "small-a", "latency_ms": 41.2, "tier": 0})

    [entry] = lines(stream)
    assert (entry["endpoint"], entry["latency_ms"], entry["tier"]) == ("small-a", 41.2, 0)


@pytest.mark.parametrize("field", ["prompt", "messages", "api_key", "authorization",
                                   "upstream_api_key", "user_prompt"])
def test_fields_that_may_hold_prompts_or_keys_are_redacted(
    capture: tuple[logging.Logger, io.StringIO], field: str
) -> None:
    logger, stream = capture

    logger.info("request", extra={field: "Review: secret text sk-123"})

    [entry] = lines(stream)
    assert entry[field] == REDACTED
    assert "sk-123" not in stream.getvalue()


def test_uvicorns_coloured_copy_of_the_message_is_left_out(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture

    logger.info("started", extra={"color_message": "\x1b[1mstarted\x1b[0m"})

    [entry] = lines(stream)
    assert "color_message" not in entry


def test_unserialisable_extras_are_written_as_text(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture

    logger.info("odd", extra={"where": object})

    [entry] = lines(stream)
    assert entry["where"] == str(object)


def test_exceptions_are_written_with_their_traceback(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")

    [entry] = lines(stream)
    assert entry["level"] == "error"
    assert "RuntimeError: boom" in entry["exc_info"]


def test_text_format_shows_the_request_id() -> None:
    record = logging.makeLogRecord({"name": "coe.app", "levelname": "INFO", "msg": "hello"})

    with bind_request_id("abc"):
        line = TextFormatter().format(record)

    assert line.endswith("INFO coe.app [abc] hello")


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    root.handlers[:] = saved
    root.setLevel(level)


def test_configure_logging_installs_one_json_handler_on_the_root(root_handlers: None) -> None:
    configure_logging("warning")
    handler = configure_logging("debug")

    root = logging.getLogger()
    assert root.handlers == [handler]
    assert isinstance(handler.formatter, JsonFormatter)
    assert root.level == logging.DEBUG


def test_configure_logging_can_write_text(root_handlers: None) -> None:
    handler = configure_logging("info", json=False)

    assert isinstance(handler.formatter, TextFormatter)
