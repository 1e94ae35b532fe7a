"""The HTTP surface: the app factory, one router per resource, the OpenAI protocol models, the
ASGI middleware and the lifespan's typed state."""

from gateway.api.app import create_app

__all__ = ["create_app"]
