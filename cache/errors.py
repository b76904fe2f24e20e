"""The one exception type the cache raises; messages name the file at fault."""


class CacheError(Exception):
    """A cache that cannot be read or written as asked: the message says why and what to do."""
