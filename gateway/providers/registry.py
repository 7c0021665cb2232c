"""Build providers from the config and route client model names to them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import ModelRoute, ProviderConfig, Settings
from gateway.errors import NotFound
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Provider
from gateway.providers.mock import MockProvider
from gateway.providers.openai import OpenAIProvider

__all__ = ["ModelRouter", "Route", "build_providers"]


_FACTORIES: dict[str, Callable[[ProviderConfig], Provider]] = {
    "openai": OpenAIProvider,
    "mock": MockProvider,
    "anthropic": AnthropicProvider,
}


def build_providers(settings: Settings) -> dict[str, Provider]:
    """One provider object (and so one connection pool) per configured provider."""
    return {p.name: _FACTORIES[p.type](p) for p in settings.providers}


@dataclass(frozen=True, slots=True)
class Route:
    model: ModelRoute
    provider: Provider


class ModelRouter:
    """Client model name → (route config, provider). Unknown names are 404."""

    def __init__(self, settings: Settings, providers: dict[str, Provider]) -> None:
        self._routes = {m.name: Route(m, providers[m.provider]) for m in settings.models}

    def routes(self) -> list[Route]:
        return list(self._routes.values())

    def resolve(self, model: str) -> Route:
        route = self._routes.get(model)
        if route is None:
            raise NotFound(
                "The model does not exist or is not served by this gateway.",
                param="model",
                code="model_not_found",
            )
        return route
