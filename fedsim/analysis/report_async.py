"""What the report does for asynchronous runs: their wording and the updates section.

An asynchronous run (``rounds.kind: async``, docs/async.md) has no rounds: a row of its
``rounds.csv`` is a global model version, and ``updates.csv`` holds one row per update.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedsim.analysis.load import RunData, RunSet
from fedsim.analysis.report_html import figure_html, note_html, table_html
from fedsim.analysis.updates import plot_staleness, update_fates_table

__all__ = ["row_noun", "sync_runs", "async_section"]


def row_noun(runs: Sequence[RunData], plural: bool = True) -> str:
    """Return what a row of ``rounds.csv`` is called for these runs.

    ``rounds`` when no run is asynchronous, ``versions`` when all are, ``rounds /
    versions`` when some are (``round``, ``version``, ``round / version`` if not plural).
    """
    kinds = {run.is_async for run in runs}
    if kinds == {True}:
        return "versions" if plural else "version"
    if kinds == {True, False}:
        return "rounds / versions" if plural else "round / version"
    return "rounds" if plural else "round"


def sync_runs(rs: RunSet) -> RunSet:
    """Return the synchronous runs of ``rs`` (same grid keys), for round-only sections."""
    return RunSet(runs=[r for r in rs.runs if not r.is_async], grid_keys=list(rs.grid_keys))


def async_section(rs: RunSet) -> str:
    """Return the "Asynchronous updates" section: update fates, staleness and weights."""
    parts = ["<h2>Asynchronous updates</h2>\n"]
    table = update_fates_table(rs)
    if table.empty:
        parts.append(note_html("No update rows (<code>updates.csv</code>) in these runs."))
        return "".join(parts)
    parts.append(
        note_html(
            "In an asynchronous run a row of <code>rounds.csv</code> is a global model "
            "version (made by one update under FedAsync, by a buffer of K under FedBuff), "
            "so this report counts versions where it counts rounds of synchronous runs. "
            "One row per configuration and route (who sent the update to which server). "
            "Update counts are <b>per run, the mean over the configuration's seeds</b>; "
            "staleness (in versions of the receiving server, taken when it handled the "
            "update) and weight (the server's coefficient c, docs/async.md) are over the "
            "applied updates of <b>all seeds pooled</b>. Fates: <code>stale</code> = "
            "discarded as staler than <code>max_staleness</code>; <code>dropped</code> = "
            "the device went off line; <code>timed_out</code> = cut by "
            "<code>deadline_s</code>; <code>in_flight</code>, <code>queued</code>, "
            "<code>buffered</code> = not applied yet when the run ended."
        )
    )
    parts.append(table_html(table))
    parts.append(
        figure_html(
            plot_staleness(rs),
            "staleness of updates",
            "Staleness of the applied updates and of those discarded as stale, per "
            "configuration (seeds pooled), as a share of the updates the server handled "
            "(applied + discarded); dashed: max_staleness.",
        )
    )
    return "".join(parts)
