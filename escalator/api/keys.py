"""Typed keys of what the application carries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aiohttp import web

from escalator.dispatcher import Dispatcher
from escalator.domain.ids import EscalationId
from escalator.metrics import Metrics
from escalator.routing import RoutingTable
from escalator.settings import Settings
from escalator.store import Store

__all__ = ["CLOCK", "DISPATCHER", "METRICS", "NEW_ID", "ROUTING", "SETTINGS", "STORE"]

SETTINGS = web.AppKey("settings", Settings)
ROUTING = web.AppKey("routing", RoutingTable)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
CLOCK: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")
NEW_ID: web.AppKey[Callable[[], EscalationId]] = web.AppKey("new_id")
