"""Adapters for agent frameworks, one small module each, each behind its own extra; none is imported here.

    pip install "gatekeeper-client[openai-agents]"   ->  gatekeeper_client.adapters.openai_agents
    pip install "gatekeeper-client[pydantic-ai]"     ->  gatekeeper_client.adapters.pydantic_ai
    pip install "gatekeeper-client[langgraph]"       ->  gatekeeper_client.adapters.langgraph

Each guards the framework's tools once (every run finds its session in the current context) and brings
Gatekeeper's approvals into the framework's own human-in-the-loop pause: the run stops where the framework
stops for a person, the release manager decides in Gatekeeper, and the resumed call runs once.
"""
