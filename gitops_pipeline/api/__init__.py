"""The web process: REST API (and, later, webhooks, metrics and the status page)."""
