"""Exceptions and warnings raised by memotag (all exceptions derive from MemotagError)."""


class MemotagError(Exception):
    """Base class of every memotag error."""


class SchemaConflict(MemotagError):
    """A schema change was rejected: it conflicts with the store as it is now. Nothing changed."""


class IncompatibleSignature(MemotagError):
    """The code's signature cannot bind to the function version it names; use a new ``version=``."""


class NotAStore(MemotagError):
    """The path holds something that is not a memotag store (it was left untouched)."""


class ReadOnlyStore(MemotagError):
    """The store is open read-only (asked for, or its format is newer than this memotag writes)."""


class StoreLocked(MemotagError):
    """Other writers held the store for longer than the busy timeout."""


class BatchNotStored(MemotagError):
    """Results buffered in a batch could not be committed. ``stored``: how many were stored
    (for a batch, by its earlier flushes; for ``close()``, by the close); ``not_stored``: how
    many were not; ``still_buffered``: whether those are still buffered (an automatic flush
    every 1,000 results, or ``close()``, which then leaves the store open) rather than dropped
    (the end of the batch). ``__cause__`` is the error that stopped the commit."""

    stored: int
    not_stored: int
    still_buffered: bool


class VersionError(MemotagError):
    """This memotag and the store (or server) have no common protocol for an operation."""


class CorruptValue(MemotagError):
    """A stored value does not match its id: the store was modified or damaged behind memotag's
    back. The damaged value is never returned; ``memotag check`` lists what is damaged."""


class ValueNotStorable(MemotagError):
    """An argument (or a default, or a ``where=`` value) cannot be stored: memotag's encodings and
    pickle both refuse it (a string with lone surrogates, a lock, an object whose pickling fails).
    The message names the function and parameter; ``__cause__`` is the encoder's own error.
    Nothing was looked up or recorded."""


class ValueNotReadable(MemotagError):
    """A stored value cannot be turned back into a Python object here: its class cannot be
    imported in this process, or its bytes do not decode with the codec the store names (the
    store was altered). The message names the store and what the value is (the output of which
    function); ``__cause__`` is the decoder's own error."""


class Miss(MemotagError, KeyError):
    """No recorded result for these arguments (raised by ``f.lookup``)."""


class RenamedWarning(UserWarning):
    """The code uses a name that a function or input had before it was renamed."""


class ConflictWarning(UserWarning):
    """Another process recorded different outputs for the same call first; those are returned."""


class CodeChangedWarning(UserWarning):
    """A hit was served from results recorded under different code."""


class ResultNotStoredWarning(UserWarning):
    """A memoized function's result was returned but not stored: it cannot be encoded (not even
    pickled), or the store could not read it back. Later calls compute it again. Given once per
    function and process."""
