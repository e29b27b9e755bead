"""The web page end to end in headless Chromium (Debian's /usr/bin/chromium via Playwright).

Pick a corpus image, draw a crop on the canvas, search, see the ranked grid with scores;
upload a new image and find it at rank 1. Screenshots go to the test's temporary folder
(``pytest --basetemp=DIR`` keeps them where you can look at them).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from vs_lib import api, testing

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    paths = testing.build_small_platform(tmp_path_factory.mktemp("browser_platform"), 1500, n_users=20, seed=2)
    svc = testing.open_small_platform(paths)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(api.create_app(svc), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "server did not start"
    yield f"http://127.0.0.1:{port}", svc
    srv.should_exit = True
    thread.join(timeout=10)
    svc.close()


def test_web_page_search_crop_upload(server, tmp_path):
    import os

    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    base, svc = server
    rng = np.random.default_rng(5)
    pattern = np.kron((rng.random((7, 7)) > 0.5).astype(np.uint8) * 255, np.ones((4, 4), np.uint8))
    upload = tmp_path / "my_pattern.png"
    Image.fromarray(pattern).resize((112, 112), Image.NEAREST).save(upload)
    shot = tmp_path / "web_page.png"
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1100})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(base + "/")
            page.wait_for_selector("#strip img", timeout=15_000)
            assert "images indexed" in page.inner_text("#health")
            # pick the first corpus image and draw a crop rectangle on the canvas
            first = page.locator("#strip img").first
            qid = int(first.get_attribute("data-id"))
            first.click()
            page.wait_for_function("document.getElementById('qinfo').textContent.includes('corpus image')")
            box = page.locator("#canvas").bounding_box()
            page.mouse.move(box["x"] + 30, box["y"] + 30)
            page.mouse.down()
            page.mouse.move(box["x"] + 150, box["y"] + 120, steps=5)
            page.mouse.move(box["x"] + 250, box["y"] + 250, steps=5)
            page.mouse.up()
            crop = page.inner_text("#croptext")
            x0, y0, x1, y1 = (int(v) for v in crop.split(","))
            assert 0 <= x0 < x1 <= 28 and 0 <= y0 < y1 <= 28  # original pixels of a 28x28 image
            page.fill("#k", "12")
            page.click("#search")
            page.wait_for_selector("#grid .cell", timeout=15_000)
            cells = page.locator("#grid .cell")
            assert cells.count() == 12
            ids = [int(cells.nth(i).get_attribute("data-id")) for i in range(12)]
            assert qid not in ids
            assert "score" in page.inner_html("#grid") and "total" in page.inner_text("#timings")
            expected = svc.search(image_id=qid, crop=crop, k=12, user_id=1).ids
            assert ids == expected  # the page shows exactly what the service ranks
            assert page.inner_text("#error") == ""
            page.screenshot(path=str(shot), full_page=True)
            # upload a new image: it is indexed at once and found at rank 1
            page.set_input_files("#uploadfile", str(upload))
            page.fill("#tags", "checks,test")
            page.click("#uploadbtn")
            page.wait_for_function(
                "document.getElementById('uploadmsg').textContent.includes('found at rank')", timeout=15_000
            )
            msg = page.inner_text("#uploadmsg")
            assert "found at rank 1" in msg, msg
            assert page.locator("#grid .cell.new").count() == 1
            page.screenshot(path=str(shot.with_name("web_page_upload.png")), full_page=True)
            # a bad crop is explained, not crashed on
            page.evaluate("state.crop = [0, 0, 5000, 5000]")
            page.click("#search")
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=10_000)
            assert "400" in page.inner_text("#error") and "outside the image" in page.inner_text("#error")
        finally:
            browser.close()
    assert shot.exists() and shot.stat().st_size > 10_000
    assert all(u.startswith(base) or u.startswith("blob:") or u.startswith("data:") for u in requests), [
        u for u in requests if not u.startswith(base)
    ][:5]
