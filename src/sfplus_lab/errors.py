"""One exception type for mistakes a user can fix; the command line prints it as one line, no traceback."""


class UserError(Exception):
    """Bad input (a missing file, a bad flag value, an unwritable folder...). The message names it."""
