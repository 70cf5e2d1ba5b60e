"""The web page in a real (headless) Chromium: ask about an uploaded image, generate into the
gallery, cancel a generation."""

import json
import pathlib
import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import KEY, ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not pathlib.Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1000, "height": 720})
    problems = []
    # The page asks for /v1/models once before the key is typed: that 401 is expected.
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "401" not in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url + "/")
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    expect(page.locator("#model")).to_have_text("shapes-janus")
    return page, problems


def test_ask_generate_and_screenshot(browser, server, tmp_path):
    page, problems = open_page(browser, server.url)
    # Count streamed pieces as the page receives them.
    page.set_input_files("#image-file", str(ROOT / "docs" / "red-circle.png"))
    expect(page.locator("#attachment")).to_be_visible()
    page.fill("#question", "What is in the image?")
    page.click("#send")
    answer = page.locator(".msg.assistant.done span")
    expect(answer).to_have_text(" a red circle.", timeout=30_000)
    expect(page.locator(".msg.user img")).to_have_count(1)
    # A second turn goes out with the history.
    page.fill("#question", "What is in the image?")
    page.click("#send")
    expect(page.locator(".msg.assistant.done")).to_have_count(2, timeout=30_000)
    page.screenshot(path=str(tmp_path / "ask.png"))

    page.click("#tab-generate")
    page.fill("#prompt", "a red circle")
    page.fill("#count", "2")
    page.fill("#seed", "1")
    page.click("#generate")
    expect(page.locator("#gallery img")).to_have_count(2, timeout=30_000)
    expect(page.locator("#generate-status")).to_have_text("done: 2 image(s)")
    assert page.locator("#progress").evaluate("p => p.value") == 1
    for img in page.locator("#gallery img").all():
        assert img.evaluate("i => i.complete && i.naturalWidth") == 32
    page.screenshot(path=str(tmp_path / "generate.png"))
    assert not problems, problems
    if shutil.os.environ.get("JANUS_PAGE_SCREENSHOT"):
        shutil.copy(tmp_path / "ask.png", shutil.os.environ["JANUS_PAGE_SCREENSHOT"])


def test_streaming_reaches_the_page_piece_by_piece(browser, slow_server):
    page, problems = open_page(browser, slow_server.url)
    page.set_input_files("#image-file", str(ROOT / "docs" / "red-circle.png"))
    page.fill("#question", "What is in the image?")
    page.click("#send")
    streaming = page.locator(".msg.assistant.streaming span")
    # Part of the answer is on the page before the answer is complete.
    expect(streaming).not_to_have_text("", timeout=30_000)
    partial = streaming.text_content()
    expect(page.locator(".msg.assistant.done span")).to_have_text(" a red circle.", timeout=30_000)
    assert partial and partial != " a red circle.", partial
    assert not problems, problems


def test_cancel_stops_the_generation(browser, slow_server):
    page, problems = open_page(browser, slow_server.url)
    before = json.loads(slow_server.get("/janus/v1/status")[2])["cancelled"]
    page.click("#tab-generate")
    page.fill("#prompt", "a green square")
    page.fill("#count", "2")
    page.click("#generate")
    expect(page.locator("#generate-status")).to_contain_text("drawing…", timeout=30_000)
    page.click("#cancel")
    expect(page.locator("#generate-status")).to_have_text("cancelled")
    expect(page.locator("#gallery img")).to_have_count(0)
    # The server saw the client leave and stopped the job.
    page.wait_for_timeout(100)
    for _ in range(100):
        status = json.loads(slow_server.get("/janus/v1/status")[2])
        if status["cancelled"] > before and not status["running"]:
            break
        page.wait_for_timeout(100)
    else:
        pytest.fail(f"the job was not cancelled: {status}")
    assert not problems, problems
