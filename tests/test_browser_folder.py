"""The web page in folder mode end to end, in headless Chromium (Debian's /usr/bin/chromium via Playwright).

A small folder of photos (tests/_folder_photos.py) is indexed once with the photo encoder
and served by the folder app. The page shows the folder's thumbnails; picking one and
searching shows the ranked grid with scores (exactly what the collection ranks); a crop drawn
on the canvas is sent in full-size pixels and finds the cat's photo first; moving the
similarity cut-off drops the results below it; an uploaded file is a query too. Screenshots
go to the test's temporary folder and, when ``VS_SCREENSHOTS`` names a folder, are copied there.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from _folder_photos import FACE, IMAGES, indexed_folder
from PIL import Image
from test_browser import CHROMIUM, CHROMIUM_ARGS, free_port

from vs_lib.api.folder import create_folder_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    root = tmp_path_factory.mktemp("folder_browser")
    with indexed_folder(root) as (folder, _, coll):
        port = free_port()
        srv = uvicorn.Server(uvicorn.Config(create_folder_app(coll), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        deadline = time.time() + 30
        while not srv.started and time.time() < deadline:
            time.sleep(0.05)
        assert srv.started, "server did not start"
        yield f"http://127.0.0.1:{port}", folder, coll
        srv.should_exit = True
        thread.join(timeout=10)


def grid(page) -> list[tuple[str, float]]:
    """``(path, score)`` of every result cell, in the order shown."""
    cells = page.locator("#grid .cell")
    return [
        (cells.nth(i).get_attribute("data-path"), float(cells.nth(i).locator(".score").inner_text()))
        for i in range(cells.count())
    ]


def slider_cut(scores: list[float]) -> float:
    """A cut-off on the slider's 0.01 steps that keeps about half of ``scores`` and lies clearly
    between two of them (the page shows scores rounded to 3 decimals)."""
    steps = [round(-1 + 0.01 * i, 2) for i in range(201)]
    fits = [
        c for c in steps if 0 < sum(s >= c for s in scores) < len(scores) and min(abs(s - c) for s in scores) > 2e-3
    ]
    assert fits, scores
    return min(fits, key=lambda c: abs(sum(s >= c for s in scores) - len(scores) / 2))


def drag(page, rect: tuple[int, int, int, int], size: tuple[int, int]) -> None:
    """Draw ``rect`` (original pixels of a landscape image of ``size``) on the canvas with the mouse."""
    box = page.evaluate(  # the canvas's drawing area in page pixels (inside its border)
        """() => { const c = document.getElementById('canvas'), r = c.getBoundingClientRect();
                   return {x: r.left + c.clientLeft, y: r.top + c.clientTop, w: c.clientWidth, h: c.clientHeight}; }"""
    )
    scale = box["w"] / size[0]  # a landscape image spans the canvas's width, centred vertically
    left, top = box["x"], box["y"] + (box["h"] - size[1] * scale) / 2
    x0, y0, x1, y1 = rect
    page.mouse.move(left + x0 * scale, top + y0 * scale)
    page.mouse.down()
    page.mouse.move(left + (x0 + x1) / 2 * scale, top + (y0 + y1) / 2 * scale, steps=5)
    page.mouse.move(left + x1 * scale, top + y1 * scale, steps=5)
    page.mouse.up()


def search_and_wait(page) -> None:
    page.evaluate("document.getElementById('timings').textContent = ''")
    page.click("#search")
    page.wait_for_function("document.getElementById('timings').textContent.includes('total')", timeout=30_000)


def test_folder_page_thumbnails_pick_crop_cut_off_upload(server, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    base, folder, coll = server
    shot = tmp_path / "web_page_folder.png"
    face_file = tmp_path / "face.png"
    Image.open(folder / "chelsea.jpg").convert("RGB").crop(FACE).save(face_file)
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1300})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(base + "/")
            # the folder's thumbnails, every one that is served actually loaded
            page.wait_for_selector("#strip img[data-path]", timeout=15_000)
            page.wait_for_function(
                "[...document.querySelectorAll('#strip img[src]')].every(i => i.complete && i.naturalWidth > 0)",
                timeout=30_000,
            )
            shown = [page.locator("#strip img").nth(i).get_attribute("data-path") for i in range(len(IMAGES))]
            assert shown == IMAGES and page.locator("#strip img").count() == len(IMAGES)
            assert page.locator("#strip img[src]").count() == len(IMAGES) - 1  # outside.png is never served
            assert f"{len(IMAGES)} images indexed" in page.inner_text("#health")
            assert f"{len(IMAGES)} images" in page.inner_text("#pageinfo")
            assert page.is_hidden("#signin") and page.is_hidden("#upload") and page.is_visible("#minscore")
            # pick a photo and search: the ranked grid with scores, as the collection ranks it
            page.click("#strip img[data-path='coffee.jpg']")
            page.wait_for_function("document.getElementById('qinfo').textContent.includes('coffee.jpg, 600×400')")
            search_and_wait(page)
            got = grid(page)
            expected = coll.search(folder / "coffee.jpg", k=10).results
            assert [p for p, _ in got] == [h.path for h in expected]
            assert [s for _, s in got] == pytest.approx([h.score for h in expected], abs=1e-3)
            assert got[0][0] == "coffee.jpg" and "+1 near-duplicate" in page.inner_text("#grid")
            page.screenshot(path=str(shot.with_name("web_page_folder_pick.png")), full_page=True)
            # large.jpg is drawn from a reduced copy, yet a crop is in the original's pixels
            page.click("#strip img[data-path='large.jpg']")
            page.wait_for_function("document.getElementById('qinfo').textContent.includes('large.jpg, 2400×1600')")
            drag(page, (1200, 800, 1800, 1200), (2400, 1600))
            drawn = [int(v) for v in page.inner_text("#croptext").split(",")]
            assert all(abs(a - b) <= 10 for a, b in zip(drawn, (1200, 800, 1800, 1200), strict=True)), drawn
            # draw a crop around the cat's face on the canvas: it arrives in full-size pixels
            page.click("#strip img[data-path='chelsea.jpg']")
            page.wait_for_function("document.getElementById('qinfo').textContent.includes('chelsea.jpg, 451×300')")
            drag(page, FACE, (451, 300))
            crop = page.inner_text("#croptext")
            drawn = [int(v) for v in crop.split(",")]
            assert all(abs(a - b) <= 4 for a, b in zip(drawn, FACE, strict=True)), (crop, FACE)
            search_and_wait(page)
            got = grid(page)
            expected = coll.search(folder / "chelsea.jpg", k=10, crop=crop).results
            assert got[0][0] == "chelsea.jpg"
            assert [p for p, _ in got] == [h.path for h in expected]
            # move the similarity cut-off: the results below it are gone, the others stay in order
            cut = slider_cut([s for _, s in got])
            page.evaluate(
                """(v) => { const s = document.getElementById('minscore'); s.value = v;
                   s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }""",
                str(cut),
            )
            page.wait_for_function("document.getElementById('resultnote')?.textContent.includes('score ≥')")
            assert page.inner_text("#minscoretext") == f"{cut:.2f}"
            kept = grid(page)
            assert kept == [(p, s) for p, s in got if s >= cut] and 0 < len(kept) < len(got)
            assert page.inner_text("#error") == ""
            page.screenshot(path=str(shot), full_page=True)
            # an uploaded file is a query too (nothing is written into the folder)
            page.evaluate(
                """() => { const s = document.getElementById('minscore'); s.value = s.min;
                   s.dispatchEvent(new Event('input')); }"""
            )
            page.set_input_files("#queryfile", str(face_file))
            page.wait_for_function("document.getElementById('qinfo').textContent.includes('your file face.png')")
            search_and_wait(page)
            assert grid(page)[0][0] == "chelsea.jpg"
            page.screenshot(path=str(shot.with_name("web_page_folder_upload.png")), full_page=True)
            # a bad crop is explained, not crashed on
            page.evaluate("state.crop = [0, 0, 5000, 5000]")
            page.click("#search")
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=10_000)
            assert "400" in page.inner_text("#error") and "outside the image" in page.inner_text("#error")
        finally:
            browser.close()
    assert sorted(p.name for p in folder.iterdir()) == sorted({i.split("/")[0] for i in IMAGES} | {"notes.txt"})
    shots = sorted(tmp_path.glob("web_page_folder*.png"))
    assert len(shots) == 3 and all(Image.open(io.BytesIO(p.read_bytes())).size[0] == 1200 for p in shots)
    print(f"screenshot: {shot}")
    if os.environ.get("VS_SCREENSHOTS"):
        out = Path(os.environ["VS_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        for p in shots:
            shutil.copy2(p, out / p.name)
    assert all(u.startswith(base) or u.startswith("blob:") or u.startswith("data:") for u in requests), [
        u for u in requests if not u.startswith(base)
    ][:5]
