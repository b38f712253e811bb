"""node_exporter textfile metrics, written after every reconcile (off unless configured).

``vmgenc_metrics_file`` names the file (e.g.
``/var/tmp/node_exporter/vmgenc.prom``).  It is replaced atomically: a hidden
temp file in the same directory (the collector only reads ``*.prom``), fsync,
rename; a scrape never sees half a file.
"""

from __future__ import annotations

import os

from .config import CLASSES, Config
from .history import History

HEADER = "# vmgenc-tools textfile metrics\n"


def render(counts: dict[str, int], last_change_ts: float | None, hooks_failed: int,
           pending: int, no_id: bool) -> str:
    """The exposition text (Prometheus text format 0.0.4)."""
    out = [HEADER]
    out.append("# HELP vmgenc_generation_changes_total VM generation changes recorded, "
               "by class.\n# TYPE vmgenc_generation_changes_total counter\n")
    for cls in CLASSES:
        out.append(f'vmgenc_generation_changes_total{{class="{cls}"}} {counts.get(cls, 0)}\n')
    out.append("# HELP vmgenc_last_change_timestamp_seconds When the last change was detected "
               "(Unix time; 0 if none).\n# TYPE vmgenc_last_change_timestamp_seconds gauge\n")
    out.append(f"vmgenc_last_change_timestamp_seconds {last_change_ts or 0:.6f}\n")
    out.append("# HELP vmgenc_hooks_failed Hooks of the last change whose latest run did not "
               "succeed.\n# TYPE vmgenc_hooks_failed gauge\n")
    out.append(f"vmgenc_hooks_failed {hooks_failed}\n")
    out.append("# HELP vmgenc_pending Changes whose hooks have not settled.\n"
               "# TYPE vmgenc_pending gauge\n")
    out.append(f"vmgenc_pending {pending}\n")
    out.append("# HELP vmgenc_no_id 1 if the hypervisor presents an all-zero generation ID.\n"
               "# TYPE vmgenc_no_id gauge\n")
    out.append(f"vmgenc_no_id {1 if no_id else 0}\n")
    return "".join(out)


def collect(hist: History) -> str:
    """Render from the history (every query is O(1) or bounded by an index)."""
    from datetime import datetime

    counts = hist.class_counts()
    last = hist.last_change(real_only=True)
    newest = hist.last_change()
    ts = datetime.fromisoformat(last.detected_at).timestamp() if last else None
    failed = 0
    if last is not None and last.status != "done":
        failed = sum(1 for r in last.latest_hooks() if r.status not in ("ok", "running"))
    return render(counts, ts, failed, len(hist.pending()),
                  newest is not None and newest.is_no_id)


def write_file(path: str, text: str) -> None:
    """Replace ``path`` atomically (mode 0644, readable by the collector)."""
    d, base = os.path.split(path)
    tmp = os.path.join(d, f".{base}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        data = memoryview(text.encode())
        while data:  # os.write may write less than asked
            data = data[os.write(fd, data):]
        os.fchmod(fd, 0o644)  # whatever the umask
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


def write(config: Config, hist: History) -> str | None:
    """Write the metrics file if ``vmgenc_metrics_file`` is set; returns its path."""
    if not config.metrics_file:
        return None
    path = config.path(config.metrics_file)
    write_file(path, collect(hist))
    return path
