"""Errors meant for people: each message says what was wrong and what to do."""


class XDynaError(Exception):
    """Base class of every error X-Dyna Studio raises on purpose."""


class InputError(XDynaError, ValueError):
    """Bad user input: unreadable video, no person in the photo, wrong size, too long ..."""


class MissingWeightsError(XDynaError, FileNotFoundError):
    """Model files or keys are missing; the message names each one."""


class Cancelled(XDynaError):
    """A long job was interrupted by its progress callback (the user pressed Cancel)."""


class ModelUnavailable(XDynaError):
    """The chosen model cannot run here (no GPU, not enough memory, offline, not a model folder)."""
