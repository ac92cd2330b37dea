"""How `bitdust` shows what the node answered: rich tables for people, the same data as JSON for scripts.

Every function here takes plain data (what the API returned) and a `rich` console, and does no
I/O of its own, so a unit test renders it into a recording console.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

GOOD = ("CONNECTED", "RUNNING", "ON", "ready", "OK")


def size(value: Any) -> str:
    """Bytes as people read them (binary units)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(number) < 1024 or unit == "TiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return str(value)


def state(value: Any) -> str:
    """A state coloured green when good, yellow otherwise."""
    text = "" if value is None else str(value)
    if not text:
        return ""
    return f"[green]{text}[/]" if text in GOOD else f"[yellow]{text}[/]"


def duration(value: Any) -> str:
    """Seconds as `3d 4h`, `2h 5m`, `4m 10s`."""
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        return ""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def when(value: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(value)))
    except (TypeError, ValueError):
        return "" if value is None else str(value)


def table(title: str, rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]],
          formats: dict[str, Any] | None = None, empty: str = "none") -> Table | str:
    """A table of `rows` with `columns` as (key, heading); keys may be dotted paths into nested items."""
    formats = formats or {}
    items = list(rows)
    if not items:
        return f"[dim]{title}: {empty}[/]"
    out = Table(title=title, title_justify="left", header_style="bold")
    for _, heading in columns:
        out.add_column(heading)
    for item in items:
        out.add_row(*(str(formats.get(key, _plain)(_dig(item, key))) for key, _ in columns))
    return out


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _dig(item: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(item, dict):
            return None
        item = item.get(part)
    return item


def key_values(title: str, doc: dict[str, Any]) -> Table:
    """A two-column table of a flat or nested document (nested keys joined with dots)."""
    out = Table(title=title, title_justify="left", show_header=False)
    out.add_column(style="bold")
    out.add_column()
    for key, value in _flatten(doc):
        out.add_row(key, _plain(value) if not isinstance(value, str) else value)
    return out


def _flatten(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            found += _flatten(value, name + ".")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            found.append((name, f"{len(value)} items"))
        else:
            found.append((name, value))
    return found


# ---- bitdust status -------------------------------------------------------------------------------

def status_screen(doc: dict[str, Any]) -> Group:
    """The one screen of `bitdust status` from what `cli.gather_status` collected."""
    ident = doc.get("identity") or {}
    network = doc.get("network") or {}
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("node", f"{doc.get('home', '')}  (API {doc.get('api', '')})")
    if ident.get("global_id"):
        head.add_row("identity", f"{ident['global_id']}  revision {ident.get('revision', '?')}")
    else:
        head.add_row("identity", f"[yellow]{ident.get('error') or 'none'}[/] "
                                 "(bitdust api identity_create username=NAME)")
    connected = network.get("connected")
    head.add_row("network", "[green]connected[/]" if connected else
                 f"[yellow]not connected[/] ({network.get('state') or network.get('error') or '?'})")
    sup = doc.get("suppliers") or {}
    head.add_row("suppliers", _count_line(sup, "online", "wanted"))
    cus = doc.get("customers") or {}
    head.add_row("customers", str(cus.get("count", 0)) if "error" not in cus else f"[yellow]{cus['error']}[/]")
    space = doc.get("space") or {}
    if "error" in space:
        head.add_row("space", f"[yellow]{space['error']}[/]")
    else:
        head.add_row("space used", f"{size(space.get('used'))} of {size(space.get('needed'))} asked of suppliers")
        head.add_row("space donated", f"{size(space.get('donated_used'))} used of {size(space.get('donated'))}")
    transfers = doc.get("transfers") or {}
    head.add_row("transfers", "[yellow]" + transfers["error"] + "[/]" if "error" in transfers else
                 f"{transfers.get('uploads', 0)} uploads, {transfers.get('downloads', 0)} downloads running")
    programs = table("programs", doc.get("programs") or [],
                     [("name", "program"), ("state", "state"), ("bus", "on bus"), ("pid", "pid"),
                      ("uptime_seconds", "up for")], {"state": state, "uptime_seconds": duration})
    return Group(Panel(head, title="bitdust", title_align="left"), programs)


def _count_line(section: dict[str, Any], have: str, want: str) -> str:
    if "error" in section:
        return f"[yellow]{section['error']}[/]"
    got, wanted = int(section.get(have) or 0), int(section.get(want) or 0)
    colour = "green" if wanted and got >= wanted else "yellow"
    return f"[{colour}]{got}[/] {have} / {wanted} {want}"


# ---- per command ----------------------------------------------------------------------------------

def files_table(items: list[dict[str, Any]]) -> Table | str:
    rows = []
    for item in items:
        versions = item.get("versions") or []
        latest = versions[0] if versions else {}
        rows.append({"path": item.get("path"), "key": item.get("key_alias"), "type": item.get("type"),
                     "size": item.get("size"),
                     "versions": len(versions), "state": latest.get("state", ""), "latest": item.get("latest")})
    return table("files", rows, [("path", "path"), ("key", "key"), ("type", "type"), ("size", "size"),
                                 ("versions", "versions"), ("state", "state"), ("latest", "stored")],
                 {"size": size, "state": state}, empty="no files")


def file_info(item: dict[str, Any], suppliers: list[dict[str, Any]]) -> Group:
    versions = item.get("versions") or []
    parts: list[Any] = [key_values(item.get("remote_path") or "file", {
        "type": item.get("type"), "size": size(item.get("size")), "key": item.get("key_id"),
        "stored": item.get("latest")})]
    parts.append(table("versions", versions,
                       [("version", "version"), ("state", "state"), ("progress", "progress"), ("size", "size"),
                        ("time", "time"), ("ecc_map", "ecc"), ("fragments", "fragments"), ("error", "error")],
                       {"state": state, "size": size, "time": when}))
    latest = next((v for v in versions if v.get("state") == "ready"), versions[0] if versions else None)
    if latest is not None:
        by_position = {s.get("position"): s for s in suppliers}
        rows = [{"position": p.get("position"), "fragments": p.get("fragments"),
                 "supplier": (by_position.get(p.get("position")) or {}).get("global_id", ""),
                 "state": (by_position.get(p.get("position")) or {}).get("supplier_state", "")}
                for p in latest.get("suppliers") or []]
        parts.append(table(f"redundancy of {latest.get('version')} ({latest.get('ecc_map')})", rows,
                           [("position", "position"), ("supplier", "supplier"), ("state", "state"),
                            ("fragments", "fragments")], {"state": state}))
    return Group(*parts)


def transfers_table(uploads: list[dict[str, Any]], downloads: list[dict[str, Any]]) -> Table | str:
    rows = [dict(j, kind="upload") for j in uploads] + [dict(j, kind="download") for j in downloads]
    return table("transfers", rows, [("kind", "kind"), ("remote_path", "remote path"), ("progress", "progress"),
                                     ("bytes_processed", "done"), ("total_size", "size"), ("block_number", "blocks"),
                                     ("state", "state")],
                 {"bytes_processed": size, "total_size": size, "state": state}, empty="nothing running")


def suppliers_table(items: list[dict[str, Any]]) -> Table | str:
    return table("suppliers", items, [("position", "position"), ("global_id", "supplier"),
                                      ("supplier_state", "state"), ("contact_state", "contact"),
                                      ("connected", "since")],
                 {"supplier_state": state, "contact_state": state}, empty="none hired")


def customers_table(items: list[dict[str, Any]]) -> Table | str:
    return table("customers", items, [("global_id", "customer"), ("contact_state", "contact"),
                                      ("allocated", "allocated"), ("used", "used")],
                 {"contact_state": state, "allocated": size, "used": size}, empty="none")


def services_table(items: list[dict[str, Any]]) -> Table | str:
    return table("services", items, [("name", "service"), ("state", "state"), ("enabled", "enabled"),
                                     ("process", "program")], {"state": state})


def history_table(items: list[dict[str, Any]]) -> Table | str:
    rows = [item.get("doc") or item for item in items]
    return table("messages", rows, [("payload.time", "time"), ("direction", "dir"), ("sender.glob_id", "from"),
                                    ("recipient.glob_id", "to"), ("state", "state"), ("payload.data", "data")],
                 {"payload.time": when, "payload.data": _data}, empty="no messages")


def _data(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"message"}:
        return str(value["message"])
    return _plain(value)


def generic_table(title: str, items: list[dict[str, Any]], limit: int = 6) -> Table | str:
    """A table of any list of flat-ish items, with the first few scalar fields as columns."""
    keys: list[str] = []
    for item in items:
        for key, value in item.items():
            if key not in keys and not isinstance(value, (dict, list)) and len(keys) < limit:
                keys.append(key)
    return table(title, items, [(k, k) for k in keys])


def event_line(event: dict[str, Any]) -> str:
    from common import codec

    data = event.get("data")
    return f"{when(event.get('created'))}  {event.get('event_id')}  " + (codec.dumps(data).decode() if data else "")


def render(console: Console, *parts: Any) -> None:
    for part in parts:
        console.print(part)
