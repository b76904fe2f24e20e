"""The project's errors: one base the command line prints as one `error:` line.

``SraError`` is every failure caused by input a user can fix (a missing file, a bad option, a
cache made by another config); its message says what is wrong and what to do. Code raises it
``from`` the low-level exception, so ``--debug`` (or ``PIPELINE_DEBUG=1``) can show the cause.
Subclasses exist only where a caller must tell failures apart. This module sits in the lowest
package so that both stages share it.
"""


class SraError(Exception):
    """A user-facing failure: the message says what is wrong and what to do."""


class CacheError(SraError):
    """A cache that cannot be read or written as asked; the message names the file at fault.

    Its own class because callers react to it: ``evaluate`` rebuilds a task cache it cannot
    use, ``verify`` reports it as a problem instead of stopping."""
