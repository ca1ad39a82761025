"""The playground as a person uses it, in a real (headless) Chromium against a real server.

Set CHARRNN_SCREENSHOT=docs/playground.png to keep the screenshot taken during the generation.
"""

from __future__ import annotations

import os
import re
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("selenium")

from browser import chrome, console_errors, playground_server  # noqa: E402

from charrnn.config import ModelConfig, TrainConfig  # noqa: E402
from charrnn.train import train  # noqa: E402


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """A real run, trained for a few seconds on a small play-like text."""
    from conftest import VERSE

    root = tmp_path_factory.mktemp("runs")
    model = ModelConfig(vocab_size=1, embed_dim=16, hidden_size=64, num_layers=2, dropout=0.0)
    config = TrainConfig(batch_size=16, seq_len=32, max_steps=60, time_budget=None, eval_interval=30, warmup_steps=0,
                         lr=1e-2, device="cpu", precision="fp32", sample_length=0, log_interval=20)
    train(VERSE * 40, root / "romeo", model, config, corpus={"name": "verse.txt"})
    return root


def wait(driver, condition, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def set_value(driver, element_id, value, event="input"):
    driver.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event(arguments[2], {bubbles: true}));", element_id, str(value), event)


def test_pick_a_run_generate_hover_stop_and_see_a_bad_value(runs_dir, tmp_path, monkeypatch):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from charrnn.serve.scheduler import ModelWorker

    # Each generation step takes at least 2 ms here, so the 20,000-character stream below lasts 40 s
    # whatever the machine's speed: Stop, clicked once 40 characters have arrived, always lands
    # mid-stream (on a quiet machine the tiny model used to finish before the click).
    real_step = ModelWorker._step

    def paced_step(self):
        time.sleep(0.002)
        return real_step(self)

    monkeypatch.setattr(ModelWorker, "_step", paced_step)
    with playground_server(runs_dir) as url, chrome() as driver:
        driver.get(url + "/")
        by_id = lambda i: driver.find_element(By.ID, i)  # noqa: E731
        # the run picker lists the run with its corpus, size, validation loss and date
        option = wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#run option"), what="the run list")[0]
        assert re.search(r"romeo · verse\.txt · 2x64 LSTM · val \d\.\d{3} \(\d\.\d\d bits\) · 20\d\d-", option.text)
        # the next-character chart is drawn for the prime, and reshapes when the temperature moves
        wait(driver, lambda: "T=0.8" in by_id("nextctx").text, what="the chart")
        set_value(driver, "temperature", 1.3)
        assert by_id("temperature-out").text == "1.30"
        wait(driver, lambda: "T=1.3" in by_id("nextctx").text, what="the chart at T=1.3")
        # generate: characters stream in, each shaded by its probability
        set_value(driver, "length", 20000)
        by_id("generate").click()
        spans = wait(driver, lambda: len(driver.find_elements(By.CSS_SELECTOR, "#output .gen span")) >= 40 and
                     driver.find_elements(By.CSS_SELECTOR, "#output .gen span"), what="characters")
        assert by_id("stopbtn").is_enabled() and not by_id("generate").is_enabled()
        assert "seed 42 · T=1.3" in by_id("strategy").text
        assert spans[5].value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
        # Stop ends the stream on the server at once (clicked as soon as characters arrive: 20,000 take
        # the server seconds, the click milliseconds)
        by_id("stopbtn").click()
        wait(driver, lambda: by_id("generate").is_enabled(), what="the stream to end")
        assert by_id("genstate").text.startswith("stopped")
        generated = len(driver.find_elements(By.CSS_SELECTOR, "#output .gen span"))
        assert 40 <= generated < 20000
        # hovering a character shows its candidates
        ActionChains(driver).move_to_element(spans[10]).perform()
        wait(driver, lambda: "step 11: chose" in by_id("stepinfo").text, what="the step's candidates")
        rows = driver.find_elements(By.CSS_SELECTOR, "#steptable tr")
        assert len(rows) == 8 and any("chosen" in (r.get_attribute("class") or "") for r in rows)
        assert by_id("tip").is_displayed()
        screenshot = os.environ.get("CHARRNN_SCREENSHOT") or str(tmp_path / "playground.png")
        driver.save_screenshot(screenshot)
        status = driver.execute_script("return fetch('/api/status').then(r => r.json())")
        assert status["streams"] == 0
        assert console_errors(driver) == []
        # a bad value is shown next to its control, with the library's message
        set_value(driver, "top_k", 0)
        box = driver.find_element(By.CSS_SELECTOR, '.err[data-for="top_k"]')
        wait(driver, lambda: box.text, what="the top-k message")
        assert box.text == "top-k must be an integer >= 1, got 0"
        set_value(driver, "top_k", "")
        wait(driver, lambda: not box.text, what="the message to clear")
        set_value(driver, "length", 99_999_999)
        by_id("generate").click()
        box = driver.find_element(By.CSS_SELECTOR, '.err[data-for="length"]')
        wait(driver, lambda: box.text, what="the length message")
        assert "over the server's limit of 20,000" in box.text
        # the neuron panel colours the text by an LSTM cell state, and the cell finder's units pick others
        driver.find_element(By.CSS_SELECTOR, 'button.tab[data-tab="neurons"]').click()
        set_value(driver, "kind", "cell", event="change")
        by_id("neuron-go").click()
        found = wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#finder button"), what="the cell finder")
        assert "layer 2 cell units" in by_id("topcells").text
        label = found[0].text  # L:h|c:unit
        found[0].click()
        wait(driver, lambda: by_id("cell").get_attribute("value") == label.split(":")[2], what="the finder's unit")
        assert by_id("kind").get_attribute("value") == {"h": "hidden", "c": "cell"}[label.split(":")[1]]
        coloured = driver.find_elements(By.CSS_SELECTOR, "#neuron-out span")
        assert coloured and coloured[0].value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
        neuron_shot = os.environ.get("CHARRNN_NEURON_SCREENSHOT") or str(tmp_path / "neurons.png")
        driver.save_screenshot(neuron_shot)
        # the only console lines are the deliberate refusals' HTTP statuses
        assert all(re.search(r"status of 4(00|13)", line) for line in console_errors(driver))
