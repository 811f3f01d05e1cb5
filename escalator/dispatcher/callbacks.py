"""Status callbacks: each change POSTed to the escalation's ``status_callback_url``, signed.

The signature header is ``X-Escalator-Signature: t=<unix seconds>,v1=<hex>``, where ``v1`` is
HMAC-SHA256, keyed with ``ESCALATOR_CALLBACK_SECRET``, of ``"<t>.<body>"`` (the raw body bytes).
``X-Escalator-Delivery`` names the change; a receiver dedupes retried deliveries by it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import aiohttp

from escalator.dispatcher.callback_urls import (
    CallbackUrlRefused,
    GuardedResolver,
    UrlPolicy,
    check_callback_url,
)
from escalator.logs import get_logger
from escalator.metrics import Metrics
from escalator.store import OutboxItem, Store

__all__ = ["SIGNATURE_HEADER", "StatusCallbacks", "sign"]

SIGNATURE_HEADER = "X-Escalator-Signature"
DELIVERY_HEADER = "X-Escalator-Delivery"
_RETRIED_4XX = frozenset({408, 425, 429})
_log = get_logger(__name__)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The value of ``X-Escalator-Signature`` for ``body`` sent at ``timestamp``."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class StatusCallbacks:
    """Carries out ``status_callback`` outbox rows: one signed POST each, retried with backoff."""

    def __init__(
        self,
        *,
        secret: str,
        policy: UrlPolicy,
        metrics: Metrics,
        timeout: float = 5.0,
        max_attempts: int = 12,
    ) -> None:
        self._secret = secret
        self._policy = policy
        self._metrics = metrics
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._policy), use_dns_cache=False, limit=50
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": "escalator"},
            )
        return self._session

    async def handle(
        self,
        item: OutboxItem,
        *,
        store: Store,
        owner: str,
        now: Callable[[], datetime],
        backoff: Callable[[int], float],
    ) -> None:
        """Send the change; drop the row when delivered or hopeless, else give it back."""
        payload = item.payload or {}
        url, body = str(payload.get("url", "")), payload.get("body") or {}
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            # Again at send time: what a name resolves to may have changed since the POST.
            await check_callback_url(url, self._policy)
            status = await self._post(url, data, str(body.get("delivery_id", "")), item.attempts)
        except CallbackUrlRefused as exc:
            await self._drop(item, store, owner, "refused", str(exc))
            return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status, error = None, f"no answer ({type(exc).__name__})"
        else:
            error = f"answered {status}"
        if status is not None and 200 <= status < 300:
            await self._drop(item, store, owner, "sent", None)
        elif (
            status is not None and status < 500 and status not in _RETRIED_4XX
        ) or item.attempts + 1 >= self._max_attempts:
            await self._drop(item, store, owner, "abandoned", error)
        else:
            self._metrics.status_callbacks.labels(result="failed").inc()
            delay = backoff(item.attempts)
            await store.retry_outbox(
                item,
                owner=owner,
                due_at=now() + timedelta(seconds=delay),
                error=error,
                ambiguous=False,
            )
            _log.warning(
                "callback.retry",
                escalation_id=item.escalation_id,
                error=error,
                attempts=item.attempts + 1,
                retry_in=round(delay, 3),
            )

    async def _post(self, url: str, data: bytes, delivery_id: str, attempts: int) -> int:
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, stamp, data),
            DELIVERY_HEADER: delivery_id,
            "X-Escalator-Attempt": str(attempts + 1),
        }
        async with self._client().post(
            url, data=data, headers=headers, allow_redirects=False
        ) as response:
            return response.status

    async def _drop(
        self, item: OutboxItem, store: Store, owner: str, result: str, error: str | None
    ) -> None:
        if await store.drop_outbox(item, owner=owner):
            self._metrics.status_callbacks.labels(result=result).inc()
            log = _log.info if result == "sent" else _log.warning
            log(f"callback.{result}", escalation_id=item.escalation_id, error=error)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
