"""Search strategies. :mod:`.differentiable` holds the shared loop of the
differentiable family; each strategy module is its own plugin."""
