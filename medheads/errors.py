"""The one error class for bad input, shared by every part of medheads.

An `InputError` is a problem the user fixes by changing a flag, a JSON argument file, a data file or a model path; its
message names the problem and what to do. Every `medheads` command turns it into one line
`medheads <command>: error: <message>` on stderr and exit status 2, before any heavy work (see
`medheads.command_line`). Data readers raise the subclass `medheads.data.DataFormatError`, Hub publishing the
subclasses in `medheads.hub.constants`.

Standard library only, so the data readers, the training side and the hub side all import it without importing each
other.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input (arguments, data, model path), found before heavy work; the message says what to change."""

    #: the exit status of a `medheads` command that stops on this error
    exit_code = 2


__all__ = ["InputError"]
