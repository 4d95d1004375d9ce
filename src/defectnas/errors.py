"""User-facing errors.

Why a module of its own: every mistake a user can make with their data or flags must end as
one readable line (naming the file, row or column) and exit code 2, never as a traceback from
deep inside pandas or torch. Code raises a :class:`DefectnasError` subclass; the CLI prints
``error: <message>`` and exits 2.
"""


class DefectnasError(Exception):
    """Base class of errors whose message is meant for the user, on one line."""


class DataError(DefectnasError, ValueError):
    """The input table is missing, unreadable or does not fit the expected layout."""


class LayoutError(DataError):
    """No known table layout has the table's columns (``--format auto``), and none were named."""


class ConfigError(DefectnasError, ValueError):
    """A configuration value or command-line flag is invalid."""


class DataWarning(UserWarning):
    """Rows of the input were decoded by a fallback, left out, or look doubtful (one line each).

    The library warns through :mod:`warnings`, so nothing is dropped or repaired silently; the
    CLI prints each as one ``warning: <message>`` line on stderr.
    """


class NotFittedError(DefectnasError, AttributeError):
    """A model was used before ``fit`` (scikit-learn's convention)."""


class TrainingDivergedError(DefectnasError, RuntimeError):
    """The training loss stopped being a finite number (the learning rate is usually too high)."""
