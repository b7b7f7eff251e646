"""The human oracle: a loop round rated on the local page, in headless Chromium where installed.

The browser tests need Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs
them) and selenium (the ``test`` extra); without them they skip with one line.
"""

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason='the human oracle needs its extra: pip install "das-toolkit[human]"')
pytest.importorskip("uvicorn", reason='the human oracle needs its extra: pip install "das-toolkit[human]"')

from online import builders
from online.errors import RunError
from online.loop import run_training
from online.run_directory import complete_rounds
from online.storage import AnswerJournal, load_rows
from online.validation import ConfigError, validate

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
BROWSER_SKIP = "install Debian's chromium and chromium-driver to run the browser tests"
try:
    import selenium  # noqa: F401
except ImportError:
    CHROMIUM = None
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=BROWSER_SKIP)
ROUND = 4  # images in the rated round
BUILD_ORACLE = builders.build_oracle


# ---------------------------------------------------------------------------- helpers
class LoopRound:
    """A loop (one round of `ROUND` images, human oracle) running in a thread, and its oracle."""

    def __init__(self, config, accelerator, monkeypatch):
        self.config, self.oracles, self.outcome = config, [], {}

        def spy(cfg):
            self.oracles.append(BUILD_ORACLE(cfg))
            return self.oracles[-1]

        monkeypatch.setattr(builders, "build_oracle", spy)
        self.thread = threading.Thread(target=self._run, args=(accelerator,), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not (self.oracles and self.oracles[-1].serving.is_set()):
            assert self.thread.is_alive() and time.monotonic() < deadline, self.outcome
            time.sleep(0.05)
        self.oracle = self.oracles[-1]
        self.run_dir = Path(config.resume_from) if config.resume_from else Path(config.output_dir) / config.run_name

    def _run(self, accelerator):
        try:
            self.outcome["run_dir"] = run_training(self.config, accelerator)
        except BaseException as error:  # noqa: BLE001 - the test reads it
            self.outcome["error"] = error

    def journal(self) -> dict[int, dict]:
        return AnswerJournal(self.run_dir / "round_0000" / "answers.jsonl").read()

    def finish(self, timeout: float = 120) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the loop did not go on after the last rating"
        assert "error" not in self.outcome, self.outcome

    def abandon(self) -> None:
        if self.thread.is_alive():
            self.oracle.stop()
            self.thread.join(30)


@pytest.fixture
def human_config(make_config):
    config = make_config()
    config.oracle.kind = "human"
    config.oracle.noise_std = 0.0
    config.loop.num_rounds = 1
    config.loop.initial_queries = ROUND
    return config


@pytest.fixture
def loop_round(human_config, accelerator, monkeypatch):
    started = LoopRound(human_config, accelerator, monkeypatch)
    yield started
    started.abandon()


def request(url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(BROWSER_SKIP)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 30, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def shown_cards(driver) -> list[int]:
    """The indices of the images on the page, in order (read in one step: the page may be changing)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.card'), c => Number(c.dataset.index));"
    )


def open_page(driver, url: str, expected: int) -> None:
    driver.get(url)
    wait_for(lambda: len(shown_cards(driver)) == expected, what=f"{expected} images on the page")


def press(driver, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def click_rating(driver, index: int, rating: int) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#card-{index} .rate[data-rating='{rating}']").click()


# ---------------------------------------------------------------------------- browser tests
@needs_browser
def test_a_person_rates_a_round_by_click_and_keyboard(loop_round, browser, tmp_path):
    from selenium.webdriver.common.by import By

    open_page(browser, loop_round.oracle.url, ROUND)
    assert "Round 0" in browser.find_element(By.ID, "round").text
    assert browser.find_element(By.ID, "left").text == str(ROUND)
    wait_for(
        lambda: browser.execute_script(
            "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0);"
        ),
        what="the images to load",
    )

    click_rating(browser, 0, 7)  # a click on card 0
    wait_for(lambda: shown_cards(browser) == [1, 2, 3], what="card 0 to leave")
    assert {i: row["value"] for i, row in loop_round.journal().items()} == {0: 7.0}  # journaled at once
    press(browser, "3")  # keyboard: the highlighted card (now card 1)
    wait_for(lambda: shown_cards(browser) == [2, 3], what="card 1 to leave")
    press(browser, "s")  # skip card 2
    wait_for(lambda: shown_cards(browser) == [3], what="card 2 to leave")
    browser.save_screenshot(str(tmp_path / "page.png"))
    press(browser, "0")  # 10 for card 3
    loop_round.finish()

    answers = loop_round.journal()
    assert {i: (row["status"], row["value"], row["reward"]) for i, row in answers.items()} == {
        0: ("ok", 7.0, 7.0),
        1: ("ok", 3.0, 3.0),
        2: ("failed", None, None),
        3: ("ok", 10.0, 10.0),
    }
    assert answers[2]["error"] == "skipped by the rater"
    assert complete_rounds(loop_round.run_dir) == [0]
    shard, _ = load_rows(loop_round.run_dir / "data" / "round_0000.safetensors")
    assert shard["valid"].tolist() == [True, True, False, True] and shard["rewards"][3].item() == 10.0
    wait_for(lambda: "All rated" in browser.find_element(By.ID, "status").text, what="the round's end on the page")


@needs_browser
def test_a_reload_mid_round_shows_only_the_unrated_images(loop_round, browser):
    open_page(browser, loop_round.oracle.url, ROUND)
    click_rating(browser, 2, 5)
    wait_for(lambda: shown_cards(browser) == [0, 1, 3], what="card 2 to leave")
    browser.refresh()
    wait_for(lambda: shown_cards(browser) == [0, 1, 3], what="the unrated cards after a reload")
    for key in ("8", "1", "9"):
        left = len(shown_cards(browser))
        press(browser, key)
        wait_for(lambda left=left: len(shown_cards(browser)) == left - 1, what="a rating to be saved")
    loop_round.finish()
    assert {i: row["value"] for i, row in loop_round.journal().items()} == {2: 5.0, 0: 8.0, 1: 1.0, 3: 9.0}


@needs_browser
def test_the_page_without_the_token_is_forbidden_in_the_browser(loop_round, browser):
    from selenium.webdriver.common.by import By

    browser.get(loop_round.oracle.url.split("?")[0])
    assert "Forbidden" in browser.find_element(By.TAG_NAME, "body").text
    assert loop_round.journal() == {}


# ---------------------------------------------------------------------------- without a browser
def test_every_request_needs_the_token_and_no_request_reaches_the_filesystem(loop_round):
    base, token = loop_round.oracle.url.split("/?")[0], loop_round.oracle.token
    for path in ("/", "/api/state", "/image/0", "/api/state?token=wrong", "/image/0?token=" + token[:-1]):
        assert request(base + path)[0] == 403, path
    assert request(base + "/api/rate", {"index": 0, "rating": 5})[0] == 403
    assert request(base + f"/api/rate?token={token}x", {"index": 0, "rating": 5})[0] == 403
    assert loop_round.journal() == {}  # nothing refused was recorded
    for path in (
        "/image/..%2F..%2Fetc%2Fpasswd",
        "/image/../../etc/passwd",
        "/static/page.html",
        "/image/99",
        "/image/-1",
    ):
        status, body = request(f"{base}{path}{'&' if '?' in path else '?'}token={token}")
        assert status == 404 and b"root:" not in body, path
    status, state = request(f"{base}/api/state?token={token}")
    state = json.loads(state)
    assert status == 200 and state["round"] == 0 and state["left"] == ROUND and state["num_rounds"] == 1
    assert request(f"{base}/api/rate?token={token}", {"index": 0, "rating": 11})[0] == 400
    assert request(f"{base}/api/rate?token={token}", {"index": 0, "rating": True})[0] == 400
    for i in range(ROUND):
        assert request(f"{base}/api/rate?token={token}", {"index": i, "rating": i + 1})[0] == 200
    loop_round.finish()
    assert {i: row["value"] for i, row in loop_round.journal().items()} == {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}


def test_a_resumed_round_asks_only_for_the_unrated_images(human_config, accelerator, monkeypatch):
    first = LoopRound(human_config, accelerator, monkeypatch)
    base, token = first.oracle.url.split("/?")[0], first.oracle.token
    for i in (1, 3):
        assert request(f"{base}/api/rate?token={token}", {"index": i, "rating": 6})[0] == 200
    first.oracle.stop()  # as Ctrl-C or a killed process: the round is left half rated
    first.thread.join(30)
    assert isinstance(first.outcome.get("error"), RunError) and "resume" in str(first.outcome["error"])

    human_config.resume_from = str(first.run_dir)
    second = LoopRound(human_config, accelerator, monkeypatch)
    try:
        url = second.oracle.url.split("/?")[0] + f"/api/state?token={second.oracle.token}"
        state = json.loads(request(url)[1])
        assert [item["index"] for item in state["items"]] == [0, 2] and state["left"] == 2
        for i in (0, 2):
            assert request(url.replace("/api/state", "/api/rate"), {"index": i, "rating": 4})[0] == 200
        second.finish()
    finally:
        second.abandon()
    assert {i: row["value"] for i, row in second.journal().items()} == {1: 6.0, 3: 6.0, 0: 4.0, 2: 4.0}


def test_human_oracle_settings_are_checked_before_anything_runs(human_config, monkeypatch):
    validate(human_config)
    for field, value, message in (
        ("host", "not a host!", "oracle.host"),
        ("port", 70000, "oracle.port"),
        ("port", -1, "oracle.port"),
    ):
        bad = human_config.copy_and_resolve_references()
        bad.oracle[field] = value
        with pytest.raises(ConfigError, match=message):
            validate(bad)
    guided = human_config.copy_and_resolve_references()
    guided.smc.guidance = "oracle"
    with pytest.raises(ConfigError, match="a person"):
        validate(guided)
    monkeypatch.setattr("online.human.human_extra_installed", lambda: False)
    with pytest.raises(ConfigError, match=r'pip install "das-toolkit\[human\]"'):
        validate(human_config)


def test_the_tiny_human_variant_is_a_round_a_person_can_rate():
    from config.online_base import online_config

    config = online_config("ucb", "tiny_human", method="UCB")
    assert config.oracle.kind == "human" and config.oracle.noise_std == 0.0
    assert config.oracle.host == "127.0.0.1" and config.oracle.port == 0
    assert (config.loop.initial_queries, config.loop.queries_per_round) == (8, 4)


def test_a_run_from_before_the_human_oracle_still_resumes(make_config, tmp_path):
    from dasapp.run_dirs import write_marker
    from online.validation import resume_config

    old = make_config().to_dict()
    del old["oracle"]["host"], old["oracle"]["port"]  # what an older version of the tool stored
    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    write_marker(run_dir, "online-train")  # every run of this tool carries its marker
    (run_dir / "config.json").write_text(json.dumps(old))
    config = make_config()
    config.resume_from = str(run_dir)
    resumed = resume_config(config, overrides={})
    assert resumed.oracle.host == "127.0.0.1" and resumed.oracle.port == 0
