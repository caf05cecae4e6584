"""Hardware backends: where models run and how their latency is measured."""
