"""`gatekeeper gateway`: an MCP gateway that decides every tool call in the path (SPEC §9).

    gateway_file.py   the gateway YAML file (pydantic, secrets by env-var reference only)
    deciding.py       the one module that imports Gatekeeper's own use cases and store
    upstreams.py      long-lived client sessions to the live and twin upstream MCP servers
    tool_calls.py     the MCP server side: tools/list and tools/call, verdict by verdict
    serving.py        streamable HTTP (bearer agent token) and stdio transports, /metrics
    gateway_metrics.py  calls by verdict, upstream latency and errors
"""
