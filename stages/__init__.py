"""One readable script per stage; each exposes `run(cfg) -> dict`."""
