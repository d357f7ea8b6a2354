"""What every analysis runs: restarting blocks from a cached clean pass, reading a prediction.

Imports the layers below (`base` .. `handle`)."""
