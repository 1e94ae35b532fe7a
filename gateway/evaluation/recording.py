"""The gateway's side of a recording: the header written from a config, and the route read back.

The format itself (RUN.jsonl, its header, examples and calls) is ``providers.recording``, which the
``replay`` provider reads too; here the header's route table becomes a validated ``RouteConfig``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.config import RouteConfig
from providers.recording import EndpointInfo, RecordingHeader

if TYPE_CHECKING:
    from gateway.config import Settings
    from policies.answers import AnswerSpec
    from providers.endpoint import EndpointConfig


def header_for_route(
    settings: Settings, route_name: str, *, logprobs: bool, created_at: str
) -> RecordingHeader:
    """The header of a recording of ``route_name`` under ``settings``."""
    route = settings.routes[route_name]
    endpoints: dict[str, EndpointInfo] = {}
    for tier, names in enumerate(route.tiers):
        for name in names:
            endpoints[name] = _info(settings, settings.endpoint(name), tier)
    return RecordingHeader(
        route_name, route.recorded(), endpoints, logprobs, created_at
    )


def route_config(header: RecordingHeader) -> RouteConfig:
    """The recorded route, validated as the gateway's config validates it."""
    return RouteConfig.model_validate(header.route)


def answer_spec(header: RecordingHeader) -> AnswerSpec:
    """How the recorded route reads its answers."""
    return route_config(header).spec


def same_route(header: RecordingHeader, other: RecordingHeader) -> bool:
    """Whether rows recorded under ``other`` may be mixed with rows recorded under ``header``."""
    return (
        header.route_name == other.route_name
        and header.tiers == other.tiers
        and answer_spec(header) == answer_spec(other)
        and header.logprobs == other.logprobs
    )


def _info(settings: Settings, endpoint: EndpointConfig, tier: int) -> EndpointInfo:
    hourly = settings.pricing.gpu_hour_usd.get(endpoint.gpu) if endpoint.gpu else None
    return EndpointInfo(
        name=endpoint.name,
        tier=tier,
        kind=endpoint.kind,
        model=endpoint.model,
        usd_per_mtok_in=endpoint.usd_per_mtok_in,
        usd_per_mtok_out=endpoint.usd_per_mtok_out,
        gpu=endpoint.gpu,
        gpus=endpoint.gpus,
        gpu_hour_usd=hourly,
    )
