"""The HTTP API: an aiohttp application built by ``create_app``."""

from escalator.api.app import Dependencies, create_app

__all__ = ["Dependencies", "create_app"]
