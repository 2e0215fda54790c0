"""`gatekeeper gateway`: an MCP gateway that decides every tool call in the path (SPEC §9).

    gateway_file.py   the gateway YAML file (pydantic, secrets by env-var reference only)
    callers.py        who is calling and the session they ask for (Gatekeeper-* headers, GATEKEEPER_* on stdio)
    deciding.py       the one module that imports Gatekeeper's own use cases and store
    tool_calls.py     sessions and verdicts (ToolGate); the SDK path: MCP terminated with the mcp SDK (stdio)
    upstreams.py      the SDK path's long-lived client sessions to upstream MCP servers
    forwarding.py     the lean path for streamable HTTP: JSON-RPC bodies parsed, the rest streamed through
    in_path.py        the lean path's tools/call: decided, then forwarded, recorded, refused or asked about
    relay.py          the lean path's kept-alive upstream pools, JSON/SSE replies, SSE event reading
    serving.py        streamable HTTP (bearer agent token) and stdio transports, /metrics, idle expiry
    gateway_metrics.py  calls by verdict, upstream latency and errors, sessions, rehearsed faults
    rehearsal.py      a twin's rehearsed failures (stages.twin.chaos) applied on both paths
"""
