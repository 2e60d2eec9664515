"""The one error type a user sees: what went wrong and how to fix it."""


class TinyKDError(Exception):
    """A problem with the user's input or set-up.

    The dispatcher prints ``problem`` and ``fix`` on two lines (``error: <problem>``,
    ``  fix: <fix>``) and exits with status 2, without a traceback: these are not bugs in tinykd.
    """

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}" + (f" Fix: {fix}" if fix else ""))


class NonFiniteLossError(TinyKDError):
    """Training produced NaN/inf; the last good checkpoint is kept."""
