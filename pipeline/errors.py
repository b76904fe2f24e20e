"""The one exception type stage one raises for bad input; the CLI prints it as one line."""


class PipelineError(Exception):
    """A user-facing failure: the message says what is wrong and what to do."""
