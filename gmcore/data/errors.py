"""``DataError``: a data file or data set that can't be used (the CLI prints it as one line)."""

__all__ = ["DataError"]


class DataError(ValueError):
    """A data file is malformed, hostile or empty, or a data set breaks its contract.

    A ``ValueError``, so callers that catch bad input keep working; the message names the file
    (or data set) and the problem.

    >>> raise DataError("train-labels-idx1-ubyte: label 200 at index 3 is outside 0..9")
    Traceback (most recent call last):
    ...
    gmcore.data.errors.DataError: train-labels-idx1-ubyte: label 200 at index 3 is outside 0..9
    """
