"""The one exception family for errors a user can act on.

str(error) is a plain sentence meant for the user: the UI shows it in the chat or a
status message, the CLI prints it and exits non-zero. Anything else is a bug.
"""


class AssistantError(Exception):
    """An error the user can act on; its message is written for them."""


class ModelError(AssistantError):
    """A model file is missing, damaged, not GGUF, or could not be loaded."""


class WontFitError(ModelError):
    """A model would not fit this machine's free memory at the chosen context (checked before loading)."""

    def __init__(self, message: str, context_that_fits: int | None = None) -> None:
        super().__init__(message)
        self.context_that_fits = context_that_fits


class SettingsError(AssistantError):
    """A setting has a value the app cannot use."""


class ContextOverflowError(AssistantError):
    """The message alone does not fit in the model's context window."""


class DownloadError(AssistantError):
    """A model download failed or its checksum did not match."""


class NotFoundError(AssistantError):
    """A conversation or message that was asked for does not exist."""


class AudioError(AssistantError):
    """An audio file or recording is missing, empty, damaged or not audio at all."""
