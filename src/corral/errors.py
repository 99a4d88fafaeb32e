"""Errors corral raises on purpose; each carries a message a user can act on."""


class CorralError(Exception):
    """Base of every error corral raises deliberately."""


class SpecError(CorralError):
    """A spec or scenario file is malformed; the message names the file, line and field, and the fix."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        location = path or ""
        if path and line is not None:
            location = f"{path}:{line}"
        super().__init__(f"{location}: {message}" if location else message)
        self.path = path
        self.line = line
