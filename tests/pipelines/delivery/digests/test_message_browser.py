"""A digest's HTML part opened in headless Chromium: titles shown, hostile markup inert, a real picture.

Needs Debian's ``chromium`` (CI installs ``chromium chromium-driver``); skipped only when it is absent.
"""

from __future__ import annotations

import datetime as dt
import email
import shutil
import subprocess
from email import policy
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from pipelines.core.settings import DigestConfig
from pipelines.delivery.digests.renderer import DigestRenderer
from pipelines.delivery.digests.schedule import SendSlot

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: apt-get install -y chromium chromium-driver"
)

DS = dt.date(2026, 3, 7)
SCRIPT_TITLE = (
    "<script>document.title='pwned';"
    "document.body.insertAdjacentHTML('beforeend','<p id=\"pwned\">owned</p>')</script>"
)
IMG_TITLE = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
TITLES = [
    "Rust 2.0 released: what changes for embedded developers",
    SCRIPT_TITLE,
    IMG_TITLE,
    "مرحبا بالعالم — شرح المترجمات",
    "Rocket 🚀 for devs 👩‍💻 and a broken <b tag",
]


class Dom(HTMLParser):
    """Elements (tag, attributes) and the text of a serialized DOM."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.title = ""
        self._in_title = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_title:
            self.title += data

    @property
    def ids(self) -> set[str | None]:
        return {attrs.get("id") for _, attrs in self.elements}


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def digest_html(tmp_path: Path) -> Path:
    config = DigestConfig()
    shown = [
        {
            "item_id": f"i{n}",
            "title": title,
            "summary": f"Why post {n} matters: a short summary that a reader sees under the title. " * 2,
            "tags": ["rust", "compilers"] if n % 2 else ["python"],
            "source": f"source-{n:03d}",
            "url": f"https://posts.example/i{n}",
            "deleted": False,
        }
        for n, title in enumerate(TITLES, start=1)
    ]
    slot = SendSlot(dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 7, tzinfo=dt.UTC))
    message = DigestRenderer(DS, config).message("u01", "u01@example.com", "daily", slot, shown)
    parsed = email.message_from_bytes(message.raw.encode("ascii"), policy=policy.default)
    path = tmp_path / "digest.html"
    path.write_text(parsed.get_body(("html",)).get_content(), encoding="utf-8")
    return path


def test_scripts_run_in_this_chromium(tmp_path: Path) -> None:
    # The control for the test below: a real script does change the title and the DOM here.
    page = tmp_path / "control.html"
    page.write_text(f"<html><head><title>before</title></head><body>{SCRIPT_TITLE}</body></html>")
    dom = Dom(chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout)
    assert "pwned" in dom.ids
    assert dom.title == "pwned"


def test_digest_renders_titles_and_keeps_hostile_markup_inert(tmp_path: Path) -> None:
    page = digest_html(tmp_path)
    dom = Dom(chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout)
    text = "".join(dom.text)
    for title in TITLES:
        assert title in text, title
    assert "pwned" not in dom.ids
    assert not [tag for tag, attrs in dom.elements if "data-pwned" in attrs]
    assert not [tag for tag, _ in dom.elements if tag in ("script", "img", "b")]
    assert (
        dom.title == f"Your daily Nightfeed digest, Sun 8 Mar: {TITLES[0]}"  # 55 characters: not cut
    )

    shot = tmp_path / "digest.png"
    chromium(
        "--hide-scrollbars",
        "--window-size=720,1600",
        f"--screenshot={shot}",
        page.as_uri(),
        profile=tmp_path / "profile-shot",
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
    with Image.open(shot) as image:
        assert image.size == (720, 1600)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    # A blank or single-colour page has 1 colour; text, buttons and the header give thousands.
    assert colours is not None and len(colours) > 100
    dominant = max(colours)[0] / (720 * 1600)
    assert dominant < 0.9
