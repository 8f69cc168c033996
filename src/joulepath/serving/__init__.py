"""Serving: the frontend (the one path a request takes: guards, engine, text) and the guardrails; later a
semantic cache, a tiered router and an HTTP server plug into the frontend."""
