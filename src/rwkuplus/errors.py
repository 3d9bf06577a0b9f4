"""The one exception type for mistakes a user can make (bad path, malformed file, unknown option).

The command line prints its message as one sentence and exits with status 2, without a traceback.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input: the message names the file, field or option and what was expected."""
