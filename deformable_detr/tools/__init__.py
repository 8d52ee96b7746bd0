"""Command-line tools that check a setup without running it."""
