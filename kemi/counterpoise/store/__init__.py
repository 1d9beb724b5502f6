"""Redis, and only here: the key schema (``keys``), the one way to connect (``client``),
the pool and the weights (``pool``), the location records (``location``).

No other package imports ``redis``. A store raises only the errors in ``client.ERRORS``,
which callers treat as "Redis is unavailable: carry on with what you had".
"""
