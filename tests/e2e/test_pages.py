"""The pages for people (PROTOCOL.md §13) in a real browser: headless Chromium from Debian's
packages, driven by selenium through Debian's chromedriver, against a real gunicorn that has
API keys. Both are installed with apt-get when missing (CI runs as root on a clean machine).

A person opens the playground, types the §1 example, clicks Evaluate and reads the loss and
the gradients off the page and the graph; a mistake is shown at its place. No request leaves
the server's origin and the console stays clean. /docs shows /v1/evaluate with Try it out.
Screenshots land in .pytest_cache/pages/ to look at.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import Server
from tests.e2e.test_deploy import apt_get

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".pytest_cache" / "pages"
KEY = "playground-key"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--window-size=1400,1000"]

NETWORK = {"http", "https", "ws", "wss"}

INPUTS = """{
"x": {"data": [[1, 2], [3, 4]]},
"w": {"data": [[0.5], [-0.25]], "requires_grad": true},
"b": {"shape": [1], "dtype": "float32", "b64": "AACAPw=="}
}"""
# PROTOCOL.md §1's numbers, as the server writes float32 values (in full)
LOSS, GRAD_W, GRAD_B = "0.77431655", ["0.32202563", "0.49490482"], "0.17287919"


@pytest.fixture(scope="module")
def browser_binaries() -> None:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        done = apt_get("install", "-y", "-q", "chromium", "chromium-driver")
        if done.returncode != 0:  # perhaps stale package lists
            apt_get("update", "-q")
            done = apt_get("install", "-y", "-q", "chromium", "chromium-driver")
        if done.returncode != 0:
            pytest.fail("chromium is needed and `apt-get install chromium chromium-driver` "
                        f"failed (exit {done.returncode}):\n{done.stderr[-2000:]}")


@pytest.fixture(scope="module")
def keyed_server():
    with Server(api_keys=KEY) as s:
        yield s


@pytest.fixture
def browser(browser_binaries, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")  # new and empty
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def requested_urls(driver) -> list[str]:
    """Every URL the page asked the network for, from Chrome's DevTools log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(driver, answered: int | None) -> list[dict]:
    """Errors in the console; Chrome logs an HTTP error status the page asked for too."""
    expected = f"status of {answered} " if answered else None
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
            and not (expected and e["source"] == "network" and expected in e["message"])]


def check_stayed_home(driver, origin: str, answered: int | None = None) -> None:
    # the browser's own chrome:// pages load their resources too; the network is http(s)/ws(s)
    urls = [u for u in requested_urls(driver) if urlsplit(u).scheme in NETWORK]
    assert any(u.startswith(origin + "/v1/evaluate") or u.startswith(origin + "/openapi.json")
               for u in urls), urls
    away = [u for u in urls if not u.startswith(origin + "/")]
    assert away == [], away
    assert console_errors(driver, answered) == []


def type_into(driver, field: str, text: str) -> None:
    el = driver.find_element("id", field)
    el.clear()
    el.send_keys(text)


def shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def wait_for(driver, condition, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def open_page(driver, url: str, title: str) -> None:
    """Load a page and wait until it is complete (on a busy machine get() can return while
    the new headless tab still shows its first, empty document)."""
    driver.get(url)
    wait_for(driver, lambda d: d.title == title
             and d.execute_script("return document.readyState") == "complete")


def test_the_playground_evaluates_the_protocol_example_as_a_person_would(browser,
                                                                        keyed_server):
    origin = keyed_server.url
    open_page(browser, origin + "/", "gradserve playground")  # the page needs no key
    type_into(browser, "inputs", INPUTS)
    type_into(browser, "expr", "loss = mean(sigmoid(x @ w + b))")
    type_into(browser, "grad-of", "loss")
    type_into(browser, "wrt", "w, b")
    type_into(browser, "key", KEY)
    browser.find_element("id", "evaluate").click()

    wait_for(browser, lambda d: d.find_elements("css selector", "#graph svg g[data-id]"))
    status = browser.find_element("id", "status").text
    assert status.startswith("200 OK"), status
    outputs = browser.find_element("id", "outputs-table").text
    gradients = browser.find_element("id", "gradients-table").text
    assert "loss" in outputs and LOSS in outputs, outputs
    assert all(g in gradients for g in GRAD_W) and GRAD_B in gradients, gradients

    # the graph: the three inputs and the four nodes the expression became, each with its
    # op, shape, value and gradient
    boxes = {g.get_attribute("data-id"): g.text for g in
             browser.find_elements("css selector", "#graph svg g[data-id]")}
    assert set(boxes) == {"x", "w", "b", "loss:1", "loss:2", "loss:3", "loss"}, boxes
    assert "matmul(x, w)" in boxes["loss:1"] and "sigmoid(loss:2)" in boxes["loss:3"]
    assert "shape []" in boxes["loss"] and "value 0.7743" in boxes["loss"]
    assert "grad 1" in boxes["loss"]
    assert "shape [2,1]" in boxes["w"] and "grad [0.322, 0.4949]" in boxes["w"]
    assert len(browser.find_elements("css selector", "#graph svg path")) == 6  # the edges
    shot(browser, "playground")
    check_stayed_home(browser, origin)


def test_a_mistake_is_shown_at_its_place(browser, keyed_server):
    open_page(browser, keyed_server.url + "/", "gradserve playground")
    type_into(browser, "key", KEY)
    type_into(browser, "expr", "loss = mean(sigmoid(x @ w + q))")
    browser.find_element("id", "evaluate").click()
    wait_for(browser, lambda d: not d.find_element("id", "problem").get_attribute("hidden"))
    assert browser.find_element("id", "status").text.startswith("422")
    problem = browser.find_element("id", "problem").text
    assert "/expr/loss" in problem and "column 22" in problem, problem
    selected = browser.execute_script(
        "const e = document.getElementById('expr');"
        "return [document.activeElement === e, e.value.slice(e.selectionStart, e.selectionEnd),"
        " e.classList.contains('bad')];")
    assert selected == [True, "q", True]
    shot(browser, "playground-mistake")
    check_stayed_home(browser, keyed_server.url, answered=422)


NODES = """[
{"id": "h", "op": "matmul", "args": ["x", "w"]},
{"id": "z", "op": "add", "args": ["h", "c"]},
{"id": "a", "op": "sigmoid", "args": ["z"]},
{"id": "loss", "op": "mean", "args": ["a"]}
]"""


def test_nodes_in_json_with_a_mistake_marked_then_evaluated(browser, keyed_server):
    open_page(browser, keyed_server.url + "/", "gradserve playground")
    browser.find_element("css selector", 'input[name="form"][value="nodes"]').click()
    assert browser.find_element("id", "expr").is_displayed() is False
    type_into(browser, "key", KEY)
    type_into(browser, "nodes", NODES)
    browser.find_element("id", "evaluate").click()
    wait_for(browser, lambda d: not d.find_element("id", "problem").get_attribute("hidden"))
    assert "/nodes/1/args/1" in browser.find_element("id", "problem").text
    selected = browser.execute_script(
        "const e = document.getElementById('nodes');"
        "return e.value.slice(e.selectionStart, e.selectionEnd);")
    assert selected == '"c"'

    type_into(browser, "nodes", NODES.replace('"c"', '"b"'))
    browser.find_element("id", "evaluate").click()
    wait_for(browser, lambda d: d.find_elements("css selector", "#graph svg g[data-id]"))
    boxes = {g.get_attribute("data-id"): g.text for g in
             browser.find_elements("css selector", "#graph svg g[data-id]")}
    assert set(boxes) == {"x", "w", "b", "h", "z", "a", "loss"}, boxes
    assert "value 0.7743" in boxes["loss"] and "grad [0.1729]" in boxes["b"]
    assert LOSS in browser.find_element("id", "outputs-table").text
    check_stayed_home(browser, keyed_server.url, answered=422)


def test_the_docs_show_evaluate_and_try_it_out_sends_it(browser, keyed_server):
    origin = keyed_server.url
    open_page(browser, origin + "/docs", "gradserve API docs")  # no key for page or document
    wait_for(browser, lambda d: d.find_elements(
        "css selector", '#operations-default-evaluate .opblock-summary-path'))
    summary = browser.find_element("css selector", "#operations-default-evaluate")
    assert "/v1/evaluate" in summary.text
    summary.find_element("css selector", ".opblock-summary").click()
    button = wait_for(browser, lambda d: d.find_elements("css selector", ".try-out__btn"))[0]
    assert button.text == "Try it out"
    button.click()
    execute = wait_for(browser, lambda d: d.find_elements("css selector", ".execute"))[0]

    # the key, through Authorize, then the example request the document carries
    browser.find_element("css selector", ".auth-wrapper .authorize").click()
    dialog = wait_for(browser, lambda d: d.find_elements("css selector", ".modal-ux"))[0]
    dialog.find_element("css selector", "input").send_keys(KEY)
    dialog.find_element("css selector", ".auth-btn-wrapper .authorize").click()
    dialog.find_element("css selector", ".btn-done").click()
    execute.click()
    live = wait_for(browser, lambda d: d.find_elements("css selector", ".live-responses-table"))
    wait_for(browser, lambda d: LOSS in live[0].text)
    assert GRAD_B in live[0].text
    shot(browser, "docs")
    check_stayed_home(browser, origin)
