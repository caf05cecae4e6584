"""Built-in search-space plugins, one sub-package per space (installed as ``dnas_search_spaces``)."""
