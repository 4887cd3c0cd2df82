"""The try page's server side: its static files under a strict CSP without a key, the clip listing (paged,
searchable, cheap on a large cache), one clip's texts and its audio as WAV, over the real router under uvicorn
with a real cache folder and the committed speech clips. The browser itself is tests/test_browser.py."""

from __future__ import annotations

import io
import json
import os
import re
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from audio_score.cache import META, ReferenceCache
from audio_score.clips import ClipRef
from audio_score.env_settings import RouterEnv
from audio_score.settings import RouterSettings, load_settings
from audio_score_tools.speech import MODEL_KEY, build_speech_workspace
from router.clips import PLAY_RATE, ClipListing
from router.try_page import CONTENT_SECURITY_POLICY

from conftest import free_port, run_router

KEY = "try-page-key"
AUTH = {"X-API-Key": KEY}
STATIC = Path(__file__).resolve().parent.parent / "router" / "static"


def settings_for(config: Path, **env: str) -> RouterSettings:
    base = {"AUDIO_SCORE_API_KEYS": KEY, "AUDIO_SCORE_PREDICTOR_URL": f"http://127.0.0.1:{free_port()}"}
    return load_settings(RouterEnv, config, env={**base, **env})


def write_entry(cache_dir: Path, uid: str, cid: str, clip: Path, text: str | None) -> None:
    """A complete entry through the cache's own writer (features are placeholders: the page never reads them)."""
    ReferenceCache(cache_dir, MODEL_KEY).write(
        ClipRef(uid, cid, clip),
        transcript=f"transcript of {uid}/{cid}",
        embedding=np.ones(4, np.float32),
        frames=np.ones((2, 4), np.float32),
        fingerprint={"test": 1},
        sampling_rate=16000,
        duration_s=2.5,
        source={"path": str(clip), "size": 1, "mtime_ns": 1, "sha256": "x", "text": None},
        reference_text=text,
    )


def bare_entry(root: Path, uid: str, cid: str) -> None:
    """An entry folder with its meta.json: all the listing looks at."""
    folder = root / MODEL_KEY / uid / cid
    folder.mkdir(parents=True)
    (folder / META).write_text("{}")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    ws = build_speech_workspace(tmp_path_factory.mktemp("try-ws"), tmp_path_factory.mktemp("no-model"))
    for sid in ("s1", "s2"):
        clip = ws.clip_dir / "lesson" / f"{sid}.mov"
        write_entry(ws.cache_dir, "lesson", sid, clip, (clip.with_suffix(".txt")).read_text().strip())
    return ws


@pytest.fixture(scope="module")
def url(ws):
    with run_router(settings_for(ws.config_path)) as url:
        yield url


def test_the_page_loads_without_a_key_under_a_strict_csp(url: str) -> None:
    root = httpx.get(f"{url}/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "try/"
    bare = httpx.get(f"{url}/try", follow_redirects=True)  # without the slash: sent to the page (relative URLs)
    assert bare.status_code == 200 and str(bare.url).endswith("/try/")
    page = httpx.get(f"{url}/try/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "media-src 'self' blob:" in CONTENT_SECURITY_POLICY
    assert page.headers["x-content-type-options"] == "nosniff"
    for name, kind in (("try.js", "javascript"), ("try.css", "text/css")):
        asset = httpx.get(f"{url}/try/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"], name
        assert asset.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert httpx.get(f"{url}/try/nope.js").status_code == 404
    assert httpx.get(f"{url}/try/../clips").status_code in (401, 404)  # never an open door to the API
    # Everything with data needs the key; the page's files do not.
    for path in ("/clips", "/clips/lesson/s1", "/clips/lesson/s1/audio", "/models"):
        response = httpx.get(f"{url}{path}")
        assert response.status_code == 401 and "API key" in response.json()["detail"], path


def test_the_page_has_no_inline_code_and_nothing_from_elsewhere() -> None:
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="try.js" defer>']
    assert "<style" not in html and not re.search(r"\sstyle\s*=", html) and not re.search(r"\son[a-z]+\s*=", html)
    for name in ("index.html", "try.js", "try.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), f"{name} loads something from elsewhere"
        assert "@import" not in text and "localStorage" not in text and "sessionStorage" not in text


def test_listing_a_clip_its_texts_and_its_audio(url: str, ws) -> None:
    listed = httpx.get(f"{url}/clips", headers=AUTH).json()
    assert listed == {
        "model": MODEL_KEY,
        "clips": [{"uid": "lesson", "cid": "s1"}, {"uid": "lesson", "cid": "s2"}],
        "next": None,
    }
    detail = httpx.get(f"{url}/clips/lesson/s1", params={"model": MODEL_KEY}, headers=AUTH).json()
    assert detail["reference_text"] == (ws.clip_dir / "lesson" / "s1.txt").read_text().strip()
    assert detail["transcript"] == "transcript of lesson/s1" and detail["duration_s"] == 2.5
    assert detail["audio"] is True and detail["audio_detail"] is None

    audio = httpx.get(f"{url}/clips/lesson/s1/audio", headers=AUTH)
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(audio.content)) as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) == (1, 2, PLAY_RATE)
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), "<i2")
    assert 1.0 < len(pcm) / PLAY_RATE < 10.0 and np.abs(pcm).max() > 1000  # speech, not silence


@pytest.mark.parametrize(
    ("path", "params", "status", "phrase"),
    [
        ("/clips/lesson/s9", {}, 404, "no reference clip for uid='lesson' cid='s9'"),
        ("/clips/lesson/s3", {}, 404, "in the cache of model"),  # a clip with no entry yet
        ("/clips/lesson/s9/audio", {}, 404, "no reference clip file"),
        ("/clips/..lesson/s1/audio", {}, 400, "must not start with '.'"),
        ("/clips/le%24son/s1", {}, 400, "invalid uid"),
        ("/clips", {"model": "nope"}, 404, "unknown model 'nope'"),
        ("/clips", {"after": "lesson"}, 400, "invalid cursor"),
        ("/clips", {"after": "lesson/../x"}, 400, "invalid cursor cid"),
        ("/clips", {"q": "a/b"}, 400, "invalid uid prefix"),
        ("/clips", {"limit": "0"}, 422, "limit"),
        ("/clips", {"limit": "501"}, 422, "limit"),
    ],
)
def test_bad_requests_say_what_is_wrong(url: str, path: str, params: dict, status: int, phrase: str) -> None:
    response = httpx.get(f"{url}{path}", params=params, headers=AUTH)
    assert response.status_code == status, response.text
    assert phrase in response.json()["detail"]


def test_without_the_folders_the_listing_says_how_to_mount_them_and_the_page_still_scores(tmp_path: Path, ws) -> None:
    config = json.loads(ws.config_path.read_text())
    config.update(video_clip_dir=str(tmp_path / "not-mounted-clips"), cache_dir=str(tmp_path / "not-mounted-cache"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with run_router(settings_for(path)) as url:
        listing = httpx.get(f"{url}/clips", headers=AUTH)
        assert listing.status_code == 503
        assert "cannot read the reference cache folder" in listing.json()["detail"]
        assert "router.tryPage.mountStorage" in listing.json()["detail"]
        audio = httpx.get(f"{url}/clips/lesson/s1/audio", headers=AUTH)
        assert audio.status_code == 404 and "cannot read the clip folder" in audio.json()["detail"]
        assert httpx.get(f"{url}/try/").status_code == 200

    # The cache readable, the clips not: the texts come back and say why there is no audio.
    config["cache_dir"] = str(ws.cache_dir)
    path.write_text(json.dumps(config))
    with run_router(settings_for(path)) as url:
        detail = httpx.get(f"{url}/clips/lesson/s1", headers=AUTH).json()
        assert detail["audio"] is False and "cannot read the clip folder" in detail["audio_detail"]
        assert detail["reference_text"]


def all_pages(listing: ClipListing, limit: int, prefix: str = "") -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    after = None
    while True:
        page, cursor = listing.page(MODEL_KEY, prefix=prefix, after=after, limit=limit)
        assert len(page) <= limit
        seen += page
        if cursor is None:
            return seen
        assert cursor == "/".join(page[-1]) and len(page) == limit
        uid, cid = cursor.split("/")
        after = (uid, cid)


def test_pages_walk_every_entry_once_in_order_and_the_prefix_filters_uids(tmp_path: Path) -> None:
    expected = []
    for u in range(40):
        for c in range(u % 4):  # some uid folders hold no entry at all
            bare_entry(tmp_path, f"vid{u:03d}", f"c{c}")
            expected.append((f"vid{u:03d}", f"c{c}"))
    root = tmp_path / MODEL_KEY
    (root / "vid001" / ".tmp-c9+x+1+1+").mkdir()  # a writer's temporary folder
    (root / "vid002" / "half").mkdir()  # no meta.json: not complete
    (root / ".old-x").mkdir()
    listing = ClipListing(tmp_path)
    assert sorted(expected) == list(ReferenceCache(tmp_path, MODEL_KEY).entries())
    for limit in (1, 7, 59, 500):
        assert all_pages(listing, limit) == sorted(expected)
    assert all_pages(listing, 5, prefix="vid01") == [e for e in sorted(expected) if e[0].startswith("vid01")]
    assert all_pages(listing, 5, prefix="zzz") == []
    assert listing.page("other-model", limit=5) == ([], None)


def test_a_page_costs_the_entries_it_returns_not_the_whole_cache(tmp_path: Path, monkeypatch) -> None:
    for u in range(3000):
        bare_entry(tmp_path, f"u{u:05d}", "c")
    old = 1_000_000_000
    for folder in [tmp_path / MODEL_KEY, *(tmp_path / MODEL_KEY).iterdir()]:
        os.utime(folder, (old, old))  # settled folders: their listings can be kept
    listing = ClipListing(tmp_path)
    listing.page(MODEL_KEY, limit=10)  # reads the uid folder names once
    scans: list[str] = []
    stats: list[str] = []
    real_scandir, real_is_file = os.scandir, Path.is_file

    def counting_scandir(path):
        scans.append(str(path))
        return real_scandir(path)

    def counting_is_file(self):
        stats.append(str(self))
        return real_is_file(self)

    monkeypatch.setattr("router.clips.os.scandir", counting_scandir)
    monkeypatch.setattr(Path, "is_file", counting_is_file)
    page, cursor = listing.page(MODEL_KEY, after=("u01500", "c"), limit=10)
    assert page == [(f"u{u:05d}", "c") for u in range(1501, 1511)] and cursor == "u01510/c"
    assert len(stats) == 11  # one meta.json per entry returned, and one to know there is a next page
    # Only the uid folders the page touched (the cursor's and the eleven after it), never the model folder again.
    assert len(scans) == 12 and str(tmp_path / MODEL_KEY) not in scans
    scans.clear()
    listing.page(MODEL_KEY, after=("u01500", "c"), limit=10)
    assert scans == []  # the same page again: every folder's listing is kept

    # A new entry changes its folder's mtime, so the next request sees it.
    monkeypatch.undo()
    bare_entry(tmp_path, "u01500x", "c")
    page, _ = listing.page(MODEL_KEY, after=("u01500", "c"), limit=1)
    assert page == [("u01500x", "c")]
