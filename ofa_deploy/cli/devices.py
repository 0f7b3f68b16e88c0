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


@click.command()
@click.option("--no-adb", is_flag=True, help="Do not probe the registered ADB devices.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def devices(no_adb: bool, as_json: bool) -> None:
    """List what can be profiled here: the local CPU, CUDA GPUs, and the ADB devices of the
    registry with their state (online, unauthorized, offline).

    The SPEC column is what `bench --devices` and `profile --device` take.
    """
    from profilers import discovery

    data = discovery.discover(adb=not no_adb)
    if not no_adb and not any(d["kind"] == "adb" for d in data):
        from profilers.devices import registry_path

        click.echo(f"note: no ADB devices registered ({registry_path()} does not exist or is "
                   f"empty; see the README, 'Android phones')", err=True)

    def human(ds):
        rows = [(d["spec"], d["kind"], d["state"], d.get("name") or "-", _device_details(d))
                for d in ds]
        return table(rows, ("spec", "kind", "state", "name", "details"))

    emit(data, as_json, human)


