"""``devices``: what this machine can profile and benchmark on."""
from __future__ import annotations

import click

from ._common import emit, table


def _device_details(d: dict) -> str:
    if d["kind"] == "cpu":
        phys = f", {d['physical_cores']} physical" if d.get("physical_cores") else ""
        return f"{d['cores']} cores{phys}, {d['arch']}; specs: {', '.join(d['specs']) or 'none'}"
    if d["kind"] == "cuda":
        bits = [f"{d['memory_gib']} GiB" if d.get("memory_gib") else None,
                f"cc {d['compute_capability']}" if d.get("compute_capability") else None,
                d.get("reason")]
        return ", ".join(b for b in bits if b)
    bits = [f"serial {d['serial']}" if d.get("serial") else None,
            d.get("abi"), f"Android {d['android']}" if d.get("android") else None,
            d.get("reason")]
    return ", ".join(b for b in bits if b)


def table_inventory() -> dict:
    """The latency tables this machine has: profiled ones in the cache (per device slug and
    space, with threads, precision where recorded, and whether complete) and the built-in
    targets shipped with the package."""
    import json

    from luts.table import BUILTIN_TABLES, builtin_table_path, cache_dir

    def describe(path, **extra):
        try:
            meta = json.loads(path.read_text(encoding="utf-8")).get("meta") or {}
        except (OSError, ValueError, AttributeError) as exc:
            return {"path": str(path), "error": f"unreadable: {exc}", **extra}
        return {"space": meta.get("space") or path.stem, "device": meta.get("device"),
                "threads": meta.get("threads"),
                "precision": meta.get("precision") or meta.get("dtype"),
                "complete": meta.get("complete", True), "path": str(path), **extra}

    root = cache_dir() / "luts"
    profiled = [describe(p, slug=p.parent.name) for p in sorted(root.glob("*/*.json"))
                if not p.name.endswith(".progress.json") and not p.name.startswith(".")]
    builtin = [describe(builtin_table_path(n), target=n) for n in BUILTIN_TABLES]
    return {"profiled": profiled, "builtin": builtin}


def _tables_human(inv: dict) -> str:
    def row(t, name):
        extra = [f"{t['threads']} thread(s)" if t.get("threads") else None,
                 t.get("precision"), None if t.get("complete", True) else "INCOMPLETE (resume "
                 "with the same profile command)", t.get("error")]
        return (name, t.get("space", "-"), ", ".join(e for e in extra if e) or "-", t["path"])

    rows = [row(t, t.get("device") or t["slug"]) for t in inv["profiled"]]
    rows += [row(t, f"{t['target']} (built-in target)") for t in inv["builtin"]]
    return "latency tables (usable as --target):\n" + table(
        rows, ("device / target", "space", "details", "file"))


@click.command()
@click.option("--no-adb", is_flag=True, help="Do not probe the registered ADB devices.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def devices(no_adb: bool, as_json: bool) -> None:
    """List what can be profiled here: the local CPU, CUDA GPUs, and the ADB devices of the
    registry with their state (online, unauthorized, offline); then the latency tables there
    already are (profiled here, per space; and the built-in targets such as note10).

    The SPEC column is what `bench --devices` and `profile --device` take.
    """
    from profilers import discovery

    data = discovery.discover(adb=not no_adb)
    if not no_adb and not any(d["kind"] == "adb" for d in data):
        from profilers.devices import registry_path

        click.echo(f"note: no ADB devices registered ({registry_path()} does not exist or is "
                   f"empty; see the README, 'Android phones')", err=True)

    inv = table_inventory()
    from profilers.base import DeviceSpec, DeviceSpecError

    for d in data:
        try:
            slug = DeviceSpec.parse(d["spec"]).slug
        except DeviceSpecError:
            slug = None
        # JSON stays a list of devices (scripts read it); each says which tables it has
        d["tables"] = [{k: v for k, v in t.items() if k != "slug"}
                       for t in inv["profiled"] if t["slug"] == slug]

    def human(ds):
        def details(d):
            spaces = ", ".join(sorted(t.get("space") or "?" for t in d["tables"]))
            return _device_details(d) + (f"; tables: {spaces}" if spaces else "; no tables yet")

        rows = [(d["spec"], d["kind"], d["state"], d.get("name") or "-", details(d))
                for d in ds]
        return (table(rows, ("spec", "kind", "state", "name", "details"))
                + "\n\n" + _tables_human(inv))

    emit(data, as_json, human)
