"""The one exception type the student package raises for a bad student folder."""


class StudentError(Exception):
    """A user-facing failure: one line naming the file, what is wrong and what to do."""
