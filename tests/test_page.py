"""The artist's page in headless Chromium (Debian's), against the real server."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import serving
from tests.datagen import BROKEN, HOSTILE_MARKUP

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
UPLOAD_LIMIT = 300_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def base_url(built):
    with serving(built.index_dir, HIBT_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT)) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required for the page tests: apt-get install chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base_url)
    page.wait_for_selector("#dataset-line:has-text('Searching')")
    yield page
    context.close()
    assert not errors, errors


def search(page, text: str) -> None:
    page.fill("#q", text)
    page.press("#q", "Enter")
    page.wait_for_selector("#grid li")


def test_every_kind_of_result_has_a_badge_that_can_be_read(page) -> None:
    """Badges are white text: a kind without a background of its own in style.css (edited
    copies had none) is white on a white card."""
    app = (Path(__file__).resolve().parent.parent / "web" / "app.js").read_text()
    kinds = re.findall(r"^  (\w+): \"", app.split("const KIND_LABEL = {")[1].split("};")[0], re.M)
    assert "edited_copy" in kinds
    backgrounds = page.evaluate(
        """kinds => kinds.map(kind => {
            const badge = document.createElement("span");
            badge.className = `badge ${kind}`;
            document.body.append(badge);
            return getComputedStyle(badge).backgroundColor;
        })""",
        kinds,
    )
    transparent = [k for k, b in zip(kinds, backgrounds, strict=True) if b == "rgba(0, 0, 0, 0)"]
    assert not transparent


def badges(page) -> list[str]:
    return page.locator("#grid li .badge").all_inner_texts()


def test_text_search_shows_name_matches_first_and_is_shareable(page, base_url) -> None:
    search(page, "Jan Kowalski")
    assert badges(page)[:9] == ["Name match"] * 9
    assert "Similar" in badges(page)[9:]
    assert "9 images credit “Jan Kowalski”" in page.inner_text("#counts")
    assert "q=Jan+Kowalski" in page.url
    assert page.is_visible("#model-warning")  # the index runs on the test model
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "results-page.png"), full_page=True)

    page.reload()  # the URL alone brings the search back
    page.wait_for_selector("#grid li")
    assert page.input_value("#q") == "Jan Kowalski"
    search(page, "Mira Tanaka")
    page.go_back()
    # Waits go through locators: a string for wait_for_function is eval'd, which the page's
    # Content-Security-Policy forbids.
    sync_api = pytest.importorskip("playwright.sync_api")
    sync_api.expect(page.locator("#q")).to_have_value("Jan Kowalski")
    page.wait_for_selector("#counts:has-text('Jan Kowalski')")


def test_clear_button_and_empty_query(page) -> None:
    page.fill("#q", "owl")
    page.click("#clear")
    assert page.input_value("#q") == ""
    page.press("#q", "Enter")
    assert "Type a name" in page.inner_text("#error")


def test_file_picker_upload_finds_the_exact_copy(page, dataset) -> None:
    item = dataset[1][7]
    page.set_input_files("#file", str(item.path))
    page.wait_for_selector("#grid li")
    assert page.is_visible("#preview")
    first = page.locator("#grid li").first
    assert first.locator(".badge").inner_text() == "Exact copy"
    assert first.locator(".caption").inner_text() == item.caption
    assert "found among" in page.inner_text("#verdict")
    page.click("#cancel-image")
    assert page.is_hidden("#preview") and page.locator("#grid li").count() == 0


def dispatch_file(page, event: str, data: bytes, name: str, mime: str) -> None:
    """A real File in a DataTransfer, delivered through the page's own handlers."""
    page.evaluate(
        """([event, b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: mime }));
            const target = event === "drop" ? document.getElementById("dropzone") : document;
            const ev = event === "drop"
              ? new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true })
              : new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true });
            target.dispatchEvent(ev);
        }""",
        [event, base64.b64encode(data).decode(), name, mime],
    )


@pytest.mark.parametrize("event", ["drop", "paste"])
def test_drop_and_paste_find_the_exact_copy(page, dataset, event: str) -> None:
    item = dataset[1][12]
    dispatch_file(page, event, item.path.read_bytes(), item.path.name, "image/jpeg")
    page.wait_for_selector("#grid li")
    first = page.locator("#grid li").first
    assert first.locator(".badge").inner_text() == "Exact copy"
    assert first.locator(".caption").inner_text() == item.caption


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x89PNG" + b"\0" * (UPLOAD_LIMIT + 10), "Too large"),
        (BROKEN["broken/not-an-image.jpg"], "Not an image"),
    ],
)
def test_bad_uploads_show_a_clear_error(page, data: bytes, message: str) -> None:
    dispatch_file(page, "drop", data, "upload.png", "image/png")
    page.wait_for_selector("#error:not([hidden])")
    assert message in page.inner_text("#error")
    assert page.locator("#grid li").count() == 0


def test_server_down_shows_an_error(page) -> None:
    page.route("**/api/search?*", lambda route: route.abort())
    page.fill("#q", "owl")
    page.press("#q", "Enter")
    page.wait_for_selector("#error:not([hidden])")
    assert "cannot be reached" in page.inner_text("#error")


def test_load_more_appends(page, dataset) -> None:
    search(page, "lighthouse")
    assert page.locator("#grid li").count() == 24
    page.click("#more")
    page.wait_for_selector("#grid li:nth-child(25)")
    ids = page.eval_on_selector_all("#grid li", "els => els.map(e => e.dataset.id)")
    assert len(ids) == len(set(ids)) == len(dataset[1])
    assert page.is_hidden("#more")


def test_viewer_keyboard_navigation(page) -> None:
    search(page, "Mira Tanaka")
    captions = page.locator("#grid li .caption").all_inner_texts()
    page.locator("#grid li .open").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[open]")
    assert page.inner_text("#viewer-title") == captions[0]
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#viewer-title") == captions[1]
    page.keyboard.press("ArrowLeft")
    assert page.inner_text("#viewer-title") == captions[0]
    assert "Artist" in page.inner_text("#viewer-fields")
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")
    assert page.evaluate("document.activeElement.classList.contains('open')")  # focus returns


def test_hostile_caption_is_text(page) -> None:
    search(page, "violin")
    page.wait_for_selector(f"#grid li .caption:has-text('{HOSTILE_MARKUP[:8]}')")
    assert page.evaluate("window.__xss") is None
    assert page.locator("#grid li .caption img").count() == 0


def test_missing_image_keeps_the_result_with_a_placeholder(page) -> None:
    page.route("**/thumbnail", lambda route: route.fulfill(status=404, body="gone"))
    search(page, "owl")
    page.wait_for_selector("#grid li .placeholder")
    first = page.locator("#grid li").first
    assert "Image unavailable" in first.inner_text()
    assert first.locator(".caption").inner_text()


def test_selection_for_opt_out(page) -> None:
    search(page, "Zoë O'Brien")
    page.click("#select-names")
    assert page.inner_text("#selected-count") == "9 selected"
    page.click("#select-none")
    assert page.inner_text("#selected-count") == "0 selected"


def test_phone_width_has_no_horizontal_scroll(browser, base_url) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740})
    page = context.new_page()
    page.goto(f"{base_url}/?q=owl")
    page.wait_for_selector("#grid li")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "results-phone.png"), full_page=False)
    context.close()


def test_opt_out_from_the_page_and_withdraw_with_the_private_link(page, base_url) -> None:
    search(page, "Mira Tanaka")
    page.click("#select-names")
    assert page.is_enabled("#optout-open")
    page.click("#optout-open")
    page.fill("#optout-name", "Mira")
    page.click("#optout-submit")
    page.wait_for_selector("#optout-done:not([hidden])")
    link = page.inner_text("#optout-link")
    assert "#receipt=" in link and "&token=" in link
    page.click("#optout-close")
    assert page.locator("#grid li .badge.optout").count() == 9
    page.reload()
    page.wait_for_selector("#grid li .badge.optout")  # the server marks them too

    page.goto(link)
    page.wait_for_selector("#claim:not([hidden])")
    assert page.locator("#claim-rows tr").count() == 9
    page.click("#withdraw-all")
    page.wait_for_selector("#status:has-text('Withdrawn')")
    assert page.is_disabled("#withdraw-all")
    page.goto(f"{base_url}/?q=Mira+Tanaka")
    page.wait_for_selector("#grid li")
    assert page.locator("#grid li .badge.optout").count() == 0


def test_domain_claim_page_shows_the_challenge(page, base_url) -> None:
    page.goto(f"{base_url}/optout.html")
    page.fill("#domain-name", "https://www.Example.org/gallery")
    page.click("#domain-form button[type=submit]")
    page.wait_for_selector("#verify-box:not([hidden])")
    assert page.inner_text("#verify-domain") == "www.example.org"
    assert page.inner_text("#verify-challenge").startswith("hibt-optout-verification=")
    assert "pending" in page.inner_text("#claim-rows")


def test_claim_page_with_a_wrong_token_says_so(page, base_url) -> None:
    page.goto(f"{base_url}/optout.html#receipt=no-such-receipt&token=wrong")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == "Cannot open this claim: unknown receipt or wrong token"
    assert page.is_hidden("#claim")


def test_page_and_docs_run_under_the_policy_offline(browser, base_url) -> None:
    """The Content-Security-Policy breaks nothing, and /docs needs nothing from elsewhere."""
    context = browser.new_context()
    outside: list[str] = []
    context.route(
        re.compile(r"^(?!" + re.escape(base_url) + ").*"),
        lambda route: (outside.append(route.request.url), route.abort()),
    )
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Security Policy" in m.text else 0)
    page.goto(f"{base_url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "hibt" in page.inner_text(".swagger-ui .info .title")
    page.goto(base_url)
    page.fill("#q", "owl")
    page.press("#q", "Enter")
    page.wait_for_selector("#grid li")
    page.locator("#grid li").first.click()
    page.wait_for_selector("#viewer[open] img")
    context.close()
    assert violations == [] and outside == [], (violations, outside)
