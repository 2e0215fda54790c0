"""The pure domain: no Flask, SQLModel, HTTP or clock. Time arrives as a `now` argument."""
