"""Pure measures over runs: metrics (L, K, P), phase transitions.

Imports the layers below."""
