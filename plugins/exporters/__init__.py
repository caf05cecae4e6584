"""Exporters: write the derived network to a deployable file and verify it."""
