"""Container registries: image references and a Registry HTTP API v2 client.

The only package that talks to registries. Callers get plain values back (tags, digests,
creation times, labels) and errors from one hierarchy: `RegistryError` is transient (retry,
honouring `RateLimited.retry_after`), `RegistryRefused` is permanent until something changes.
"""
