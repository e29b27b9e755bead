"""The web page end to end in headless Chromium (Debian's /usr/bin/chromium via Playwright).

Signed out: pick a corpus image, draw a crop on the canvas, search, see the ranked grid with
scores (exactly what the service ranks for an anonymous requester). Then sign in with an API
token, upload a private image and find it at rank 1; sign out, and the same page can no longer
fetch it. Screenshots go to the test's temporary folder (``pytest --basetemp=DIR`` keeps them
where you can look at them) and, when ``VS_SCREENSHOTS`` names a folder, are copied there.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

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
    yield f"http://127.0.0.1:{port}", svc, testing.issue_token(paths, 3, label="browser test")
    srv.should_exit = True
    thread.join(timeout=10)
    svc.close()


def test_web_page_search_crop_upload(server, tmp_path):
    import os

    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    base, svc, token = server
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
            expected = svc.search(image_id=qid, crop=crop, k=12, user_id=None).ids
            assert ids == expected  # the page shows exactly what the service ranks for a signed-out requester
            assert page.inner_text("#error") == ""
            page.screenshot(path=str(shot), full_page=True)
            # signed out, the page asks to sign in before an upload; the API itself answers 401
            page.set_input_files("#uploadfile", str(upload))
            page.click("#uploadbtn")
            page.wait_for_function("document.getElementById('error').textContent.includes('sign in')", timeout=10_000)
            anon = page.request.post(f"{base}/images", multipart={"image": {"name": "u.png", "mimeType": "image/png",
                                                                             "buffer": upload.read_bytes()}})  # fmt: skip
            assert anon.status == 401, anon.text()
            # sign in with a token: the page shows who, and the session cookie is HttpOnly
            page.fill("#token", token)
            page.click("#signinbtn")
            page.wait_for_selector("#whoami:not([hidden])", timeout=10_000)
            assert page.inner_text("#whoid") == "3" and page.is_hidden("#signin")
            cookies = page.context.cookies()
            assert cookies and all(c["httpOnly"] and c["sameSite"] == "Strict" for c in cookies), cookies
            assert token not in page.content()  # the token field was cleared
            page.screenshot(path=str(shot.with_name("web_page_signed_in.png")), full_page=True)
            # a signed-in private upload: indexed at once and found at rank 1
            page.set_input_files("#uploadfile", str(upload))
            page.fill("#tags", "checks,test")
            page.check("#private")
            page.click("#uploadbtn")
            page.wait_for_function(
                "document.getElementById('uploadmsg').textContent.includes('found at rank')", timeout=15_000
            )
            msg = page.inner_text("#uploadmsg")
            assert "found at rank 1" in msg, msg
            assert page.locator("#grid .cell.new").count() == 1
            new_id = int(page.locator("#grid .cell.new").first.get_attribute("data-id"))
            assert svc.store.visible(new_id, 3).owner_id == 3 and svc.store.image_meta([new_id])[new_id].is_private
            assert page.request.get(f"{base}/images/{new_id}").status == 200  # its owner's session sees it
            page.screenshot(path=str(shot.with_name("web_page_upload.png")), full_page=True)
            # a bad crop is explained, not crashed on
            page.evaluate("state.crop = [0, 0, 5000, 5000]")
            page.click("#search")
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=10_000)
            assert "400" in page.inner_text("#error") and "outside the image" in page.inner_text("#error")
            # sign out: the session is gone, and the private upload is a 404 for this page again
            page.click("#signout")
            page.wait_for_selector("#signin:not([hidden])", timeout=10_000)
            assert page.request.get(f"{base}/images/{new_id}").status == 404
        finally:
            browser.close()
    shots = sorted(tmp_path.glob("web_page*.png"))
    assert len(shots) == 3 and all(p.stat().st_size > 10_000 for p in shots)
    if os.environ.get("VS_SCREENSHOTS"):
        out = Path(os.environ["VS_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        for p in shots:
            shutil.copy2(p, out / p.name)
    assert all(u.startswith(base) or u.startswith("blob:") or u.startswith("data:") for u in requests), [
        u for u in requests if not u.startswith(base)
    ][:5]
