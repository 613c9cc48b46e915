"""The Markdown table and the PNG chart, each figure also as a ratio to the gateway of the same run."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.bench.targets import LABELS

Result = dict[str, Any]


def machine() -> str:
    """Cores and CPU model, memory, kernel and Python: what a figure was measured on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def _get(result: Result, *path: str) -> float:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return float("nan")
        value = value[key]
    return float(value)


def _getter(*path: str) -> Callable[[Result], float]:
    """``_get`` at ``path``, bound now (a lambda in a loop would see the loop's last values)."""
    return lambda result: _get(result, *path)


def _rows(rates: list[str]) -> list[tuple[str, Callable[[Result], float], str, bool]]:
    """(label, getter, format, higher is better)."""
    rows: list[tuple[str, Callable[[Result], float], str, bool]] = [
        ("fan-out deliveries/s", lambda r: _get(r, "fanout", "deliveries_per_second"), "{:,.0f}", True),
        ("fan-out delivery ratio", lambda r: _get(r, "fanout", "delivery_ratio"), "{:.4f}", True),
        (
            "fan-out server CPU per delivery (µs)",
            lambda r: _get(r, "fanout", "server_cpu_us_per_delivery"),
            "{:.1f}",
            False,
        ),
    ]
    for rate in rates:
        for key, name in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"), ("max_ms", "max")):
            rows.append(
                (
                    f"latency @{rate}/s {name} (ms)",
                    _getter("latency", rate, key),
                    "{:.2f}",
                    False,
                )
            )
        rows.append((f"loss @{rate}/s", _getter("latency", rate, "loss"), "{:.4f}", False))
    rows += [
        ("connect rate (conn/s)", lambda r: _get(r, "capacity", "connect_rate"), "{:,.0f}", True),
        (
            "connect server CPU per connection (µs)",
            lambda r: _get(r, "capacity", "connect_cpu_us_per_connection"),
            "{:.0f}",
            False,
        ),
        ("connect failures", lambda r: _get(r, "capacity", "failed"), "{:.0f}", False),
        ("idle connections still open", lambda r: _get(r, "capacity", "still_open"), "{:.0f}", True),
        (
            "RSS per idle connection (KiB)",
            lambda r: _get(r, "capacity", "rss_kib_per_connection"),
            "{:.1f}",
            False,
        ),
        ("Redis client connections", lambda r: _get(r, "capacity", "redis_clients"), "{:.0f}", False),
        (
            "Redis commands per delivery",
            lambda r: _get(r, "fanout", "redis_commands_per_delivery"),
            "{:.3f}",
            False,
        ),
        (
            "Redis output bytes per delivery",
            lambda r: _get(r, "fanout", "redis_out_bytes_per_delivery"),
            "{:.1f}",
            False,
        ),
    ]
    return rows


def _fmt(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else spec.format(value)


def _ratio(value: float, base: float) -> str:
    if math.isnan(value) or math.isnan(base) or base == 0:
        return "n/a"
    return f"{value / base:.2f}x"


def markdown(results: list[Result], meta: dict[str, Any]) -> str:
    base = next((r for r in results if r["target"] == "gateway"), None)
    rates = [str(rate) for rate in meta["sizes"]["rates"]]
    header = "| metric | " + " | ".join(LABELS[r["target"]] for r in results) + " |"
    lines = [header, "|---|" + "---|" * len(results)]
    for label, getter, spec, _ in _rows(rates):
        cells = []
        for result in results:
            value = getter(result)
            cell = _fmt(value, spec)
            if base is not None and result is not base:
                cell += f" ({_ratio(value, getter(base))})"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    sizes = meta["sizes"]
    notes = [
        "",
        f"Run {meta['started']} on {meta['machine']}; ratios in brackets are to the gateway of the same run.",
        f"Sizes: fan-out {sizes['users']} users x {sizes['per_user']} connections, "
        f"{sizes['messages']} messages; latency {', '.join(rates)} msg/s for {sizes['duration']:g} s; "
        f"capacity {sizes['idle']} idle connections held {sizes['hold']:g} s; "
        f"{sizes['processes']} client processes.",
    ]
    for result in results:
        if "error" in result:
            notes.append(f"- {LABELS[result['target']]}: {result['error']}")
    return "\n".join(lines + notes) + "\n"


def chart(results: list[Result], meta: dict[str, Any], path: Path) -> bool:
    """Draw the chart to ``path``; False without matplotlib (the bench extra), which it needs."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [str(rate) for rate in meta["sizes"]["rates"]]
    # (title, getter, log scale): latency spans milliseconds to seconds across the targets.
    panels: list[tuple[str, Callable[[Result], float], bool]] = [
        (
            "fan-out deliveries/s (higher is better)",
            lambda r: _get(r, "fanout", "deliveries_per_second"),
            False,
        ),
        (
            "fan-out server CPU per delivery, µs (lower is better)",
            lambda r: _get(r, "fanout", "server_cpu_us_per_delivery"),
            False,
        ),
    ]
    panels += [
        (
            f"p99 latency @{rate}/s, ms, log scale (lower is better)",
            _getter("latency", rate, "p99_ms"),
            True,
        )
        for rate in rates[-2:]
    ]
    panels += [
        ("connect rate, conn/s (higher is better)", lambda r: _get(r, "capacity", "connect_rate"), False),
        (
            "RSS per idle connection, KiB (lower is better)",
            lambda r: _get(r, "capacity", "rss_kib_per_connection"),
            False,
        ),
        (
            "Redis commands per delivery (lower is better)",
            lambda r: _get(r, "fanout", "redis_commands_per_delivery"),
            False,
        ),
        (
            "Redis output bytes per delivery (lower is better)",
            lambda r: _get(r, "fanout", "redis_out_bytes_per_delivery"),
            False,
        ),
    ]
    names = [r["target"] for r in results]
    base = next((r for r in results if r["target"] == "gateway"), None)
    columns = (len(panels) + 1) // 2
    figure, axes = plt.subplots(2, columns, figsize=(5 * columns, 8))
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    for axis, (title, getter, log_scale) in zip(axes.flat, panels, strict=False):
        values = [getter(r) for r in results]
        shown = [0.0 if math.isnan(v) else v for v in values]
        bars = axis.bar(names, shown, color=["#2b7bba" if n == "gateway" else "#999999" for n in names])
        for bar, value in zip(bars, values, strict=True):
            text = "n/a" if math.isnan(value) else f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"
            if base is not None and not math.isnan(value):
                text += f"\n{_ratio(value, getter(base))}"
            axis.annotate(
                text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom"
            )
        axis.set_title(title, fontsize=10)
        if log_scale and all(v > 0 for v in shown):
            axis.set_yscale("log")
            axis.margins(y=0.5)
        else:
            axis.margins(y=0.25)
    figure.suptitle(f"WebSocket gateway vs Python alternatives, 2 workers each ({meta['started']})")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True
