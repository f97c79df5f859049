"""Plumbing shared by the ipywidgets explorers: figures as PNG bytes for an Image widget, and errors
shown in the panel instead of being lost in a callback."""

from __future__ import annotations

import functools
import io

import matplotlib.pyplot as plt


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes at 72 dpi (for ipywidgets.Image); the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def report_errors(status):
    """Decorate a widget callback so that an exception is shown in red in the HTML widget `status`
    (cleared first, so the callback may set its own message) instead of vanishing into the kernel's log."""
    def decorate(callback):
        @functools.wraps(callback)
        def guarded(*args):
            status.value = ""
            try:
                return callback(*args)
            except Exception as exc:  # shown to the user in the widget, never swallowed
                status.value = f"<b style='color:red'>{type(exc).__name__}: {exc}</b>"
        return guarded
    return decorate
