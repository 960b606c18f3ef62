"""Reports: what the pipelines return (``results``), rendered as text and JSON (``table``), stored as HDF5
(``hdf5``) or shown as a self-contained HTML page with charts (``html``).

``write_report`` is the one place that chooses between the file kinds, by the path's extension.
"""

from __future__ import annotations

import os

__all__ = ["HTML_EXTENSIONS", "is_html", "write_report"]

#: A ``--report`` path with one of these extensions (any case) is written as HTML; any other as HDF5.
HTML_EXTENSIONS = (".html", ".htm")


def is_html(path: str) -> bool:
    """Whether ``--report path`` asks for the HTML page (by its extension)."""
    return os.path.splitext(str(path))[1].lower() in HTML_EXTENSIONS


def write_report(report, path: str, force: bool = False) -> str:
    """Write an ``InspectReport`` or ``RepairReport`` to ``path``: HTML for ``.html``/``.htm``, else HDF5.

    Written to a temporary name, verified, then renamed; an existing file is refused unless ``force``.

    Returns:
        The path written.
    """
    from ckptdoctor.reports.results import RepairReport

    if is_html(path):
        from ckptdoctor.reports.html import write_html

        return write_html(report, path, force=force)
    from ckptdoctor.reports import hdf5

    if isinstance(report, RepairReport):
        return hdf5.write_repair_report(report, path, force=force)
    return hdf5.write_report(report, path, force=force)
