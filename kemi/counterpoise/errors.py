"""The errors meant for the operator as they are: the ``counterpoise`` command prints one as
one line on stderr and exits with status 1. Apart from the modules raising them, so that a
command can catch them without importing those (keepalived's health check runs every second)."""


class CliError(Exception):
    """An error for the operator: printed as one line, exit status 1."""


class StartError(RuntimeError):
    """A process could not be started; the message is meant for the operator as is."""
