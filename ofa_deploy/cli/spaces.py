"""``spaces``: the registered search spaces, one line each."""
from __future__ import annotations

import click

from ._common import emit


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def spaces(as_json: bool) -> None:
    """List the registered search spaces with a one-line summary each."""
    from supernet.resnet_space import RESNET_SPACES
    from supernet.space import get_space, list_spaces

    data = []
    for name in (*list_spaces(), *RESNET_SPACES):
        sp = RESNET_SPACES[name] if name in RESNET_SPACES else get_space(name)
        data.append({"name": name, "family": sp.family, "summary": sp.summary(),
                     "num_subnets": sp.num_subnets(per_resolution=False),
                     "resolutions": list(sp.resolutions), "num_classes": sp.num_classes})
    width = max([len(x["name"]) for x in data] + [16])
    emit(data, as_json, lambda d: "\n".join(f"{x['name']:<{width}}  {x['summary']}" for x in d))


