"""The one exception type for mistakes a user can fix; the CLIs print its message without a traceback."""


class UserError(Exception):
    """Bad input (config, data, paths): the message is one sentence saying what is wrong and how to fix it."""
