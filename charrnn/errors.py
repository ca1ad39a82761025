"""The one exception type users see.

Anything the user can fix (a bad path, an unknown character, a corrupt checkpoint) raises
`CharRNNError` with a one-line message; the CLI turns it into `Error: <message>` and a non-zero
exit instead of a traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class CharRNNError(ValueError):
    """A problem with the user's input, files or options, described in one line."""
