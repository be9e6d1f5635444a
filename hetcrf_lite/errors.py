"""Package errors: each names what is wrong and how to fix it.

They subclass the built-in exception a caller would expect (``ValueError`` for bad values,
``FileNotFoundError`` for missing files, ``OSError`` for outputs that cannot be written), so
``except ValueError`` keeps working. ``hetcrf-lite`` prints any of them as one line and exits
with status 2.
"""


class HetCRFError(Exception):
    """Base class of every error raised on purpose by hetcrf_lite."""


class DataError(HetCRFError, ValueError):
    """Bad data: wrong shapes, labels out of range, NaN/Inf features, corrupt files."""


class DataFileNotFoundError(HetCRFError, FileNotFoundError):
    """A dataset file is missing and cannot be fetched."""


class MetaPathError(HetCRFError, ValueError):
    """A meta-path is malformed, names an unknown node type, or does not close on the target."""


class ConfigError(HetCRFError, ValueError):
    """A configuration field holds an impossible value."""


class TrainingError(HetCRFError, RuntimeError):
    """Training cannot go on (for example a NaN or Inf loss)."""


class CheckpointError(TrainingError):
    """A checkpoint cannot be used: damaged, in the old pickled format, or from another config."""


class OutputError(HetCRFError, OSError):
    """An output cannot be written: the folder is a file, read-only, or the disk is full."""


class NoValidationLabelsError(DataError):
    """``hetcrf-lite tune`` got a graph without validation labels: nothing to pick settings by."""
