"""A real upstream MCP server for the gateway's tests and bench: tools whose side effects go to a file.

    python -m tests.support.mcp_upstream --effects FILE --label live [--port P | --stdio] [--drift FLAG]

Every call of a tool appends `{"label", "tool", "arguments"}` as one JSON line to FILE before it
answers, so a test sees exactly which calls reached which upstream. `fail_tool` answers isError,
`slow_tool` sleeps `seconds`, `refund_payment` reports its actual cost in `_meta`, and `echo` writes
nothing (the bench's tool). With `--drift FLAG`, while the file FLAG exists `refund_payment` answers
that the order was already refunded: a twin that no longer behaves as production does.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

TOOLS = ("search_kb", "lookup_customer", "update_ticket", "send_email", "refund_payment", "fail_tool",
         "slow_tool", "echo")
SCHEMA = {"type": "object", "additionalProperties": True}


def build(effects: str, label: str, *, drift: str | None = None) -> Server[Any]:
    """Return the upstream server writing its side effects to `effects` (drifting while `drift` exists)."""

    async def list_tools(ctx: ServerRequestContext[Any, Any], params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name=name, description=f"the {name} tool",
                                                       input_schema=SCHEMA) for name in TOOLS])

    async def call_tool(ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
                        ) -> types.CallToolResult:
        arguments = params.arguments or {}
        if params.name == "echo":
            return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(arguments))])
        if params.name == "slow_tool":
            await anyio.sleep(float(arguments.get("seconds", 5)))
        with open(effects, "a", encoding="utf-8") as out:
            out.write(json.dumps({"label": label, "tool": params.name, "arguments": arguments}) + "\n")
        said = "already refunded" if params.name == "refund_payment" and drift and os.path.exists(drift) else "done"
        text = types.TextContent(type="text", text=f"{label}:{params.name} {said}")
        if params.name == "fail_tool":
            return types.CallToolResult(content=[text], is_error=True)
        meta = {"gatekeeper/actual_cost": 0.03} if params.name == "refund_payment" else None
        return types.CallToolResult(content=[text], _meta=meta)

    return Server(f"upstream-{label}", on_list_tools=list_tools, on_call_tool=call_tool)


async def _stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--effects", required=True)
    parser.add_argument("--label", default="live")
    parser.add_argument("--port", type=int)
    parser.add_argument("--stdio", action="store_true")
    parser.add_argument("--drift")
    args = parser.parse_args()
    server = build(args.effects, args.label, drift=args.drift)
    if args.stdio:
        anyio.run(_stdio, server)
    else:
        uvicorn.run(server.streamable_http_app(host="127.0.0.1"), host="127.0.0.1", port=args.port,
                    log_level="warning")


if __name__ == "__main__":
    main()
