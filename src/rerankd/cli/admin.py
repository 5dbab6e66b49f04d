"""``rerankd admin``: change a running server's traffic (routes, models, shadows) and read its online A/B report."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from rerankd.cli.app import app, console, fail

admin_app = typer.Typer(
    help="Change a running server's traffic and read its online A/B report (needs --admin-key).",
    rich_markup_mode=None,
)
app.add_typer(admin_app, name="admin")


@admin_app.callback()
def connect(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", envvar="RERANKD_ADMIN_URL", help="The server, e.g. http://host:8000.")],
    key: Annotated[str, typer.Option("--key", envvar="RERANKD_ADMIN_KEY", help="An admin key of that server.")],
) -> None:
    """rerankd admin --url URL --key KEY COMMAND ..."""
    ctx.obj = (url, key)


def call(ctx: typer.Context, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    import httpx

    url, key = ctx.obj
    try:
        answer = httpx.request(method, url.rstrip("/") + path, json=body, timeout=30,
                               headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {exc}", 4)
    data: dict[str, Any] = answer.json() if answer.content else {}
    if answer.status_code >= 400:
        fail(f"{answer.status_code}: {data.get('message', answer.text)}")
    return data


def parse_weights(text: str) -> dict[str, float]:
    """``a=50,b=50`` -> ``{"a": 50.0, "b": 50.0}``."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            fail(f"bad weight {part!r}: use name=weight,name=weight")
        if not sep or not name.strip():
            fail(f"bad weight {part!r}: use name=weight,name=weight")
    return weights


def show_state(state: dict[str, Any]) -> None:
    from rich.table import Table  # imported when used: `rerankd --help` stays fast

    table = Table(title="routes")
    table.add_column("route")
    table.add_column("arms (share)")
    for route, arms in state["routes"].items():
        total = sum(arms.values()) or 1.0
        table.add_row(route, ", ".join(f"{n} {w / total:.0%}" for n, w in arms.items()))
    console.print(table)
    console.print("models: " + ", ".join(f"{n} ({s})" for n, s in state["models"].items()))
    for target, shadow in state["shadows"].items():
        console.print(f"shadow of {target}: {shadow['candidate']} on {shadow['fraction']:.0%} of requests")


@admin_app.command("state")
def state_command(ctx: typer.Context) -> None:
    """Show routes, models and shadows."""
    show_state(call(ctx, "GET", "/admin/state"))


@admin_app.command("route")
def route_command(
    ctx: typer.Context,
    route: Annotated[str, typer.Argument(help="The route (A/B alias).")],
    set_: Annotated[str | None, typer.Option("--set", help="New weights, e.g. a=50,b=50.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Delete the route.")] = False,
) -> None:
    """Set a route's weights (creating it), or remove it."""
    if remove:
        show_state(call(ctx, "DELETE", f"/admin/routes/{route}"))
    elif set_ is not None:
        show_state(call(ctx, "PUT", f"/admin/routes/{route}", {"weights": parse_weights(set_)}))
    else:
        fail("give --set a=W,b=W or --remove")


@admin_app.command("model")
def model_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The served name.")],
    path: Annotated[str | None, typer.Option(help="Load this model (folder, hub id) under NAME.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Stop serving NAME (no route may still use it).")] = False,
) -> None:
    """Add a model (loaded in the background; traffic is unchanged until a route gives it weight) or remove one."""
    if remove:
        show_state(call(ctx, "DELETE", f"/admin/models/{name}"))
    elif path is not None:
        show_state(call(ctx, "POST", "/admin/models", {"name": name, "path": path}))
    else:
        fail("give --path PATH or --remove")


@admin_app.command("shadow")
def shadow_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="The route or model whose requests are shadowed.")],
    candidate: Annotated[str | None, typer.Option(help="The model that scores them too.")] = None,
    fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of requests.")] = 1.0,
    log: Annotated[str | None, typer.Option(help="JSONL file (on the server) for both rankings.")] = None,
    off: Annotated[bool, typer.Option("--off", help="Stop shadowing TARGET.")] = False,
) -> None:
    """Shadow-score a share of TARGET's requests with CANDIDATE, off the response path."""
    if off:
        show_state(call(ctx, "DELETE", f"/admin/shadows/{target}"))
    elif candidate is not None:
        body = {"candidate": candidate, "fraction": fraction, "log": log}
        show_state(call(ctx, "PUT", f"/admin/shadows/{target}", body))
    else:
        fail("give --candidate NAME or --off")


@admin_app.command("report")
def report_command(
    ctx: typer.Context,
    route: Annotated[str, typer.Argument(help="The route.")],
    baseline: Annotated[str | None, typer.Option(help="The arm the others are compared with.")] = None,
    measure: Annotated[str, typer.Option(help="mrr, ndcg, ctr or rank_lift.")] = "mrr",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each arm's online quality from user feedback, side by side, with significance and the events still needed."""
    query = f"?measure={measure}" + (f"&baseline={baseline}" if baseline else "")
    report = call(ctx, "GET", f"/admin/report/{route}{query}")
    if as_json:
        console.print_json(json.dumps(report))
        return
    from rich.table import Table

    table = Table(title=f"{route}: online quality from feedback (k = {report['k']})")
    for column in ("arm", "events", "MRR@k", "NDCG@k", "CTR@k", "rank lift"):
        table.add_column(column, justify="right")
    for arm in report["arms"]:
        m = arm["means"]
        table.add_row(arm["arm"], str(arm["events"]), f"{m['mrr']:.4f}", f"{m['ndcg']:.4f}", f"{m['ctr']:.3f}",
                      f"{m['rank_lift']:+.2f}")  # fmt: skip
    console.print(table)
    for c in report["comparisons"]:
        verdict = "significant" if c["significant"] else "not significant"
        needed = c["needed_per_group"]
        more = f"; about {needed} events per arm detect this difference" if needed else ""
        p_values = f"p = {c['p_randomisation']:.4f} permutation, {c['p_welch']:.4f} Welch"
        console.print(f"{c['candidate']} vs {c['baseline']} on {c['measure']}: {c['delta']:+.4f} ({p_values}) - "
                      f"{verdict}{more}")  # fmt: skip
