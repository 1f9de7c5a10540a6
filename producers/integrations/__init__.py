"""Integrations: meterline inside the proxies that make the calls (LiteLLM)."""
