"""Per-device bandwidth and availability traces read from CSV files (docs/traces.md).

Both formats name their target in a ``device`` column: an integer device id (``17``) or a
device group ``EDGE_NAME/GROUP_INDEX`` (``home/0``: every device of the first group under
the edge named ``home``). A device named by its own id follows its own rows, whatever
group rows also name it. A device named by neither is not covered: it keeps the drawn
model.

Rows are kept per target in flat arrays (memory proportional to the rows, not to the
population); a device finds its target through its group's id range, and a lookup is a
bisection of its target's rows.
"""

from __future__ import annotations

import bisect
import csv
import math
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fedsim.errors import InputError
from fedsim.sim.population import Population
from fedsim.yamlio import read_text_file

BANDWIDTH_HEADER = ("device", "time_s", "up_mbps", "down_mbps")
AVAILABILITY_HEADER = ("device", "on_s", "off_s")
MAX_PROBLEMS = 100  # lines listed in one error; the rest are counted
_BITS_PER_BYTE = 8


class _Problems:
    """Problem lines of one file: ``file: where: what was expected``, listed by line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[tuple[int, str]] = []

    def add(self, line: int, where: str, what: str) -> None:
        self.lines.append((line, f"{self.source}: {where}: {what}"))

    def raise_if_any(self) -> None:
        if not self.lines:
            return
        ordered = [text for _, text in sorted(self.lines, key=lambda item: item[0])]
        shown = ordered[:MAX_PROBLEMS]
        if len(ordered) > MAX_PROBLEMS:
            more = len(ordered) - MAX_PROBLEMS
            shown.append(f"{self.source}: (file): {more} more problems not listed")
        raise InputError(shown)


def _rows(
    path: Path, header: tuple[str, ...], problems: _Problems
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, stripped cells)`` of every non-blank data row.

    A missing or unreadable file, an empty file or a wrong header raises at once; a row
    with the wrong number of cells is recorded in ``problems`` and skipped.
    """
    source = problems.source
    text = read_text_file(path, encoding="utf-8-sig")  # a byte-order mark is tolerated
    expected = ",".join(header)
    reader = csv.reader(text.splitlines())
    first = next(reader, None)
    if first is None or not any(c.strip() for c in first):
        what = "the file is empty" if not text.strip() else "the first line is blank"
        raise InputError(f"{source}: line 1: expected the header '{expected}' ({what})")
    got = tuple(c.strip() for c in first)
    if got != header:
        raise InputError(
            f"{source}: line 1: expected the header '{expected}' (got {','.join(got)!r})"
        )
    any_row = False
    for cells in reader:
        line = reader.line_num
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue  # a blank line
        any_row = True
        if len(cells) != len(header):
            problems.add(
                line,
                f"line {line}",
                f"expected {len(header)} cells ({expected}) (got {len(cells)})",
            )
            continue
        yield line, cells
    if not any_row:
        problems.add(2, "line 2", "expected at least one row after the header (got none)")


def _number(cell: str) -> float | None:
    """Return the cell as a float, or None when it is not a number (NaN is not)."""
    try:
        value = float(cell)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _fmt(value: float) -> str:
    return f"{value:g}"


class _Selector:
    """Parses the ``device`` column against a population: a device id or ``EDGE/GROUP``."""

    def __init__(self, population: Population) -> None:
        self.num_devices = population.num_devices
        self.groups = population.groups
        self.edge_groups: dict[str, list[int]] = {name: [] for name in population.edge_names}
        for index, group in enumerate(population.groups):
            self.edge_groups[population.edge_names[group.edge_id]].append(index)

    def _edge_list(self) -> str:
        names = list(self.edge_groups)
        shown = ", ".join(names[:8])
        return shown + (f", ... ({len(names)} edges)" if len(names) > 8 else "")

    def parse(self, cell: str) -> tuple[str, int] | str:
        """Return ``("device", id)`` or ``("group", group index)``, or what was expected."""
        if cell.isascii() and cell.isdigit():
            device = int(cell)
            if device < self.num_devices:
                return ("device", device)
            return f"expected a device id in 0..{self.num_devices - 1} (got {cell!r})"
        edge, slash, index = cell.rpartition("/")
        if not slash:
            return (
                "expected a device id (e.g. 17) or a device group EDGE_NAME/GROUP_INDEX "
                f"(e.g. {next(iter(self.edge_groups))}/0) (got {cell!r})"
            )
        groups = self.edge_groups.get(edge)
        if groups is None:
            return f"expected an edge name before '/', one of {self._edge_list()} (got {cell!r})"
        if not (index.isascii() and index.isdigit()) or int(index) >= len(groups):
            return (
                f"expected a group index in 0..{len(groups) - 1} after '{edge}/' "
                f"(edge {edge!r} has {len(groups)} device groups) (got {cell!r})"
            )
        return ("group", groups[int(index)])


class _Trace:
    """Targets (device ids and device groups) and how a device finds its own.

    ``targets`` are ``("device", id)`` or ``("group", index)`` in the order their rows are
    stored; target ``k`` owns rows ``offsets[k]:offsets[k + 1]`` of the flat arrays.
    """

    def __init__(
        self,
        source: str,
        population: Population,
        targets: list[tuple[str, int]],
        offsets: list[int],
    ) -> None:
        self.source = source
        self._offsets = array("q", offsets)
        self._device_target: dict[int, int] = {}
        spans: list[tuple[int, int, int]] = []  # (first device id, end, target)
        for k, (kind, key) in enumerate(targets):
            if kind == "device":
                self._device_target[key] = k
            else:
                group = population.groups[key]
                spans.append((group.first_device_id, group.first_device_id + group.count, k))
        spans.sort()
        self._group_first = [s[0] for s in spans]
        self._group_end = [s[1] for s in spans]
        self._group_target = [s[2] for s in spans]
        self._device_ids = np.array(sorted(self._device_target), dtype=np.int64)
        self._np_first = np.array(self._group_first, dtype=np.int64)
        self._np_end = np.array(self._group_end, dtype=np.int64)
        self.num_targets = len(targets)

    @property
    def num_rows(self) -> int:
        """Return how many rows (intervals, for availability) the trace holds."""
        return int(self._offsets[-1])

    def _target(self, device_id: int) -> int:
        """Return the device's target, or -1 when the trace does not cover it."""
        target = self._device_target.get(device_id)
        if target is not None:
            return target
        i = bisect.bisect_right(self._group_first, device_id) - 1
        if i >= 0 and device_id < self._group_end[i]:
            return self._group_target[i]
        return -1

    def _span(self, device_id: int) -> tuple[int, int]:
        target = self._target(device_id)
        if target < 0:
            raise KeyError(f"device {device_id} is not covered by the trace {self.source}")
        return self._offsets[target], self._offsets[target + 1]

    def covers(self, device_id: int) -> bool:
        """Return whether the trace has rows for the device (its own or its group's)."""
        return self._target(int(device_id)) >= 0

    def covers_mask(self, device_ids: np.ndarray) -> np.ndarray:
        """Return :meth:`covers` for each device id (vectorised)."""
        ids = np.asarray(device_ids, dtype=np.int64)
        covered = np.isin(ids, self._device_ids)
        if self._np_first.shape[0]:
            i = np.searchsorted(self._np_first, ids, side="right") - 1
            in_group = (i >= 0) & (ids < self._np_end[np.maximum(i, 0)])
            covered |= in_group
        return covered


def _target_name(target: tuple[str, int], population: Population) -> str:
    kind, key = target
    if kind == "device":
        return f"device {key}"
    group = population.groups[key]
    local = sum(1 for g in population.groups[:key] if g.edge_id == group.edge_id)
    return f"{population.edge_names[group.edge_id]}/{local}"


class BandwidthTrace(_Trace):
    """Piecewise-constant up and down rates per device (Mbps, 1 Mbps = 10^6 bit/s).

    A row holds from its ``time_s`` until the next row of the same target; the last row
    holds for ever; before time 0 the first row holds. Build it with
    :func:`load_bandwidth_trace`.
    """

    def __init__(
        self,
        source: str,
        population: Population,
        targets: list[tuple[str, int]],
        rows: list[list[tuple[float, float, float]]],
    ) -> None:
        offsets = [0]
        self._times, self._up, self._down = array("d"), array("d"), array("d")
        for target_rows in rows:
            for time_s, up, down in target_rows:
                self._times.append(time_s)
                self._up.append(up)
                self._down.append(down)
            offsets.append(len(self._times))
        super().__init__(source, population, targets, offsets)

    def _row(self, device_id: int, t_s: float) -> tuple[int, int]:
        """Return the index of the row in force at ``t_s`` and the end of the target's rows."""
        lo, hi = self._span(device_id)
        i = bisect.bisect_right(self._times, t_s, lo, hi) - 1
        return max(i, lo), hi

    def rate_mbps(self, device_id: int, t_s: float, up: bool) -> float:
        """Return the rate in force at ``t_s``: the row with the greatest ``time_s <= t_s``.

        Raises
        ------
        KeyError
            The trace does not cover the device.
        """
        i, _ = self._row(device_id, t_s)
        return self._up[i] if up else self._down[i]

    def next_change_s(self, device_id: int, t_s: float) -> float:
        """Return the first row time strictly after ``t_s`` (``math.inf`` if none)."""
        i, hi = self._row(device_id, t_s)
        j = max(i + 1, bisect.bisect_right(self._times, t_s, i, hi))
        return self._times[j] if j < hi else math.inf

    def bytes_between(self, device_id: int, start_s: float, end_s: float, up: bool) -> float:
        """Return the bytes a transfer alone on the device's link moves from start to end."""
        rates = self._up if up else self._down
        i, hi = self._row(device_id, start_s)
        t, bits = start_s, 0.0
        while t < end_s:
            until = min(end_s, self._times[i + 1] if i + 1 < hi else math.inf)
            bits += rates[i] * 1e6 * (until - t)
            t, i = until, i + 1
        return bits / _BITS_PER_BYTE

    def transfer_end_s(self, device_id: int, start_s: float, num_bytes: float, up: bool) -> float:
        """Return when ``num_bytes`` started at ``start_s`` have arrived (no round trip).

        The rate follows the trace as it changes during the transfer.
        """
        rates = self._up if up else self._down
        i, hi = self._row(device_id, start_s)
        t, bits = start_s, float(num_bytes) * _BITS_PER_BYTE
        while True:
            bits_per_s = rates[i] * 1e6
            until = self._times[i + 1] if i + 1 < hi else math.inf
            if bits <= bits_per_s * (until - t):
                return t + bits / bits_per_s
            bits -= bits_per_s * (until - t)
            t, i = until, i + 1


class AvailabilityTrace(_Trace):
    """On-line intervals ``[on_s, off_s)`` per device; a covered device is off line outside them.

    Intervals of a target are sorted; touching ones (``off_s`` of one equal to ``on_s`` of
    the next) are merged, so :meth:`offline_after` is when the device really goes off line.
    Build it with :func:`load_availability_trace`.
    """

    def __init__(
        self,
        source: str,
        population: Population,
        targets: list[tuple[str, int]],
        intervals: list[list[tuple[float, float]]],
    ) -> None:
        offsets = [0]
        self._on, self._off = array("d"), array("d")
        for target_intervals in intervals:
            for on_s, off_s in target_intervals:
                self._on.append(on_s)
                self._off.append(off_s)
            offsets.append(len(self._on))
        super().__init__(source, population, targets, offsets)

    def _interval(self, device_id: int, t_s: float) -> int:
        """Return the index of the interval holding ``t_s``, or -1."""
        lo, hi = self._span(device_id)
        i = bisect.bisect_right(self._on, t_s, lo, hi) - 1
        return i if i >= lo and t_s < self._off[i] else -1

    def online_at(self, device_id: int, t_s: float) -> bool:
        """Return whether the device is on line at ``t_s``.

        Raises
        ------
        KeyError
            The trace does not cover the device.
        """
        return self._interval(device_id, t_s) >= 0

    def offline_after(self, device_id: int, t_s: float) -> float:
        """Return the end of the on-line interval holding ``t_s`` (``t_s`` if off line then)."""
        i = self._interval(device_id, t_s)
        return self._off[i] if i >= 0 else t_s


def _group_rows(
    targets: dict[tuple[str, int], list[tuple[int, tuple[float, ...]]]],
) -> tuple[list[tuple[str, int]], list[list[tuple[int, tuple[float, ...]]]]]:
    """Return the targets in a stable order (devices by id, then groups) and their rows."""
    order = sorted(targets, key=lambda k: (k[0] != "device", k[1]))
    return order, [targets[k] for k in order]


def load_bandwidth_trace(path: str | Path, population: Population) -> BandwidthTrace:
    """Read and check a bandwidth trace (header ``device,time_s,up_mbps,down_mbps``).

    Parameters
    ----------
    path : str or Path
        The CSV file.
    population : Population
        The devices the ``device`` column names.

    Raises
    ------
    InputError
        One line per problem (all of them), naming the file, the line and the column.
    """
    path = Path(path)
    problems = _Problems(str(path))
    selector = _Selector(population)
    rows: dict[tuple[str, int], list[tuple[int, tuple[float, ...]]]] = {}
    for line, (device, time_cell, up_cell, down_cell) in _rows(path, BANDWIDTH_HEADER, problems):
        target = selector.parse(device)
        if isinstance(target, str):
            problems.add(line, f"line {line}, column device", target)
        time_s = _number(time_cell)
        if time_s is None or not (0 <= time_s < math.inf):
            problems.add(
                line,
                f"line {line}, column time_s",
                f"expected a finite number of seconds >= 0 (got {time_cell!r})",
            )
            time_s = None
        rates = []
        for column, cell in (("up_mbps", up_cell), ("down_mbps", down_cell)):
            rate = _number(cell)
            if rate is None or not (0 < rate < math.inf):
                problems.add(
                    line,
                    f"line {line}, column {column}",
                    f"expected a positive finite number of Mbps (got {cell!r})",
                )
                rate = None
            rates.append(rate)
        if isinstance(target, str) or time_s is None:
            continue
        seen = rows.setdefault(target, [])
        if not seen and time_s != 0:
            problems.add(
                line,
                f"line {line}, column time_s",
                f"expected 0 in the first row of {_target_name(target, population)} "
                f"(got {time_cell!r})",
            )
        elif seen and time_s <= seen[-1][1][0]:
            before_line, (before_s, *_) = seen[-1]
            problems.add(
                line,
                f"line {line}, column time_s",
                f"expected a time after {_fmt(before_s)}, the time of the previous row of "
                f"{_target_name(target, population)} (line {before_line}); times must "
                f"increase per target (got {time_cell!r})",
            )
            continue
        up, down = (1.0 if r is None else r for r in rates)  # a bad rate is reported above
        seen.append((line, (time_s, up, down)))
    problems.raise_if_any()
    order, grouped = _group_rows(rows)
    values = [[(r[0], r[1], r[2]) for _, r in target_rows] for target_rows in grouped]
    return BandwidthTrace(str(path), population, order, values)


def load_availability_trace(path: str | Path, population: Population) -> AvailabilityTrace:
    """Read and check an availability trace (header ``device,on_s,off_s``).

    Each row is an on-line interval ``[on_s, off_s)``, ``0 <= on_s < off_s``, ``off_s``
    possibly ``inf``; a target's intervals may come in any order but must not overlap.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    population : Population
        The devices the ``device`` column names.

    Raises
    ------
    InputError
        One line per problem (all of them), naming the file, the line and the column.
    """
    path = Path(path)
    problems = _Problems(str(path))
    selector = _Selector(population)
    rows: dict[tuple[str, int], list[tuple[int, tuple[float, ...]]]] = {}
    for line, (device, on_cell, off_cell) in _rows(path, AVAILABILITY_HEADER, problems):
        target = selector.parse(device)
        if isinstance(target, str):
            problems.add(line, f"line {line}, column device", target)
        on_s = _number(on_cell)
        if on_s is None or not (0 <= on_s < math.inf):
            problems.add(
                line,
                f"line {line}, column on_s",
                f"expected a finite number of seconds >= 0 (got {on_cell!r})",
            )
            on_s = None
        off_s = _number(off_cell)
        if off_s is None or (on_s is not None and off_s <= on_s) or off_s <= 0:
            after = f"on_s ({_fmt(on_s)})" if on_s is not None else "on_s"
            problems.add(
                line,
                f"line {line}, column off_s",
                f"expected a number of seconds greater than {after}, or inf (got {off_cell!r})",
            )
            off_s = None
        if not isinstance(target, str) and on_s is not None and off_s is not None:
            rows.setdefault(target, []).append((line, (on_s, off_s)))
    order, grouped = _group_rows(rows)
    intervals: list[list[tuple[float, float]]] = []
    for target, target_rows in zip(order, grouped, strict=True):
        target_rows.sort(key=lambda r: (r[1][0], r[0]))
        merged: list[tuple[float, float]] = []
        latest: tuple[int, tuple[float, ...]] | None = None  # the row reaching furthest so far
        for line, (on_s, off_s) in target_rows:
            if latest is not None and on_s < latest[1][1]:
                other_line, (other_on, other_off) = latest
                problems.add(
                    line,
                    f"line {line}, columns on_s,off_s",
                    f"expected an interval not overlapping [{_fmt(other_on)}, "
                    f"{_fmt(other_off)}) of {_target_name(target, population)} "
                    f"(line {other_line}) (got [{_fmt(on_s)}, {_fmt(off_s)}))",
                )
            if latest is None or off_s > latest[1][1]:
                latest = (line, (on_s, off_s))
            if merged and on_s <= merged[-1][1]:  # touching (or, when reported, overlapping)
                merged[-1] = (merged[-1][0], max(merged[-1][1], off_s))
            else:
                merged.append((on_s, off_s))
        intervals.append(merged)
    problems.raise_if_any()
    return AvailabilityTrace(str(path), population, order, intervals)
