"""Task families: each module is one family, registered by name (see :mod:`metajax.registry`)."""
