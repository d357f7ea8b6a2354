"""The bottom layer: hooks, checkpoint files, memory, the result store, argument checks, the CLI error line.

Imports nothing else of the package."""
