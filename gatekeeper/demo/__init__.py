"""`gatekeeper demo`: the whole loop on the embedded defaults, with a simulated fleet of agents."""
