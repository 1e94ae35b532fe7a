"""coe_client's request building, without a server."""

from __future__ import annotations

from fractions import Fraction

import openai
import pytest

import coe_client
from coe_client import (
    DEFAULT_BASE_URL,
    CoE,
    CoEClient,
    format_threshold,
    override_headers,
)


def test_the_public_api_is_sorted_and_importable() -> None:
    assert coe_client.__all__ == sorted(coe_client.__all__)
    assert all(hasattr(coe_client, name) for name in coe_client.__all__)


@pytest.mark.parametrize(
    ("given", "sent"),
    [(0.66, "0.66"), (1, "1"), (1.0, "1.0"), (2 / 3, repr(2 / 3)), (Fraction(2, 3), "2/3"),
     (" 2/3 ", "2/3"), ("0.5", "0.5")],
)
def test_thresholds_are_formatted_for_the_header(given: float | Fraction | str, sent: str) -> None:
    assert format_threshold(given) == sent


def test_a_bool_threshold_is_refused() -> None:
    with pytest.raises(TypeError):
        format_threshold(True)


def test_override_headers_carry_every_keyword() -> None:
    headers = override_headers(threshold="2/3", policy="confidence", max_tier=1,
                               tags=["team-a", " nightly "])

    assert headers == {"x-coe-threshold": "2/3", "x-coe-policy": "confidence",
                       "x-coe-max-tier": "1", "x-coe-tags": "team-a,nightly"}


def test_no_keywords_no_headers() -> None:
    assert override_headers() == {}


@pytest.mark.parametrize("tags", [["a,b"], ["ok", " "]])
def test_tags_that_the_header_cannot_carry_are_refused(tags: list[str]) -> None:
    with pytest.raises(ValueError, match="tags"):
        override_headers(tags=tags)


def test_a_negative_max_tier_is_refused() -> None:
    with pytest.raises(ValueError, match="max_tier"):
        override_headers(max_tier=-1)


def test_base_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COE_BASE_URL", "http://gateway.internal:8000/v1")
    monkeypatch.setenv("COE_API_KEY", "coe-key")

    coe = CoE()

    assert str(coe.base_url) == "http://gateway.internal:8000/v1/"
    assert coe.api_key == "coe-key"
    coe.close()


def test_an_openai_key_is_never_sent_to_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COE_BASE_URL", raising=False)
    monkeypatch.delenv("COE_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")

    coe = CoEClient()

    assert str(coe.base_url) == DEFAULT_BASE_URL + "/"
    assert coe.api_key != "sk-openai"
    assert "sk-openai" not in str(coe.auth_headers)
    assert getattr(coe, "admin_api_key", None) in (None, "")
    copied = coe.with_options(timeout=5)
    assert (copied.api_key, getattr(copied, "admin_api_key", None)) == (coe.api_key, "")


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COE_BASE_URL", "http://elsewhere:1/v1")

    coe = CoEClient("http://127.0.0.1:9999/v1", "given")

    assert str(coe.base_url) == "http://127.0.0.1:9999/v1/"
    assert coe.api_key == "given"


# --- the SDK's own client ---------------------------------------------------------------------


@pytest.mark.parametrize(("client_class", "sdk_class"),
                         [(CoEClient, openai.AsyncOpenAI), (CoE, openai.OpenAI)])
def test_the_clients_are_the_sdks_own(
    client_class: type[CoEClient] | type[CoE], sdk_class: type[object]
) -> None:
    coe = client_class("http://127.0.0.1:9/v1", "key", route="sentiment", timeout=3.0)

    assert isinstance(coe, sdk_class)
    assert coe.openai is coe  # kept for code written against the wrapper
    assert (coe.route, coe.timeout) == ("sentiment", 3.0)


@pytest.mark.parametrize("client_class", [CoEClient, CoE])
def test_copy_and_with_options_keep_the_gateway_and_the_route(
    client_class: type[CoEClient] | type[CoE],
) -> None:
    coe = client_class("http://127.0.0.1:9/v1", "key", route="sentiment", max_retries=0)

    faster = coe.with_options(timeout=2.0)
    other = coe.copy(route="mcq", max_retries=3, default_headers={"x-coe-tags": "copied"})

    assert type(faster) is client_class and type(other) is client_class
    assert (str(faster.base_url), faster.api_key, faster.route) == (
        "http://127.0.0.1:9/v1/", "key", "sentiment")
    assert (faster.timeout, faster.max_retries) == (2.0, 0)
    assert (other.route, other.max_retries) == ("mcq", 3)
    assert other.default_headers["x-coe-tags"] == "copied"
    assert coe.route == "sentiment"


@pytest.mark.anyio
async def test_a_helper_without_any_route_is_refused() -> None:
    async with CoEClient("http://127.0.0.1:9/v1") as coe:
        with pytest.raises(ValueError, match="route"):
            await coe.classify("text", labels=["a", "b"])


@pytest.mark.anyio
async def test_choices_given_as_one_string_are_refused() -> None:
    async with CoEClient("http://127.0.0.1:9/v1", route="mcq") as coe:
        with pytest.raises(TypeError, match="sequence"):
            await coe.choose("question", choices="ABCD")
