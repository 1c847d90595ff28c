"""index.html (the domain gallery), domains/<name>.html, their thumbnails and plots, and best/<name>/.

Pages link every image by a relative URL (they live in the results folder and point into trials/), so the
folder works from file:// and from any static server, with no network. Sample grids taller than
THUMB_HEIGHT get a downscaled copy under thumbs/ for the page, linked to the full-size file.
All user text reaches the HTML through jinja2 with autoescaping; file names made from user text go through
`safe_name`, and every output path is checked to stay inside the results folder.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup
from PIL import Image as PILImage

from nada_sweep import run_files
from nada_sweep.errors import UserError
from nada_sweep.report import plots
from nada_sweep.report.best import copy_best
from nada_sweep.report.leaderboard import HEADLINE, TRIAL_COLUMNS, format_bytes, format_value
from nada_sweep.metric_rules import LOWER_IS_BETTER
from nada_sweep.report.media import Morph, PhotoSection, Video, read_morphs, read_photos, read_videos
from nada_sweep.report.results import Sweep, Trial, safe_name
from nada_sweep.report.selection import DomainResult, Ranked
from nada_sweep.run_files import Status, SweepFolder, atomic_write

THUMB_HEIGHT = 200  # px; the pages show sample rows 160 CSS px high
THUMBS = "thumbs"
DOMAINS = "domains"
BEST = SweepFolder.BEST
INDEX = "index.html"
NUMERIC_COLUMNS = {"rank", "k", "lr", "steps", "trainable", "file_bytes", "steps_done", "best_step", "loss",
                   "clip_quality", "clip_direction", "diversity", "diversity_ratio", "preservation", "wall_time_s"}

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("nada_sweep.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass
class Picture:
    src: str  # what the page shows (thumbnail or original), relative URL
    href: str  # the full-size file, relative URL
    alt: str


@dataclass
class Card:
    """One trial (or the source generator) as a labelled row of samples."""

    title: str
    subtitle: str
    status: str
    picture: Picture | None
    facts: list[tuple[str, str]] = field(default_factory=list)  # (name, value) shown under the title
    note: str | None = None  # why there is no picture, an error, a collapse warning
    link: str | None = None
    links: list[tuple[str, str]] = field(default_factory=list)  # (text, URL): e.g. the domain's morph video


def _url(parts: Sequence[str], depth: int) -> str:
    return "../" * depth + "/".join(quote(part, safe="") for part in parts)


class Pages:
    """Builds the pages of one sweep; `depth` is how deep below the results folder a page lives."""

    def __init__(self, sweep: Sweep, domains: list[DomainResult], document: dict[str, Any], running: bool) -> None:
        self.sweep = sweep
        self.running = running
        self.root = sweep.root
        self.domains = domains
        self.document = document
        taken: set[str] = set()
        self.slugs = {domain.name: safe_name(domain.name, taken) for domain in domains}
        self.script = (Path(__file__).parent / "templates" / "sortable.js").read_text()
        self.warnings: list[str] = []
        self.videos: dict[str, Video] = read_videos(self.root, self.warnings)
        self.morphs: dict[str, Morph] = read_morphs(self.root, self.warnings)
        self.style = (Path(__file__).parent / "templates" / "style.css").read_text()

    def output(self, *parts: str) -> Path:
        """A path to write under the results folder; refuses anything that would land outside it."""
        path = self.root.joinpath(*parts)
        resolved = path.parent.resolve() / path.name
        if not resolved.is_relative_to(self.root) or path.name in ("", ".", ".."):
            raise UserError(f"results folder: {path} leads outside {self.root} (a symlink?); refusing to write there")
        return resolved

    # ---------------------------------------------------------------- images
    def picture(self, trial: Trial, step: int | None, depth: int, alt: str) -> Picture | None:
        return self.picture_file(trial, trial.sample(step), trial.sample_name(step), depth, alt)

    def picture_file(self, trial: Trial, path: Path | None, name: str, depth: int, alt: str) -> Picture | None:
        if path is None:
            return None
        return self.shown(path, (*trial.rel, run_files.SAMPLES, name), (THUMBS, *trial.rel[1:], name), depth, alt)

    def shown(self, path: Path, parts: Sequence[str], thumb_parts: Sequence[str], depth: int, alt: str) -> Picture:
        """The file at `parts` (under the results folder), shown through its thumbnail when it is tall."""
        full = _url(parts, depth)
        shown = _url(thumb_parts, depth) if _thumbnail(path, self.output(*thumb_parts)) else full
        return Picture(shown, full, alt)

    # ---------------------------------------------------------------- cards
    def metric_facts(self, item: Ranked) -> list[tuple[str, str]]:
        metric = self.sweep.selection.metric
        names = [metric, *(m for m in HEADLINE if m != metric)]
        return [(name, format_value(item.score(name))) for name in names if item.score(name) is not None]

    def settings_text(self, trial: Trial) -> str:
        text = f"k {format_value(trial.setting('k'))} · lr {format_value(trial.setting('lr'))}"
        text += f" · {format_value(trial.setting('steps'))} steps"
        others = [f"{name} {format_value(value)}" for name, value in sorted(trial.params.items())
                  if name not in ("k", "lr", "steps", "params")]
        return " · ".join([text, *others])

    @staticmethod
    def params_text(trial: Trial) -> str:
        """The parametrization, how many numbers it trained and the size of the file the trial keeps."""
        parts = [trial.mode]
        if trial.trainable is not None:
            parts.append(f"{trial.trainable:,} trained numbers")
        kept = trial.weights_file
        if kept is not None:
            parts.append(f"{kept.name} {format_bytes(trial.file_bytes)}")
        return " · ".join(parts)

    def trial_card(self, item: Ranked, depth: int, title: str, link: str | None = None) -> Card:
        trial = item.trial
        status = item.display_status
        picture = None
        if item.best is not None:
            alt = f"{trial.domain}: trial {trial.trial_id} at step {item.best_step}"
            picture = self.picture(trial, item.best_step, depth, alt)
        facts = [("trial", trial.trial_id), ("params", self.params_text(trial)),
                 ("settings", self.settings_text(trial))]
        if item.best is not None:
            facts.append(("best step", f"{item.best_step} of {format_value(trial.setting('steps'))}"))
        facts += self.metric_facts(item)
        notes = []
        if item.best is None:
            notes.append({Status.PENDING: "not started yet", Status.RUNNING: "running: no evaluation yet"}.get(
                status, f"{status}: no evaluated step"))
        elif picture is None:
            notes.append(f"samples of step {item.best_step} are missing")
        if item.collapsed:
            threshold = format_value(self.sweep.selection.collapse_threshold)
            notes.append(f"collapsed: diversity_ratio below {threshold} at its best step")
        if trial.error:
            notes.append(f"error: {trial.error}")
        notes += trial.problems
        subtitle = f"{trial.source} → {trial.target}"
        return Card(title, subtitle, status, picture, facts, "; ".join(notes) or None, link)

    def source_card(self, trials: list[Trial], depth: int, generator: str) -> Card:
        with_source = next((t for t in trials if t.sample(None) is not None), None)
        picture = None
        if with_source is not None:
            picture = self.picture(with_source, None, depth, f"source generator {generator}")
        sources = sorted({t.source for t in trials if t.source})
        return Card("source generator", generator or "(unknown generator)", "source", picture,
                    [("prompts", ", ".join(sources))], None if picture else "no source samples written yet")

    # ---------------------------------------------------------------- pages
    def render(self, template: str, path: Path, depth: int, **context: Any) -> None:
        html = _templates.get_template(template).render(
            sweep=self.sweep,
            home=_url([INDEX], depth),
            style=Markup(self.style),
            script=Markup(self.script),
            csp=_csp(self.script, self.style),
            generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            finished=_finished_text(self.sweep),
            running=self.running,
            **context,
        )
        atomic_write(path, lambda tmp: tmp.write_text(html, encoding="utf-8"))

    def table(self, items: list[Ranked], rows: list[dict[str, Any]], depth: int) -> dict[str, Any]:
        """The leaderboard as a sortable HTML table: header cells and rows of (text, sort value, link)."""
        columns = list(rows[0]) if rows else list(TRIAL_COLUMNS)
        numeric = {name for name in columns if name in NUMERIC_COLUMNS or _is_numeric([row[name] for row in rows])}
        body = []
        for item, row in zip(items, rows):
            cells = []
            for name in columns:
                value = row[name]
                link = None
                if name == "domain":
                    link = _url([DOMAINS, self.slugs[item.trial.domain] + ".html"], depth)
                elif name == "trial":
                    link = _url(item.trial.rel, depth)
                sort = "" if value is None else (repr(value) if name in numeric else format_value(value))
                cells.append({"text": format_value(value), "sort": sort, "link": link})
            body.append({"status": row["status"], "cells": cells})
        return {"columns": [{"name": c, "numeric": c in numeric} for c in columns], "rows": body}

    def index(self) -> Path:
        by_generator: dict[str, list[DomainResult]] = {}
        for domain in self.domains:
            generator = next((item.trial.generator for item in domain.ranked), "")
            by_generator.setdefault(generator, []).append(domain)
        groups = []
        for generator, domains in by_generator.items():
            trials = [item.trial for d in domains for item in d.ranked]
            rows = []
            for domain in domains:
                rows.append(self.domain_row(domain))
                rows += [row for row in (self.morph_row(domain), self.mapper_row(domain)) if row]
            groups.append({"source": self.source_card(trials, 0, generator), "rows": rows})
        items = [item for d in self.domains for item in d.ranked]
        path = self.output(INDEX)
        photos = read_photos(self.root, self.warnings)
        self.render("index.html", path, 0, groups=groups, photos=self.photo_cards(photos) if photos else None,
                    table=self.table(items, self.document["trials"], 0), metric=self.sweep.selection.metric,
                    lower_is_better=self.sweep.selection.metric in LOWER_IS_BETTER)
        return path

    def domain_row(self, domain: DomainResult) -> Card:
        page = _url([DOMAINS, self.slugs[domain.name] + ".html"], 0)
        winner = domain.winner
        counts = _status_counts(domain)
        if winner is None:
            trial = domain.ranked[0].trial
            return Card(domain.name, f"{trial.source} → {trial.target}", "none", None,
                        [("trials", counts)], "no evaluated trial yet", page)
        card = self.trial_card(winner, 0, domain.name, page)
        card.facts.append(("trials", counts))
        video = self.videos.get(domain.name)
        if video is not None:
            stale = "" if video.trial == winner.trial.trial_id else f" (of trial {video.trial}, no longer selected)"
            card.links.append(("morph video" + stale, _url([SweepFolder.VIDEOS, video.name], 0)))
        if domain.all_collapsed:
            card.note = "; ".join(filter(None, [card.note, "every trial of this domain collapsed: best of them shown"]))
        return card

    def morph_row(self, domain: DomainResult) -> Card | None:
        """The source morphing into the domain's light-mode winner (offsets scaled 0 -> 1), when rendered."""
        morph = self.morphs.get(domain.name)
        winner = domain.winner
        if morph is None or winner is None or winner.trial.file(run_files.DOMAIN) is None:
            return None
        parts = (SweepFolder.MORPHS, morph.name)
        scales = ", ".join(format_value(t) for t in morph.steps)
        picture = self.shown(morph.file, parts, (THUMBS, *parts), 0,
                             f"{domain.name}: the source morphing into trial {morph.trial}")
        note = None
        if morph.trial != winner.trial.trial_id:
            note = (f"rendered from trial {morph.trial}; the selected trial is now {winner.trial.trial_id}: "
                    "`nada-sweep report` renders it again")
        page = _url([DOMAINS, self.slugs[domain.name] + ".html"], 0)
        return Card(f"{domain.name}: source → domain", f"{winner.trial.mode} offsets × {scales} (columns)",
                    "morph", picture, [("trial", morph.trial or "")], note, page)

    def mapper_row(self, domain: DomainResult) -> Card | None:
        """The domain's best trial that trained a latent mapper, seen through it (same latents)."""
        with_mapper = next((item for item in domain.ranked if item.trial.mapper and item.best is not None), None)
        if with_mapper is None:
            return None
        trial = with_mapper.trial
        name = run_files.MAPPER_SAMPLES
        alt = f"{domain.name}: trial {trial.trial_id} through its latent mapper"
        picture = self.picture_file(trial, trial.mapper_sample(), name, 0, alt)
        facts = [("trial", trial.trial_id), ("mapper on", f"generator.pt of step {trial.generator_step}")]
        facts += [(key, format_value(value)) for key, value in trial.mapper.items() if key.startswith("mapper_")]
        page = _url([DOMAINS, self.slugs[domain.name] + ".html"], 0)
        return Card(f"{domain.name} + latent mapper", f"{trial.source} → {trial.target}", "mapper", picture,
                    facts, None if picture else "mapper samples are missing", page)

    def photo_cards(self, section: PhotoSection) -> list[Card]:
        """The "your photos" rows: photos, reconstruction, then each domain's rendering of the same codes."""
        selected = {d.name: d.winner.trial.trial_id for d in self.domains if d.winner is not None}
        names = ", ".join(section.names)
        cards = []
        for row in section.rows:
            parts = (SweepFolder.PHOTOS, row.name)
            picture = self.shown(row.file, parts, (THUMBS, *parts), 0, f"{row.title}: {names}")
            if row.trial is None:
                cards.append(Card(row.title, names, "photos", picture, row.facts))
                continue
            note = None
            if row.trial != selected.get(row.title):
                now = selected.get(row.title)
                note = (f"rendered by trial {row.trial}; the selected trial is now {now or 'none'}: "
                        "run `nada-sweep report` with --photos again")
            page = _url([DOMAINS, self.slugs[row.title] + ".html"], 0) if row.title in self.slugs else None
            cards.append(Card(row.title, "your photos in this domain", "photos", picture,
                              [("trial", row.trial)], note, page))
        return cards

    def domain_page(self, domain: DomainResult) -> Path:
        slug = self.slugs[domain.name]
        metric = self.sweep.selection.metric
        depth = 1
        winner = domain.winner
        cards = [self.trial_card(item, depth, f"#{item.rank} {item.trial.trial_id}" if item.rank
                                 else item.trial.trial_id) for item in domain.ranked]
        progression = []
        if winner is not None:
            trial = winner.trial
            before = self.picture(trial, None, depth, f"{domain.name}: source samples")
            if before:
                progression.append({"label": "source (step 0)", "picture": before, "best": False})
            by_step = {entry["step"]: entry for entry in trial.history}
            for step in trial.sample_steps():
                value = format_value(by_step.get(step, {}).get(metric))
                label = f"step {step}" + (f": {metric} {value}" if value else "")
                picture = self.picture(trial, step, depth, f"{domain.name}: step {step}")
                progression.append({"label": label, "picture": picture, "best": step == winner.best_step})
        plot_dir = (DOMAINS, slug)
        k_plot = plots.k_sweep(domain, metric, self.output(*plot_dir, "k_sweep.png"))
        qd_plot = plots.quality_vs_diversity(
            domain, self.sweep.selection.collapse_threshold, self.output(*plot_dir, "quality_diversity.png"))
        figures = [
            {"title": title, "src": _url([slug, name], 0)}
            for made, name, title in (
                (k_plot, "k_sweep.png", (f"k sweep: {metric} at each trial's best step, one line per "
                                         "parametrization and learning rate")),
                (qd_plot, "quality_diversity.png", "quality against diversity at each trial's best step"),
            )
            if made
        ]
        trials = [item.trial for item in domain.ranked]
        rows = [row for row in self.document["trials"] if row["domain"] == domain.name]
        path = self.output(DOMAINS, slug + ".html")
        source = self.source_card(trials, depth, trials[0].generator)
        self.render("domain.html", path, depth, domain=domain, source=source, cards=cards, winner=winner,
                    progression=progression, figures=figures, table=self.table(domain.ranked, rows, depth),
                    counts=_status_counts(domain))
        return path


def _finished_text(sweep: Sweep) -> str:
    finished = sum(trial.status.done or trial.status.failed for trial in sweep.trials)
    return f"{finished} of {sweep.total} trials finished"


def _is_numeric(values: list[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def _status_counts(domain: DomainResult) -> str:
    counts: dict[str, int] = {}
    for item in domain.ranked:
        counts[item.display_status] = counts.get(item.display_status, 0) + 1
    return f"{len(domain.ranked)}: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def _csp(script: str, style: str) -> str:
    """Content-Security-Policy allowing only our own inline script and style: a second line of defence should
    user text ever reach the page unescaped."""

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    return (f"default-src 'none'; img-src 'self' file:; script-src {digest(script)}; style-src {digest(style)}; "
            "base-uri 'none'; form-action 'none'")


def _thumbnail(source: Path, dest: Path) -> bool:
    """Write a THUMB_HEIGHT-high copy of `source` at `dest` when it is taller; False: show the original."""
    try:
        if dest.exists() and dest.stat().st_mtime_ns >= source.stat().st_mtime_ns:
            return True
        with PILImage.open(source) as image:
            if image.height <= THUMB_HEIGHT:
                return False
            width = max(1, round(image.width * THUMB_HEIGHT / image.height))
            small = image.convert("RGB").resize((width, THUMB_HEIGHT), PILImage.Resampling.LANCZOS)
    except (OSError, ValueError, PILImage.DecompressionBombError):
        return False  # the page links the original; the browser shows what it can
    atomic_write(dest, lambda tmp: small.save(tmp, format="PNG"))
    return True


def write_pages(sweep: Sweep, domains: list[DomainResult], document: dict[str, Any], *, running: bool = False
                ) -> tuple[Path, list[str]]:
    """Every page, thumbnail, plot and best generator; returns index.html and warnings.

    `running`: the sweep is still running; the pages say so and reload themselves.
    """
    pages = Pages(sweep, domains, document, running)
    for domain in domains:
        pages.domain_page(domain)
    index = pages.index()
    best = copy_best(sweep, domains, lambda name: pages.output(BEST, pages.slugs[name]))
    return index, [*pages.warnings, *best]
