"""The review console: pages, escaping, security headers, and an analyst's confirmation in a real browser.

The daemon runs in a thread on a small library (FLOPP pristine without PET), and
real environmental particles (FLOPP-e) are dropped into its inbox, as in
tests/test_growth.py. The browser test drives headless Chromium through
selenium with the Debian ``chromium`` and ``chromium-driver`` packages
(``scripts/install-system-deps.sh``); without them it is skipped, and under CI
(``CI`` set) it fails. Screenshots of the pages go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import shutil
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.config import load_config
from daemon.service import Daemon
from daemon.store.ledger import ResultRecord, ResultStatus
from daemon.web import assets
from daemon.web.charts import Trace, spectrum_svg
from daemon.web.console import CONTENT_SECURITY_POLICY
from daemon.web.messages import Request
from daemon.web.summary import all_particles, sample_folder, summarise, time_buckets
from engine.analysis.evaluate import library_from_sources, load_source
from engine.core.labels import scoring_label
from engine.core.spectrum import Spectrum
from tests.conftest import REPO_ROOT, SHARED_DATA, spectrum_csv, wait_until
from tests.test_daemon import Running, write_config

FLOPP = SHARED_DATA / "flopp_frond2021"
HELD_OUT = "PET"
TOKEN = "s3cret-token"
PAGES = ("/", "/review", "/library")
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"

#: Names an attacker might give a file or folder in a shared inbox.
EVIL_FILE = "<img src=x onerror=alert(1)>.csv"
EVIL_FOLDER = "<svg onload=alert(2)>"
EVIL_LABEL = "<script>alert(3)</script>"
RAW_EVIL = ("<img src=x onerror=alert(1)>", "<svg onload=alert(2)>", "<script>alert(3)</script>")


@pytest.fixture(scope="module")
def particles() -> list[Spectrum]:
    """Environmental particles (FLOPP-e), every class."""
    return load_source(f"{FLOPP}@library=FLOPP-e")


@pytest.fixture(scope="module")
def pet_particles(particles: list[Spectrum]) -> list[Spectrum]:
    return [s for s in particles if scoring_label(s.metadata["label"]) == HELD_OUT]


@pytest.fixture(scope="module")
def other_particles(particles: list[Spectrum]) -> list[Spectrum]:
    return [s for s in particles if scoring_label(s.metadata["label"]) != HELD_OUT]


def save_library_without_pet(folder: Path) -> Path:
    library = library_from_sources([f"{FLOPP}@library=FLOPP"])
    library = library.subset(lambda e: scoring_label(e["label"]) != HELD_OUT)
    library.save(folder, message="FLOPP pristine without PET")
    return folder


def drop(folder: Path, spectra: list[Spectrum], prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, s in enumerate(spectra):
        path = folder / f"{prefix}_{i}.csv"
        path.write_text(spectrum_csv(s))
        paths.append(path)
    return paths


def done(daemon: Daemon) -> int:
    return daemon.ledger.counts()["done"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def parse_tags(text: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every start tag of a page with its attributes, as a browser's tokenizer sees them."""
    parser = _Tags()
    parser.feed(text)
    parser.close()
    return parser.tags


def fetch(url: str, *, method: str = "GET", body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """Status, headers (lower-case names) and text of a request; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            return response.status, {k.lower(): v for k, v in response.headers.items()}, text
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode()


# --------------------------------------------------------------------------- pure parts


class TestRendering:
    def test_sample_folder_is_named_inside_its_inbox(self) -> None:
        inboxes = [("ftir", Path("/data/ftir")), ("raman", Path("/data/raman"))]
        assert sample_folder("/data/raman/run 1/p.csv", inboxes) == "raman/run 1"
        assert sample_folder("/data/ftir/p.csv", inboxes) == "ftir"

    def test_the_overview_counts_the_particles_of_maps(self, tmp_path: Path) -> None:
        """A map gives particles, not results: a lab imaging its filters saw "No results yet"."""
        from daemon.store.ledger import Ledger, ResultRecord, ResultStatus
        from tests.test_report import deliver, map_particle, map_record

        particles = [map_particle(0, "PE", 50.0), map_particle(1, "PP", 20.0)]
        particles.append(map_particle(2, "", 9.0, status="unknown"))
        known = ResultRecord(0, ResultStatus.KNOWN, "lib1.r0", "PE", "PE", 0.9, {})
        with Ledger(tmp_path / "ledger.sqlite3") as ledger:
            deliver(ledger, "/data/ftir/filter-1/map.hdr", "map", now=10.0, map_record=map_record(particles))
            deliver(ledger, "/data/ftir/filter-2/p1.csv", "p1", now=20.0, results=[known])
            counted, truncated = all_particles(ledger)
        overview = summarise(counted, inboxes=[("ftir", Path("/data/ftir"))], now=30.0, truncated=truncated)
        assert (overview.total, overview.in_maps, truncated) == (4, 3, False)
        assert overview.by_category == {"PE": 2, "PP": 1, "unknown": 1}
        assert overview.by_folder == {
            "ftir/filter-1": {"PE": 1, "PP": 1, "unknown": 1},
            "ftir/filter-2": {"PE": 1},
        }

    def test_time_buckets_switch_from_hours_to_days(self) -> None:
        day = 86400.0
        hourly = time_buckets([0.0, 3600.0 * 5], now=3600.0 * 6)
        assert hourly.bucket_seconds == 3600 and sum(sum(c.values()) for c in hourly.counts) == 2
        daily = time_buckets([0.0, 10 * day], now=10 * day, statuses=["known", "unknown"])
        assert daily.bucket_seconds == 86400 and len(daily.counts) == 11
        assert daily.counts[0]["known"] == 1 and daily.counts[-1]["unknown"] == 1

    def test_spectrum_plot_breaks_at_gaps_and_escapes_names(self) -> None:
        wavenumbers = np.linspace(400, 4000, 901)
        values = np.sin(wavenumbers / 300)
        values[400:450] = np.nan
        svg = spectrum_svg(wavenumbers, [Trace(EVIL_LABEL, values, "#111")], title=EVIL_FILE, y_label="A")
        assert svg.count("<polyline") == 2
        assert not any(raw in svg for raw in RAW_EVIL)


class TestStaticFiles:
    def test_the_installed_package_finds_its_static_files(self) -> None:
        static = resources.files("daemon.web").joinpath("static")
        names = sorted(entry.name for entry in static.iterdir() if entry.is_file())
        assert names == ["console.css", "console.js"]
        assert static.joinpath("console.js").read_text("utf-8") == assets.SCRIPT
        assert "\n" + static.joinpath("console.css").read_text("utf-8") == assets.STYLE

    def test_the_static_files_are_package_data(self) -> None:
        setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
        patterns = setuptools["package-data"]["daemon.web"]
        static = resources.files("daemon.web").joinpath("static")
        for entry in static.iterdir():
            assert any(fnmatch.fnmatch(f"static/{entry.name}", pattern) for pattern in patterns), entry.name

    def test_the_script_is_served_as_read_and_the_stylesheet_hash_is_in_the_policy(self) -> None:
        response = assets.serve_script(Request("GET", "/console.js"))
        assert response.body == assets.SCRIPT.encode("utf-8")
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        digest = base64.b64encode(hashlib.sha256(assets.STYLE.encode()).digest()).decode()
        assert f"style-src 'sha256-{digest}'" in CONTENT_SECURITY_POLICY


# --------------------------------------------------------------------------- a running daemon


@pytest.fixture(scope="module")
def daemon_with_evil_names(
    tmp_path_factory: pytest.TempPathFactory, pet_particles: list[Spectrum], other_particles: list[Spectrum]
) -> Iterator[Daemon]:
    """A daemon (token set) whose inbox holds known particles, PET unknowns and hostile file names."""
    tmp = tmp_path_factory.mktemp("console")
    library = save_library_without_pet(tmp / "library")
    config = load_config(write_config(tmp, library, http={"port": 0, "token": TOKEN}))
    inbox = tmp / "inbox"
    with Running(Daemon(config)) as d:
        dropped = drop(inbox / "filter-01", other_particles[:8], "particle")
        dropped += drop(inbox / "filter-01", pet_particles[:2], "pet")
        evil = inbox / EVIL_FOLDER
        evil.mkdir()
        (evil / EVIL_FILE).write_text(spectrum_csv(pet_particles[2]))
        wait_until(lambda: done(d) == len(dropped) + 1, timeout=60)
        yield d


def url(daemon: Daemon, path: str) -> str:
    return f"http://127.0.0.1:{daemon.http.port}{path}"


class TestPages:
    def test_pages_render_without_a_token(self, daemon_with_evil_names: Daemon) -> None:
        d = daemon_with_evil_names
        pages = {path: fetch(url(d, path)) for path in PAGES}
        for path, (status, headers, _) in pages.items():
            assert status == 200, path
            assert headers["content-type"] == "text/html; charset=utf-8"
        _, _, overview = pages["/"]
        assert "lab/filter-01" in overview and d.models.get().version in overview
        assert "unknown rate" in overview and "watchers_up: lab" in overview
        assert overview.count('<svg xmlns="http://www.w3.org/2000/svg"') >= 2  # per polymer and over time
        _, _, review = pages["/review"]
        open_reviews = d.ledger.open_reviews()
        assert len(open_reviews) >= 2
        for item in open_reviews:
            assert f'id="review-{item.result.id}"' in review
        assert review.count("<polyline") >= 4 * len(open_reviews)  # the query and its 3 hits
        assert "Pearson r" in review and 'data-action="confirm-new"' in review
        _, _, library = pages["/library"]
        for label in d.models.get().library.class_counts():
            assert f"<strong>{label}</strong>" in library
        assert 'id="version-1"' in library and 'type="password" id="token"' in library

    def test_security_headers_on_every_console_response(self, daemon_with_evil_names: Daemon) -> None:
        d = daemon_with_evil_names
        for path in (*PAGES, "/console.js"):
            status, headers, text = fetch(url(d, path))
            assert status == 200
            csp = headers["content-security-policy"]
            assert csp == CONTENT_SECURITY_POLICY
            directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
            assert directives["script-src"] == "'self'"
            assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
            assert "unsafe" not in csp
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"
            if path == "/console.js":
                assert text == resources.files("daemon.web").joinpath("static/console.js").read_text("utf-8")
                continue
            # no inline script or event handler attribute; the one stylesheet is the hashed one
            assert re.findall(r"<script[^>]*>", text) == ['<script src="/console.js">']
            tags = parse_tags(text)
            assert [(tag, name) for tag, attrs in tags for name, _ in attrs if name.startswith("on")] == []
            assert [dict(attrs).get("src") for tag, attrs in tags if tag == "script"] == ["/console.js"]
            assert "img" not in {tag for tag, _ in tags}
            (style,) = re.findall(r"<style>(.*?)</style>", text, flags=re.S)
            digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
            assert directives["style-src"] == f"'sha256-{digest}'"

    def test_a_candidate_the_cnn_disagreed_with_says_so_in_review(
        self, daemon_with_evil_names: Daemon, pet_particles: list[Spectrum], tmp_path: Path
    ) -> None:
        d = daemon_with_evil_names
        path = tmp_path / "vetoed.csv"
        path.write_text(spectrum_csv(pet_particles[3]))
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        d.ledger.observe(path, size=1, mtime=1.0, now=1.0)
        d.ledger.mark_pending(path, sha, now=1.0)
        members = [{"name": "subknn", "label": "PE", "probability": 1.0}, {"name": "cnn", "label": "EVA"}]
        payload = {"candidate": "PE", "candidate_r": 0.71, "reason": "members_disagree", "members": members}
        d.ledger.complete(sha, [ResultRecord(0, ResultStatus.UNKNOWN, "lib1.r0", payload=payload)], now=1.0)
        _, _, review = fetch(url(d, "/review"))
        (item,) = [i for i in d.ledger.open_reviews() if Path(i.result.source_path).name == "vetoed.csv"]
        card = review.split(f'id="review-{item.result.id}"')[1].split("</article>")[0]
        assert "held for review: the CNN says <strong>EVA</strong>" in card
        assert "best class <strong>PE</strong>" in card

    def test_file_names_and_labels_are_escaped(self, daemon_with_evil_names: Daemon) -> None:
        d = daemon_with_evil_names
        _, _, review = fetch(url(d, "/review"))
        assert "&lt;img src=x onerror=alert(1)&gt;.csv" in review
        _, _, overview = fetch(url(d, "/"))
        assert "lab/&lt;svg onload=alert(2)&gt;" in overview
        # an analyst (or an attacker with the token) names a class with markup
        (known,) = d.ledger.results(status=ResultStatus.KNOWN, limit=1)
        body = json.dumps({"result_id": known.id, "label": EVIL_LABEL, "decided_by": EVIL_FOLDER}).encode()
        status, _, _ = fetch(url(d, "/api/confirm"), method="POST", body=body,
                             headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        assert EVIL_LABEL in d.models.get().library.class_counts()
        for path in PAGES:
            _, _, text = fetch(url(d, path))
            for raw in RAW_EVIL:
                assert raw not in text, (path, raw)
        _, _, library = fetch(url(d, "/library"))
        assert "&lt;script&gt;alert(3)&lt;/script&gt;" in library

    @pytest.mark.parametrize("content_type", [
        "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain",
    ])
    @pytest.mark.parametrize("route", ["/api/confirm", "/api/library/rollback", "/api/library/remove"])
    def test_cross_site_form_posts_are_refused(self, daemon_with_evil_names: Daemon, content_type: str,
                                               route: str) -> None:
        d = daemon_with_evil_names
        version = d.models.get().library.version
        open_before = len(d.ledger.open_reviews())
        result_id = d.ledger.results(status=ResultStatus.UNKNOWN, limit=1)[0].id
        form = f"result_id={result_id}&label=PE&version=1&reject=1".encode()
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):  # refused even with the token
            status, response_headers, _ = fetch(
                url(d, route), method="POST", body=form,
                headers={"Content-Type": content_type, "Origin": "https://evil.example", **headers},
            )
            assert status == 415
            assert "access-control-allow-origin" not in response_headers
        assert d.models.get().library.version == version
        assert len(d.ledger.open_reviews()) == open_before

    def test_json_writes_need_the_token(self, daemon_with_evil_names: Daemon) -> None:
        d = daemon_with_evil_names
        result_id = d.ledger.results(status=ResultStatus.UNKNOWN, limit=1)[0].id
        before = d.ledger.review(result_id)
        body = json.dumps({"result_id": result_id, "reject": True}).encode()
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            status, response_headers, _ = fetch(url(d, "/api/confirm"), method="POST", body=body,
                                                headers={"Content-Type": "application/json", **headers})
            assert status == 401 and response_headers["www-authenticate"] == "Bearer"
        assert d.ledger.review(result_id) == before

    def test_no_cors_is_ever_granted(self, daemon_with_evil_names: Daemon) -> None:
        d = daemon_with_evil_names
        origin = {"Origin": "https://evil.example"}
        preflight = {**origin, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type, authorization"}
        for path in (*PAGES, "/console.js", "/api/reviews", "/api/library", "/api/confirm"):
            for method, headers in (("GET", origin), ("OPTIONS", preflight)):
                status, response_headers, _ = fetch(url(d, path), method=method, headers=headers)
                granted = [name for name in response_headers if name.startswith("access-control-")]
                assert granted == [], (method, path)
                if method == "OPTIONS":
                    assert status >= 400, path

    def test_bad_offset_is_refused(self, daemon_with_evil_names: Daemon) -> None:
        assert fetch(url(daemon_with_evil_names, "/review?offset=-3"))[0] == 400
        assert fetch(url(daemon_with_evil_names, "/review?offset=x"))[0] == 400
        status, _, text = fetch(url(daemon_with_evil_names, "/review?offset=1000"))
        assert status == 200 and "Nothing to review" not in text


# --------------------------------------------------------------------------- the browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900",
)

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the dev extras are not installed
    webdriver = None  # type: ignore[assignment]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    if webdriver is None:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if missing:
        message = (f"the browser test needs {', '.join(missing)}; "
                   "run scripts/install-system-deps.sh as root (Debian packages chromium, chromium-driver)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, condition: Any, *, timeout: float = 20.0) -> Any:
    # a reload replaces the document: an element found just before it goes stale; look again
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(condition)


def screenshot(driver: WebDriver, name: str) -> Path:
    """The whole page: the window is made as tall as the document first."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    driver.set_window_size(1280, min(max(int(height) + int(chrome), 600), 8000))
    path = SCREENSHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    return path


def csp_violations(driver: WebDriver) -> list[str]:
    messages = [entry["message"] for entry in driver.get_log("browser")]
    return [message for message in messages if "Content Security Policy" in message]


class TestBrowser:
    def test_analyst_confirms_an_unknown_as_a_new_class(
        self, tmp_path: Path, browser: WebDriver, pet_particles: list[Spectrum],
        other_particles: list[Spectrum],
    ) -> None:
        library_dir = save_library_without_pet(tmp_path / "library")
        config = load_config(write_config(tmp_path, library_dir, http={"port": 0, "token": TOKEN}))
        inbox = tmp_path / "inbox"
        with Running(Daemon(config)) as d:
            # 1. a class the library lacks comes out unknown and waits for review
            first = drop(inbox / "filter-07", pet_particles[:4], "pet")
            first += drop(inbox / "filter-07", other_particles[:10], "particle")
            first += drop(inbox / "filter-08", other_particles[10:16], "particle")
            wait_until(lambda: done(d) == len(first), timeout=60)
            assert len(d.ledger.open_reviews()) >= 3
            version_before = d.models.get().library.version
            base = f"http://127.0.0.1:{d.http.port}"

            # 2. the pages are readable without the token
            browser.get(base + "/")
            wait(browser, lambda b: b.find_element(By.TAG_NAME, "h1").text == "Overview")
            assert "lab/filter-07" in browser.page_source
            screenshot(browser, "overview")
            browser.get(base + "/review")
            cards = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "article.review"))
            assert len(cards) == len(d.ledger.open_reviews())
            screenshot(browser, "review")

            # 3. a confirmation without the token is refused, and says why
            card = cards[0]
            result_id = int(card.get_attribute("data-result-id"))
            card.find_element(By.CSS_SELECTOR, "[data-role=new-label]").send_keys(HELD_OUT)
            card.find_element(By.CSS_SELECTOR, "button[data-action=confirm-new]").click()
            status = card.find_element(By.CSS_SELECTOR, "[data-role=status]")
            wait(browser, lambda b: "write token" in status.text)
            assert d.models.get().library.version == version_before

            # 4. with the token, typing the new label and confirming grows the library
            browser.find_element(By.ID, "analyst").send_keys("ana")
            browser.find_element(By.ID, "token").send_keys(TOKEN)
            browser.find_element(By.ID, "token-save").click()
            wait(browser, lambda b: b.find_element(By.ID, "token-state").text == "token set for this tab")
            card.find_element(By.CSS_SELECTOR, "button[data-action=confirm-new]").click()
            wait(browser, lambda b: status.text.startswith(f"Confirmed as {HELD_OUT}"))
            assert "new class" in status.text
            assert d.models.get().library.version == version_before + 1
            assert d.models.get().library.class_counts()[HELD_OUT] == 1
            review = d.ledger.review(result_id)
            assert review is not None and str(review.state) == "confirmed"
            assert review.label == HELD_OUT and review.decided_by == "ana"
            screenshot(browser, "review-confirmed")

            # 5. a later PET particle is known
            later = drop(inbox / "filter-09", pet_particles[10:12], "pet")
            wait_until(lambda: done(d) == len(first) + len(later), timeout=60)
            for path in later:
                record = d.ledger.file(path)
                assert record is not None and record.sha256 is not None
                (result,) = d.ledger.results(sha256=record.sha256)
                assert (str(result.status), result.label) == ("known", HELD_OUT), path.name

            # 6. the library page shows the new class and version; a rollback asks first
            browser.get(base + "/library")
            wait(browser, lambda b: b.find_element(By.ID, f"version-{version_before + 1}"))
            assert f"<strong>{HELD_OUT}</strong>" in browser.page_source
            screenshot(browser, "library")
            rollback = browser.find_element(By.CSS_SELECTOR, f"button[data-version='{version_before}']")
            rollback.click()
            wait(browser, expected_conditions.alert_is_present()).dismiss()
            assert d.models.get().library.version == version_before + 1
            rollback.click()
            alert = wait(browser, expected_conditions.alert_is_present())
            assert f"version {version_before}" in alert.text
            alert.accept()
            wait(browser, lambda b: "restored as library version" in b.find_element(By.ID, "flash").text)
            wait_until(lambda: d.models.get().library.version == version_before + 2, timeout=30)
            assert HELD_OUT not in d.models.get().library.class_counts()
            assert csp_violations(browser) == []

    def test_a_confirmation_that_looks_like_another_class_says_so_in_the_console(
        self, tmp_path: Path, browser: WebDriver
    ) -> None:
        """A PET reference's spectrum, queued for review and confirmed as PP: the card's status says
        that it looks like PET, not PP (the daemon adds it, the analyst decides)."""
        library_dir = tmp_path / "library"
        library_from_sources([f"{FLOPP}@library=FLOPP"]).save(library_dir, message="FLOPP pristine")
        config = load_config(write_config(tmp_path, library_dir, http={"port": 0, "token": TOKEN}))
        pet = [
            s for s in load_source(f"{FLOPP}@library=FLOPP") if scoring_label(s.metadata["label"]) == "PET"
        ]
        with Running(Daemon(config)) as d:
            (path,) = drop(tmp_path / "inbox" / "filter-01", pet[:1], "pet")
            wait_until(lambda: done(d) == 1, timeout=60)
            record = d.ledger.file(path)
            assert record is not None and record.sha256 is not None
            (result,) = d.ledger.results(sha256=record.sha256)
            d.ledger.enqueue_review(result.id, now=d.clock())  # any result can be queued by hand
            base = f"http://127.0.0.1:{d.http.port}"
            browser.get(base + "/review")
            wait(browser, lambda b: b.find_element(By.ID, "token"))
            browser.find_element(By.ID, "token").send_keys(TOKEN)
            browser.find_element(By.ID, "token-save").click()
            card = wait(browser, lambda b: b.find_element(By.ID, f"review-{result.id}"))
            card.find_element(By.CSS_SELECTOR, "[data-role=new-label]").send_keys("PP")
            card.find_element(By.CSS_SELECTOR, "button[data-action=confirm-new]").click()
            status = card.find_element(By.CSS_SELECTOR, "[data-role=status]")
            wait(browser, lambda b: status.text.startswith("Confirmed as PP"))
            # the note also says what the classifier had said (the result was known as PET)
            assert "Note: " in status.text and "looks like PET, not PP (r 0.9" in status.text
            assert status.text.endswith("check the label.")
            screenshot(browser, "review-confirmed-doubtful")
            assert csp_violations(browser) == []
