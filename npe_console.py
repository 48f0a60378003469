"""Rich consoles for tables and progress, laid out the same way by every `npe` command.

On a terminal, rich's own layout (the terminal's width) is kept for tables and progress bars.
Plain messages are never broken by rich (``soft_wrap``): a message naming a path stays one line
that a terminal may fold visually but a script or `pexpect` reads whole. Off a terminal (a pipe, a log
file, CI, a test runner), rich would fall back to 80 columns or to ``$COLUMNS`` and wrap or
truncate table cells and paths; there a fixed wide layout is used instead, so what a script reads
does not depend on an environment variable. Errors and warnings never go through these consoles:
see `npe_errors`.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress

__all__ = ["PIPE_WIDTH", "QuietProgress", "make_console"]

#: Width used when the output is not a terminal: wide enough for every npe table.
PIPE_WIDTH = 200


def make_console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr) with the layout rule described above."""
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=PIPE_WIDTH, highlight=False, soft_wrap=True)


class QuietProgress(Progress):
    """rich's `Progress`, without the blank line its `stop()` prints off a terminal when the
    bar left nothing on screen (a transient bar, or one that never started).

    Why: off a terminal (a pipe, CI, a test runner) rich ends every stopped bar with an empty
    line. Before an error that put a blank line above the one line `npe` promises for bad
    input (`npe dataset import` on a file that is not HDF5); a bar that did show keeps its
    closing newline.
    """

    def stop(self) -> None:
        if self.disable:
            return
        shown = self.live.is_started and not self.live.transient
        self.live.stop()
        if shown and not self.console.is_interactive and not self.console.is_jupyter:
            self.console.print()
