"""Serving: guardrails in front of the engine (later: semantic cache, tiered router, HTTP server)."""
