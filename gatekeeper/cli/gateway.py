"""`gatekeeper gateway`: the MCP gateway that decides every tool call in the path (SPEC §9)."""

from __future__ import annotations

import logging

import click

SESSION_FIELDS = (
    "An agent names its Gatekeeper session with the headers Gatekeeper-Session-Key, Gatekeeper-Environment "
    "(live or twin) and Gatekeeper-Version, and for a twin run Gatekeeper-Seed (rehearsed failures), "
    "Gatekeeper-Scenario (the scenario it is judged against), Gatekeeper-Arm (stable: a fidelity replay) and "
    "Gatekeeper-Twin-Snapshot-At; with --stdio, GATEKEEPER_AGENT_TOKEN, GATEKEEPER_SESSION_KEY, "
    "GATEKEEPER_ENVIRONMENT, GATEKEEPER_VERSION, GATEKEEPER_SEED, GATEKEEPER_SCENARIO, GATEKEEPER_ARM and "
    "GATEKEEPER_TWIN_SNAPSHOT_AT.")


@click.command("gateway", epilog=SESSION_FIELDS)
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The gateway file: per agent, its live and twin upstream MCP servers.")
@click.option("--stdio", is_flag=True, help="Serve one MCP session on stdin/stdout (an agent launches the gateway).")
@click.option("--bind", default="127.0.0.1:8787", show_default=True, help="HOST:PORT for streamable HTTP (/mcp).")
@click.option("--approval-wait", default=0.0, show_default=True, type=click.FloatRange(0, 3600),
              help="Seconds an elicited approval is polled for after the user accepts, before the call is refused.")
@click.option("--otel", is_flag=True,
              help="Keep the MCP SDK's OpenTelemetry span per message (off by default: it costs CPU per call).")
@click.option("--idle-timeout", default="30m", show_default=True,
              help="End an MCP session (or a 2026-07-28 session key) unused this long, and its Gatekeeper session.")
def gateway(config_path: str, stdio: bool, bind: str, approval_wait: float, otel: bool, idle_timeout: str) -> None:
    """Serve MCP to agents, deciding every tools/call through this deployment's Gatekeeper."""
    import anyio
    from prometheus_client import CollectorRegistry

    from gatekeeper.gateway.deciding import ConfigError, Decider, Settings, parse_duration
    from gatekeeper.gateway.gateway_file import load_gateway_file
    from gatekeeper.gateway.serving import build_gate, serve_http, serve_stdio

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        idle_s = parse_duration(idle_timeout)
        file = load_gateway_file(config_path)
        decider = Decider(Settings.from_env(), registry=(registry := CollectorRegistry()))
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--idle-timeout") from None
    gate = build_gate(decider, file, registry=registry, stdio=stdio, approval_wait_s=approval_wait, otel=otel)
    try:
        if stdio:
            anyio.run(serve_stdio, gate)
        else:
            host, _, port = bind.rpartition(":")
            click.echo(f"gateway: MCP on http://{bind}/mcp for agents {', '.join(sorted(file.agents))}", err=True)
            anyio.run(lambda: serve_http(gate, registry=registry, host=host or "127.0.0.1", port=int(port),
                                         idle_s=idle_s), backend_options={"use_uvloop": True})
    finally:
        decider.dispose()
