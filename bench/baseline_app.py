"""The inline baseline: what Twilio's TaskRouter quickstart does, and escalator replaces.

A web handler that creates the TaskRouter task inline with the *sync* twilio SDK, then answers
the caller with the task's SID once `tasks.create` has returned. No database, no outbox, no
retry, no lookup: a Twilio error becomes a 500 for the caller (the quickstart catches nothing),
and a create whose answer is lost is the caller's problem. The sync SDK call runs in a thread
pool (`--threads`, as a threaded WSGI server would run a sync view), so the event loop keeps
accepting requests meanwhile. Run as its own process by bench/baseline_bench.py:

    python bench/baseline_app.py --port 8082 --taskrouter-url http://127.0.0.1:8090 \\
        --account-sid AC... --auth-token ... --workspace-sid WS... --workflow-sid WW...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from twilio.rest import Client


@dataclass(frozen=True)
class Inline:
    """The quickstart's module-level client and the workspace it creates tasks in."""

    client: Client
    workspace_sid: str
    workflow_sid: str
    threads: ThreadPoolExecutor

    def create_task(self, attributes: dict[str, Any]) -> str:
        """`tasks.create` with the sync SDK, as the quickstart writes it; the task's SID."""
        task = self.client.taskrouter.v1.workspaces(self.workspace_sid).tasks.create(
            attributes=json.dumps(attributes), workflow_sid=self.workflow_sid
        )
        return str(task.sid)


INLINE = web.AppKey("inline", Inline)


async def create(request: web.Request) -> web.Response:
    """Create the task inline; answer 201 once Twilio has."""
    body = await request.json()
    inline = request.app[INLINE]
    escalation_id = f"esc_{uuid.uuid4().hex}"
    attributes = {
        "escalation_id": escalation_id,
        "conversation_id": body["conversation_id"],
        "reason_code": body.get("reason_code"),
        "summary": body.get("summary"),
        "channel": body.get("channel"),
        "customer": body.get("customer"),
        "context": body.get("context"),
    }
    loop = asyncio.get_running_loop()
    task_sid = await loop.run_in_executor(inline.threads, inline.create_task, attributes)
    return web.json_response({"id": escalation_id, "task_sid": task_sid}, status=201)


async def ready(request: web.Request) -> web.Response:
    """Always ready: there is nothing to open."""
    return web.json_response({"status": "ok"})


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--taskrouter-url", required=True, help="where TaskRouter is")
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--workspace-sid", required=True)
    parser.add_argument("--workflow-sid", required=True)
    parser.add_argument("--threads", type=int, default=32, help="sync SDK calls at once")
    args = parser.parse_args()
    client = Client(args.account_sid, args.auth_token)
    client.taskrouter.base_url = args.taskrouter_url
    app = web.Application()
    app[INLINE] = Inline(
        client, args.workspace_sid, args.workflow_sid, ThreadPoolExecutor(args.threads)
    )
    app.router.add_post("/escalations", create)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
