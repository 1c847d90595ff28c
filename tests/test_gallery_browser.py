"""The gallery in a real headless Chromium (Debian's chromium + chromium-driver), from file:// and over HTTP.

Never skipped: without Chromium the test fails and says what to install (.ci/run installs it). Screenshots
go to results/test-artifacts/ (git-ignored) for people to look at.
"""

from __future__ import annotations

import base64
import functools
import http.server
import threading
from pathlib import Path

import pytest
from media_helpers import sweep_with_photos
from report_helpers import HOSTILE_PROMPT, fake_trial, real_trial
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from nada_sweep.report import build_report

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "results" / "test-artifacts"
HOSTILE_DOMAIN = "<img src=x onerror=window.pwned=2>"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gallery") / "demo-sweep"
    real_trial(root, "sketch", "k2", target="pencil sketch", k=2)
    real_trial(root, HOSTILE_DOMAIN, "k0", target=HOSTILE_PROMPT, k=0)
    fake_trial(root, HOSTILE_DOMAIN, "broken", status="failed", target=HOSTILE_PROMPT,
               error="RuntimeError: <i>boom</i><script>window.pwned=3</script>")
    build_report(root)
    return root


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    assert not missing, f"{missing} missing: apt-get install -y chromium chromium-driver (the test needs a browser)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(1400, 1000)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def photo_gallery(tmp_path_factory) -> Path:
    return sweep_with_photos(tmp_path_factory.mktemp("photo-gallery"))[0]


def serve(folder: Path):
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(gallery):
    yield from serve(gallery)


@pytest.fixture
def photo_server(photo_gallery):
    yield from serve(photo_gallery)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def images(driver) -> list[dict]:
    return driver.execute_script(
        "return Array.from(document.images).map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0}))")


def assert_images_loaded(driver, expected: int | None = None) -> None:
    found = images(driver)
    assert found and all(image["ok"] for image in found), [i["src"] for i in found if not i["ok"]]
    if expected is not None:
        assert len(found) == expected


def assert_not_injected(driver) -> None:
    assert driver.execute_script("return typeof window.pwned") == "undefined"
    assert driver.execute_script("return document.querySelectorAll('main b, .row b, .row i, td b, td i').length") == 0


def column(driver, table: str, name: str) -> list[str]:
    index = driver.execute_script(
        f"return Array.from(document.querySelectorAll('#{table} thead th')).findIndex(th => th.dataset.column === "
        f"arguments[0])", name)
    assert index >= 0, name
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll('#{table} tbody tr')).map(r => r.cells[arguments[0]]"
        ".dataset.sort)", index)


def screenshot(driver, name: str) -> None:
    """The whole page, not only the window, through the DevTools protocol."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_bytes(base64.b64decode(shot["data"]))


def test_gallery_from_file_url(gallery, browser):
    browser.get((gallery / "index.html").as_uri())
    assert_images_loaded(browser, expected=3)  # the source row and one row per domain
    titles = [row.get_attribute("data-title") for row in browser.find_elements(By.CSS_SELECTOR, ".row.domain")]
    assert sorted(titles) == sorted(["sketch", HOSTILE_DOMAIN])
    rows = browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")
    assert len(rows) == 3
    assert sorted(column(browser, "leaderboard", "trial")) == ["broken", "k0", "k2"]

    # User text shows as text: visible, literally, and nothing in it ran or became markup.
    gallery_text = browser.find_element(By.ID, "gallery").text
    assert HOSTILE_PROMPT in gallery_text and HOSTILE_DOMAIN in gallery_text
    assert HOSTILE_PROMPT in browser.find_element(By.ID, "leaderboard").text
    assert_not_injected(browser)
    assert browser.find_element(By.ID, "demo-banner").is_displayed()
    screenshot(browser, "gallery.png")

    # Sorting: a numeric column ascending, then descending on the second click (empty cells last).
    header = browser.find_element(By.CSS_SELECTOR, "#leaderboard th[data-column='clip_direction'] button")
    header.click()
    values = column(browser, "leaderboard", "clip_direction")
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers) and values[-1] == "" and len(numbers) == 2
    header.click()
    values = column(browser, "leaderboard", "clip_direction")
    assert [float(v) for v in values if v] == sorted(numbers, reverse=True) and values[-1] == ""
    browser.find_element(By.CSS_SELECTOR, "#leaderboard th[data-column='status'] button").click()
    assert column(browser, "leaderboard", "status") == sorted(column(browser, "leaderboard", "status"))


def test_domain_pages_from_file_url(gallery, browser):
    pages = {page.name: page for page in (gallery / "domains").glob("*.html")}
    expected = {"sketch.html": 1, "img-src-x-onerror-window.pwned-2.html": 2}  # trials per domain
    assert sorted(pages) == sorted(expected)
    for name, trials in expected.items():
        browser.get(pages[name].as_uri())
        # the source row, the evaluated trial's row, the progression (source + 2 eval steps), 2 plots
        assert_images_loaded(browser, expected=1 + 1 + 3 + 2)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#trials-table tbody tr")) == trials
        assert len(browser.find_elements(By.CSS_SELECTOR, "#trials .row")) == 1 + trials
        assert_not_injected(browser)
        plots = browser.find_elements(By.CSS_SELECTOR, ".plots img")
        assert len(plots) == 2 and all(p.size["width"] > 200 for p in plots)
        if name == "sketch.html":
            screenshot(browser, "domain.png")
        else:
            assert browser.find_element(By.TAG_NAME, "h1").text == HOSTILE_DOMAIN
            error = "RuntimeError: <i>boom</i><script>window.pwned=3</script>"
            assert error in browser.find_element(By.ID, "trials").text
    browser.find_element(By.LINK_TEXT, "← demo-sweep").click()
    assert browser.current_url.endswith("/index.html")


def test_gallery_over_http(server, browser):
    browser.get(f"{server}/index.html")
    assert_images_loaded(browser, expected=3)
    browser.find_element(By.CSS_SELECTOR, ".row.domain a").click()
    assert "/domains/" in browser.current_url
    assert_images_loaded(browser)
    assert_not_injected(browser)


def test_photo_section_and_morph_videos(photo_gallery, photo_server, browser):
    browser.get((photo_gallery / "index.html").as_uri())
    assert_images_loaded(browser, expected=3 + 4)  # source + 2 domains; photos, reconstruction, 2 domains
    rows = browser.find_elements(By.CSS_SELECTOR, "#photos .row.photo")
    assert [row.get_attribute("data-title") for row in rows] == ["your photos", "reconstruction", "anime", "sketch"]
    photo_images = browser.find_elements(By.CSS_SELECTOR, "#photos img")
    assert all(image.size["height"] == 160 and image.size["width"] > 3 * 150 for image in photo_images)  # 3 photos
    assert "clip features (builtin:tiny)" in rows[0].text
    screenshot(browser, "gallery_photos.png")

    # each domain row links its morph video; over HTTP Chromium plays it: 4 samples of 64 px, 16 frames at 24 fps
    browser.get(f"{photo_server}/index.html")
    links = browser.find_elements(By.CSS_SELECTOR, ".row.domain .media a")
    assert [link.text for link in links] == ["morph video", "morph video"]
    links[0].click()
    assert browser.current_url.endswith("/videos/anime.mp4")
    state = browser.execute_async_script(
        "const done = arguments[0], v = document.querySelector('video');"
        "if (!v) return done(null);"
        "const report = () => done([v.videoWidth, v.videoHeight, v.duration]);"
        "v.readyState >= 1 ? report() : v.addEventListener('loadedmetadata', report);")
    assert state[:2] == [4 * 64, 64] and state[2] == pytest.approx(16 / 24, abs=0.05)
