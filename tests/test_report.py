"""Selection, leaderboard, pages and best generators, from results folders on disk."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image
from report_helpers import HOSTILE_PROMPT, fake_trial, line, png, real_trial
from rich.console import Console

from nada_sweep import run_files
from nada_sweep.errors import UserError
from nada_sweep.report import best_per_domain, build_report, print_best_table
from nada_sweep.report.gallery import THUMB_HEIGHT
from nada_sweep.report.results import read_sweep, safe_name
from nada_sweep.metric_rules import best_entry
from nada_sweep.report.selection import rank_sweep


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values["src"] or "")
        if tag == "a":
            self.links.append(values["href"] or "")


def page_links(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text())
    return parser


def assert_links_resolve(page: Path, root: Path) -> None:
    """Every image and link of `page` is relative and points at a file inside the results folder."""
    parsed = page_links(page)
    for url in parsed.images + parsed.links:
        assert not re.match(r"^[a-z]+:|^/", url), url
        target = (page.parent / unquote(url)).resolve()
        assert target.is_relative_to(root.resolve()), url
        assert target.exists(), f"{page.name}: {url} does not exist"


def ranked(root: Path, **selection) -> dict[str, list[str]]:
    sweep = read_sweep(root, **selection)
    return {d.name: [item.trial.trial_id for item in d.ranked] for d in rank_sweep(sweep.trials, sweep.selection)}


# ---------------------------------------------------------------------------------------------- selection


def test_best_step_by_metric_direction_and_ties():
    history = [line(2, clip_direction=0.1, loss=0.9), line(4, clip_direction=0.3, loss=0.7),
               line(6, clip_direction=0.3, loss=0.8), line(8, clip_direction=float("nan"), loss=None)]
    assert best_entry(history, "clip_direction")["step"] == 6  # tie: the later step
    assert best_entry(history, "loss")["step"] == 4
    assert best_entry([line(2, preservation=None)], "preservation") is None


def test_collapsed_trial_only_wins_when_the_whole_domain_collapsed(tmp_path):
    # sketch: the top scorer collapsed at its best step, so the runner-up wins.
    fake_trial(tmp_path, "sketch", "t0", [line(2, clip_direction=0.9, diversity_ratio=0.2)])
    fake_trial(tmp_path, "sketch", "t1", [line(2, clip_direction=0.4, diversity_ratio=0.8)])
    fake_trial(tmp_path, "sketch", "t2", [line(2, clip_direction=0.5, diversity_ratio=0.7)])
    # a collapse at a step that is not the best one does not count.
    fake_trial(tmp_path, "zombie", "z0", [line(2, clip_direction=0.9, diversity_ratio=0.1),
                                          line(4, clip_direction=0.95, diversity_ratio=0.6)])
    fake_trial(tmp_path, "zombie", "z1", [line(2, clip_direction=0.2, diversity_ratio=0.1),
                                          line(4, clip_direction=0.3, diversity_ratio=0.05)])
    fake_trial(tmp_path, "zombie", "z2", [line(2, clip_direction=0.5, diversity_ratio=0.3)])
    assert ranked(tmp_path) == {"sketch": ["t2", "t1", "t0"], "zombie": ["z0", "z2", "z1"]}
    sweep = read_sweep(tmp_path)
    domains = {d.name: d for d in rank_sweep(sweep.trials, sweep.selection)}
    assert not domains["sketch"].all_collapsed and domains["sketch"].ranked[2].collapsed
    assert domains["zombie"].winner.best_step == 4 and not domains["zombie"].winner.collapsed
    # All collapsed: the best of them wins, and the domain says so.
    fake_trial(tmp_path, "zombie", "z0", [line(2, clip_direction=0.9, diversity_ratio=0.1)])
    sweep = read_sweep(tmp_path)
    zombie = {d.name: d for d in rank_sweep(sweep.trials, sweep.selection)}["zombie"]
    assert zombie.all_collapsed and zombie.winner.trial.trial_id == "z0" and zombie.winner.collapsed
    # A threshold of 0 turns the check off; a stricter one collapses more.
    assert ranked(tmp_path, collapse_threshold=0)["sketch"] == ["t0", "t2", "t1"]
    assert ranked(tmp_path, collapse_threshold=0.75)["sketch"] == ["t1", "t0", "t2"]


def test_selection_metric_comes_from_the_resolved_sweep_config_or_the_caller(tmp_path):
    fake_trial(tmp_path, "sketch", "a", [line(2, clip_direction=0.9, preservation=0.1, loss=0.9)])
    fake_trial(tmp_path, "sketch", "b", [line(2, clip_direction=0.1, preservation=0.9, loss=0.1)])
    assert ranked(tmp_path)["sketch"] == ["a", "b"]  # no sweep.resolved.yaml: the trials' own metric
    (tmp_path / "sweep.resolved.yaml").write_text("name: mine\nselect_metric: preservation\ncollapse_threshold: 0.3\n")
    assert ranked(tmp_path)["sketch"] == ["b", "a"]
    assert read_sweep(tmp_path).selection.collapse_threshold == 0.3 and read_sweep(tmp_path).name == "mine"
    assert ranked(tmp_path, select_metric="loss")["sketch"] == ["b", "a"]
    assert ranked(tmp_path, select_metric="clip_direction")["sketch"] == ["a", "b"]
    (tmp_path / "sweep.resolved.yaml").write_text("select_metric: beauty\n")
    with pytest.raises(UserError, match=r"sweep.resolved.yaml: select_metric: 'beauty'.*clip_direction"):
        read_sweep(tmp_path)
    with pytest.raises(UserError, match="collapse_threshold"):
        read_sweep(tmp_path, select_metric="loss", collapse_threshold=-1)


def test_not_a_results_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_report(tmp_path / "missing")
    with pytest.raises(UserError, match="no trials/ folder"):
        build_report(tmp_path)


# ---------------------------------------------------------------------------------------------- half-finished


def test_half_finished_sweep_reports_every_trial_with_its_state(tmp_path):
    fake_trial(tmp_path, "sketch", "done", [line(2, clip_direction=0.2), line(4, clip_direction=0.4)])
    fake_trial(tmp_path, "sketch", "broken", status="failed", error="RuntimeError: CUDA out of memory")
    fake_trial(tmp_path, "sketch", "busy", status="running")
    fake_trial(tmp_path, "sketch", "waiting", status=None)
    fake_trial(tmp_path, "sketch", "blewup", [line(2, clip_direction=0.3)], status="diverged",
               error="loss became nan at step 3")
    fake_trial(tmp_path, "pixel", "early", [line(2, clip_direction=0.1)], status="running", target="pixel art")
    fake_trial(tmp_path, "nothing", "n0", status="failed", error="ValueError: boom", target="nothing yet")
    (tmp_path / "trials" / "pixel" / "early" / "metrics.jsonl").open("a").write('{"step": 4, "clip_dir')  # torn

    index = build_report(tmp_path)
    rows = {row["trial"]: row for row in json.loads((tmp_path / "leaderboard.json").read_text())["trials"]}
    assert {t: r["status"] for t, r in rows.items()} == {
        "done": "ok", "broken": "failed", "busy": "running", "waiting": "pending", "blewup": "diverged",
        "early": "running", "n0": "failed"}
    assert rows["done"]["rank"] == 1 and rows["blewup"]["rank"] == 2 and rows["broken"]["rank"] is None
    assert rows["broken"]["clip_direction"] is None and "out of memory" in rows["broken"]["error"]
    assert rows["early"]["best_step"] == 2 and rows["done"]["best_step"] == 4
    with (tmp_path / "leaderboard.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 7
    best = {row["domain"]: row for row in best_per_domain(tmp_path)}
    assert best["sketch"]["trial"] == "done" and best["pixel"]["trial"] == "early"
    assert best["nothing"]["trial"] is None and best["nothing"]["trials"] == 1
    html = index.read_text()
    assert "no evaluated trial yet" in html and "running" in html
    assert len(page_links(index).images) == 3  # source row, sketch's and pixel's best
    sketch_page = (tmp_path / "domains" / "sketch.html").read_text()
    assert "out of memory" in sketch_page and "not started yet" in sketch_page and "diverged" in sketch_page
    for page in (index, *sorted((tmp_path / "domains").glob("*.html"))):
        assert_links_resolve(page, tmp_path)
    assert (tmp_path / "best" / "sketch" / "generator.pt").read_bytes() == b"weights of done"
    assert not (tmp_path / "best" / "nothing").exists()
    selected = json.loads((tmp_path / "best" / "sketch" / "selected.json").read_text())
    assert selected["trial"] == "done" and selected["best_step"] == 4


def test_best_generator_follows_the_winner_when_results_change(tmp_path):
    fake_trial(tmp_path, "sketch", "a", [line(2, clip_direction=0.5)])
    fake_trial(tmp_path, "sketch", "b", [line(2, clip_direction=0.1)], status="running")
    build_report(tmp_path)
    assert (tmp_path / "best" / "sketch" / "generator.pt").read_bytes() == b"weights of a"
    fake_trial(tmp_path, "sketch", "b", [line(2, clip_direction=0.1), line(4, clip_direction=0.7)])
    build_report(tmp_path)
    assert (tmp_path / "best" / "sketch" / "generator.pt").read_bytes() == b"weights of b"


# ---------------------------------------------------------------------------------------------- leaderboard files


def test_leaderboard_files_agree_and_escape_user_text(tmp_path):
    fake_trial(tmp_path, "sketch", "a", [line(2, clip_direction=0.5)], target="=HYPERLINK(\"x\")|pipe")
    fake_trial(tmp_path, "sketch", "b", [line(2, clip_direction=0.7, diversity_ratio=0.1)], k=4)
    fake_trial(tmp_path, "mark", "m", [line(2, clip_direction=0.2)], target=HOSTILE_PROMPT)
    build_report(tmp_path)
    document = json.loads((tmp_path / "leaderboard.json").read_text())
    assert document["select_metric"] == "clip_direction" and document["collapse_threshold"] == 0.5
    trials = {row["trial"]: row for row in document["trials"]}
    assert trials["b"]["status"] == "collapsed" and trials["b"]["collapsed"] and trials["b"]["k"] == 4
    assert trials["a"]["rank"] == 1 and trials["a"]["wall_time_s"] == 3.0 and trials["a"]["lr"] == 0.002
    assert [row["domain"] for row in document["best"]] == ["sketch", "mark"]  # ranked by clip_direction
    with (tmp_path / "leaderboard.csv").open() as handle:
        rows = {row["trial"]: row for row in csv.DictReader(handle)}
    assert rows["a"]["target"] == "'=HYPERLINK(\"x\")|pipe"  # no formula when opened in a spreadsheet
    assert float(rows["b"]["clip_direction"]) == 0.7 and rows["a"]["best_step"] == "2"
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "\\|pipe" in markdown and "<script>" not in markdown and "&lt;script&gt;" in markdown
    for table in re.findall(r"(?:^\|.*\n)+", markdown, flags=re.MULTILINE):  # every row keeps its columns
        assert len({len(re.findall(r"(?<!\\)\|", row)) for row in table.splitlines()}) == 1
    html = (tmp_path / "index.html").read_text()
    assert "<script>window.pwned" not in html and "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html


def test_best_table_prints_user_text_literally(tmp_path):
    fake_trial(tmp_path, "sketch", "a", [line(2, clip_direction=0.5)], target="[bold red]loud[/bold red]")
    fake_trial(tmp_path, "later", "x", status="running")
    console = Console(record=True, width=200)
    rows = print_best_table(tmp_path, console)
    text = console.export_text()
    assert "[bold red]loud[/bold red]" in text and "0.5" in text and "later" in text
    assert [row["domain"] for row in rows] == ["sketch", "later"]
    assert "random-weight" in text.lower()


# ---------------------------------------------------------------------------------------------- paths and images


def test_names_from_folders_cannot_leave_the_results_folder(tmp_path):
    root = tmp_path / "results"
    outside = tmp_path / "outside"
    fake_trial(outside, "x", "t", [line(2)])
    fake_trial(root, "ok", "t", [line(2)])
    (root / "trials" / "ok" / "sneaky").symlink_to(outside / "trials" / "x" / "t", target_is_directory=True)
    folder = fake_trial(root, "evil", "t", [line(2)])
    record = json.loads(folder.path("config.json").read_text())
    record["labels"]["domain"] = "../../../../escaped"
    folder.path("config.json").write_text(json.dumps(record))
    (folder.samples / "step_000004.png").symlink_to(outside / "trials" / "x" / "t" / "samples" / "step_000002.png")
    before = sorted(outside.rglob("*"))
    console = Console(record=True, width=200)
    build_report(root, console=console)
    assert "points outside the results folder" in console.export_text()
    assert sorted(outside.rglob("*")) == before
    assert sorted(p.name for p in (root / "domains").glob("*.html")) == ["escaped.html", "ok.html"]
    assert (root / "best" / "escaped" / "generator.pt").exists()
    assert not list(tmp_path.glob("escaped*")) and not (tmp_path.parent / "escaped").exists()
    assert "step_000004" not in (root / "domains" / "escaped.html").read_text()
    assert "sneaky" not in (root / "leaderboard.csv").read_text()


def test_safe_name():
    taken: set[str] = set()
    assert safe_name("../../etc/passwd", taken) == "etc-passwd"
    assert safe_name("pencil sketch", taken) == "pencil-sketch"
    assert safe_name("Pencil Sketch", taken) == "Pencil-Sketch-2"  # case-insensitive file systems
    assert safe_name("..", taken) == "domain"
    assert safe_name("", taken) == "domain-2"


def test_tall_sample_grids_get_thumbnails_linked_to_the_full_size(tmp_path):
    folder = fake_trial(tmp_path, "sketch", "a", [line(2)])
    png(folder.samples / "step_000002.png", width=2050, height=514)
    build_report(tmp_path)
    thumb = tmp_path / "thumbs" / "sketch" / "a" / "step_000002.png"
    with Image.open(thumb) as image:
        assert image.height == THUMB_HEIGHT and abs(image.width - round(2050 * THUMB_HEIGHT / 514)) <= 1
    html = (tmp_path / "index.html").read_text()
    assert '<a href="trials/sketch/a/samples/step_000002.png"><img src="thumbs/sketch/a/step_000002.png"' in html
    assert '<img src="trials/sketch/a/samples/source.png"' in html  # small grids are shown as they are


# ---------------------------------------------------------------------------------------------- real trials


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory) -> Path:
    """2 domains x 2 k, trained for real on the tiny built-in models."""
    root = tmp_path_factory.mktemp("sweep")
    for domain, target in (("sketch", "pencil sketch"), ("zombie", "zombie")):
        for k in (0, 2):
            real_trial(root, domain, f"k{k}", target=target, k=k)
    return root


@pytest.mark.slow
def test_leaderboard_and_gallery_from_real_trials(real_sweep):
    index = build_report(real_sweep)
    document = json.loads((real_sweep / "leaderboard.json").read_text())
    assert len(document["trials"]) == 4 and len(document["best"]) == 2
    for row in document["trials"]:
        assert row["status"] in ("ok", "collapsed") and row["steps_done"] == 4 and row["best_step"] in (2, 4)
        assert row["k"] in (0, 2) and row["steps"] == 4 and row["wall_time_s"] > 0
        for metric in ("loss", "clip_quality", "clip_direction", "diversity", "diversity_ratio", "preservation"):
            assert isinstance(row[metric], float), (row["trial"], metric)
    for row in document["best"]:
        history = [json.loads(ln) for ln in
                   (real_sweep / "trials" / row["domain"] / row["trial"] / "metrics.jsonl").read_text().splitlines()]
        assert row["clip_direction"] == max(h["clip_direction"] for h in history)
        assert row["clip_direction"] == next(h for h in history if h["step"] == row["best_step"])["clip_direction"]
        assert (real_sweep / "domains" / row["domain"] / "k_sweep.png").exists()
        assert (real_sweep / "domains" / row["domain"] / "quality_diversity.png").exists()
    assert "RANDOM-WEIGHT" in index.read_text()
    assert len(page_links(index).images) == 3  # source row and one row per domain
    for page in (index, *sorted((real_sweep / "domains").glob("*.html"))):
        assert_links_resolve(page, real_sweep)
    # The copied winner is a generator file other tools (and ours) load.
    from nada_sweep.models.checkpoints import load_generator

    loaded = load_generator(real_sweep / "best" / "sketch" / "generator.pt")
    assert loaded.generator.size == 64


def test_mapper_stage_shows_in_gallery_and_leaderboard(tmp_path):
    root = tmp_path / "sweep"
    with_mapper = fake_trial(root, "cat", "k=0", [line(2), line(4, clip_direction=0.3)])
    fake_trial(root, "cat", "k=4", [line(2), line(4)])
    fake_trial(root, "sketch", "k=0", [line(2), line(4)])
    run_files.write_json(with_mapper.path(run_files.MAPPER_METRICS),
                         {"mapper_clip_direction": 0.42, "mapper_diversity_ratio": 0.8})
    png(with_mapper.samples / run_files.MAPPER_SAMPLES, color=(200, 10, 10))

    index = build_report(root)
    html = index.read_text()
    assert "cat + latent mapper" in html and "sketch + latent mapper" not in html
    assert 'src="trials/cat/k%3D0/samples/mapper.png"' in html
    rows = list(csv.DictReader((root / "leaderboard.csv").open()))
    by_trial = {(row["domain"], row["trial"]): row for row in rows}
    assert float(by_trial[("cat", "k=0")]["mapper_clip_direction"]) == pytest.approx(0.42)
    assert by_trial[("sketch", "k=0")]["mapper_clip_direction"] == ""
