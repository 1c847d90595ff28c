"""leaderboard.csv / .md / .json and the best-per-domain table printed at the end of `run`.

One row per trial: prompts, the settings it ran with, its best step and every metric there, its status and
wall time. The best-per-domain table holds each domain's winner, ranked by the selection metric (CLIP scores
of different prompts are not strictly comparable; the order is a reading aid, not a contest between domains).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from nada_sweep.metric_rules import GPU_PEAK_MEM, LOWER_IS_BETTER, METRIC_NAMES, finite
from nada_sweep.report.results import Sweep, dumps
from nada_sweep.report.selection import DomainResult, Ranked
from nada_sweep.run_files import atomic_write

METRIC_COLUMNS = ("loss", *METRIC_NAMES)
SETTING_COLUMNS = ("k", "lr", "steps")
TRIAL_COLUMNS = (
    "domain", "trial", "rank", "status", "source", "target", *SETTING_COLUMNS, "steps_done", "best_step",
    *METRIC_COLUMNS, "collapsed", "wall_time_s", "error",
)
BEST_COLUMNS = ("domain", "trial", "source", "target", *SETTING_COLUMNS, "best_step", *METRIC_COLUMNS,
                "collapsed", "trials", "evaluated")


# The latent-mapper stage's metrics (same fixed latents, through the mapper), when any trial trained one.
MAPPER_COLUMNS = tuple(f"mapper_{name}" for name in METRIC_NAMES)


def trial_row(item: Ranked, extra_params: list[str], mapper_columns: bool = False, gpu_column: bool = False
              ) -> dict[str, Any]:
    trial, best = item.trial, item.best or {}
    row: dict[str, Any] = {
        "domain": trial.domain,
        "trial": trial.trial_id,
        "rank": item.rank,
        "status": item.display_status,
        "source": trial.source,
        "target": trial.target,
        **{name: trial.setting(name) for name in SETTING_COLUMNS},
        "steps_done": trial.steps_done,
        "best_step": item.best_step,
        **{name: finite(best.get(name)) for name in METRIC_COLUMNS},
        "collapsed": item.collapsed,
        "wall_time_s": trial.elapsed_s,
        "error": trial.error or ("; ".join(trial.problems) or None),
    }
    if gpu_column:
        row[GPU_PEAK_MEM] = trial.gpu_peak_mem_gb
    # Searched settings beyond k/lr/steps (mixing, loss weights, ...) get a column each.
    row |= {name: trial.params.get(name) for name in extra_params}
    if mapper_columns:
        row |= {name: finite(trial.mapper.get(name)) for name in MAPPER_COLUMNS}
    return row


def extra_params(domains: list[DomainResult]) -> list[str]:
    names = {name for d in domains for item in d.ranked for name in item.trial.params}
    return sorted(names - set(TRIAL_COLUMNS))


def trial_rows(domains: list[DomainResult]) -> list[dict[str, Any]]:
    extra = extra_params(domains)
    mapper = any(item.trial.mapper for domain in domains for item in domain.ranked)
    # Peak GPU memory per trial, when any trial ran on CUDA (trials on the CPU leave the cell empty).
    gpu = any(item.trial.gpu_peak_mem_gb is not None for domain in domains for item in domain.ranked)
    return [trial_row(item, extra, mapper, gpu) for domain in domains for item in domain.ranked]


def best_rows(domains: list[DomainResult], metric: str) -> list[dict[str, Any]]:
    """Each domain's winner (domains without an evaluated trial last), best selection metric first."""
    rows = []
    for domain in domains:
        winner = domain.winner
        evaluated = sum(item.best is not None for item in domain.ranked)
        if winner is None:
            row = dict.fromkeys(BEST_COLUMNS) | {"domain": domain.name, "trials": len(domain.ranked), "evaluated": 0}
            rows.append(row)
            continue
        full = trial_row(winner, [])
        rows.append({name: full.get(name) for name in BEST_COLUMNS} | {
            "trials": len(domain.ranked),
            "evaluated": evaluated,
        })
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    rows.sort(key=lambda r: (r[metric] is None, sign * (r[metric] or 0.0), r["domain"]))
    return rows


def _csv_cell(value: Any) -> Any:
    # Spreadsheets run cells starting with = + - @ as formulas; prompts are user text, so quote those.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: _csv_cell(value) for key, value in row.items()} for row in rows)
    return out.getvalue()


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def _md_cell(value: Any) -> str:
    text = format_value(value).replace("\\", "\\\\").replace("|", "\\|")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(text.split())  # a newline would end the table row


def to_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no trials)\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_leaderboard(sweep: Sweep, domains: list[DomainResult], out_dir: Path) -> dict[str, Any]:
    """leaderboard.{csv,md,json} in `out_dir`; returns the JSON document."""
    trials = trial_rows(domains)
    best = best_rows(domains, sweep.selection.metric)
    document = {
        "sweep": sweep.name,
        "select_metric": sweep.selection.metric,
        "collapse_threshold": sweep.selection.collapse_threshold,
        "demo": sweep.demo,
        "best": best,
        "trials": trials,
    }
    selection = (f"Selection metric `{sweep.selection.metric}`; a trial whose diversity_ratio at its best step is "
                 f"below {sweep.selection.collapse_threshold} is collapsed and only wins when all of its domain's did.")
    markdown = [f"# Leaderboard: {_md_cell(sweep.name)}\n"]
    if sweep.demo_label:
        markdown.append(f"**{_md_cell(sweep.demo_label)}**\n")
    markdown += [selection + "\n", "## Best per domain\n", to_markdown(best), "## All trials\n", to_markdown(trials)]
    for name, text in (("csv", to_csv(trials)), ("md", "\n".join(markdown)), ("json", dumps(document))):
        atomic_write(out_dir / f"leaderboard.{name}", lambda tmp, text=text: tmp.write_text(text))
    return document


HEADLINE = ("clip_direction", "clip_quality", "diversity_ratio", "preservation")


def best_table(best: list[dict[str, Any]], metric: str, title: str) -> Table:
    """The best-per-domain rows as a rich table (user text wrapped in Text, so no markup is interpreted)."""
    table = Table(title=Text(title))
    metrics = [metric, *(m for m in HEADLINE if m != metric)]
    for name in ("domain", "target", "k", "lr", "steps", "best step", *metrics):
        table.add_column(name, justify="right" if name not in ("domain", "target") else "left")
    for row in best:
        style = "yellow" if row.get("collapsed") else None
        cells = [row["domain"], row["target"], row["k"], row["lr"], row["steps"], row["best_step"]]
        cells += [row[m] for m in metrics]
        table.add_row(*(Text(format_value(c) or ("-" if row["trial"] is None else "")) for c in cells), style=style)
    return table


def print_best(document: dict[str, Any], console: Console) -> None:
    title = f"{document['sweep']}: best per domain by {document['select_metric']}"
    console.print(best_table(document["best"], document["select_metric"], title))
    if any(row.get("collapsed") for row in document["best"]):
        console.print(Text("yellow rows: every trial of that domain collapsed (low diversity_ratio)", style="yellow"))
