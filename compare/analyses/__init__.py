"""The analyses of the public API, each with its `_ref` twin beside it.

Imports the layers below and each other (no circles)."""
