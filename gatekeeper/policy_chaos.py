"""The policy file's rehearsed failures (`stages.twin.chaos`) and graceful-handling assertions, as pydantic models.

Kept beside gatekeeper/policy_format.py, which uses them in its twin section; the pure model they
become is gatekeeper.core.chaos.ToolChaos and the scenario fields of gatekeeper.core.policy.Scenario.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, model_validator

from gatekeeper.core.chaos import ToolChaos
from gatekeeper.policy_fields import Count0, Duration, Problems, Rate, Section, Text, mapping_or_empty, raw

MAX_LATENCY_S = 600.0  # an added latency longer than this is a unit mistake


class ChaosFormat(Section):
    """The failures rehearsed for one tool or tool class in twin sessions; the fault rates add up to at most 1."""

    error_rate: Rate = Field(raw(0), description="share of calls that fail with a tool error (the tool is not called)")
    timeout_rate: Rate = Field(
        raw(0), description="share of calls that time out for the agent after the tool ran (ambiguous success)"
    )
    partial_rate: Rate = Field(raw(0), description="share of calls whose result the agent gets truncated")
    malformed_rate: Rate = Field(raw(0), description="share of calls whose result the agent gets garbled")
    latency: Duration = Field(raw("0s"), description="added latency before the call, e.g. 2s")
    latency_rate: Rate = Field(raw(1), description="share of calls that get the added latency (default: every call)")

    @model_validator(mode="after")
    def _sensible(self) -> ChaosFormat:
        faults = self.error_rate + self.timeout_rate + self.partial_rate + self.malformed_rate
        if faults > 1 + 1e-9:
            raise ValueError(f"the fault rates add up to {faults:g}; one call gets one fault at most, so at most 1")
        if self.latency > MAX_LATENCY_S:
            raise Problems([("latency", f"must be at most {MAX_LATENCY_S:g}s")])
        if faults == 0 and (self.latency == 0 or self.latency_rate == 0):
            raise ValueError("injects nothing: give a fault rate or a latency")
        return self

    def to_chaos(self) -> ToolChaos:
        """Return the pure model of these settings."""
        return ToolChaos(self.error_rate, self.timeout_rate, self.partial_rate, self.malformed_rate, self.latency,
                         self.latency_rate)


ChaosMap = Annotated[dict[Text, ChaosFormat], BeforeValidator(mapping_or_empty)]
MaxRetries = Annotated[dict[Text, Count0], BeforeValidator(mapping_or_empty)]
