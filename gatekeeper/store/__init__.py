"""Persistence: the engine and unit of work (`db`), the tables (`models`) and data-access functions."""
