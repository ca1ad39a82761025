"""The explain page for 100,000 characters in headless Chromium: it renders, hovering shows the
top-k table, HTML in the text stays text, and the console has no errors.

Needs chromium, chromium-driver and selenium (scripts/setup.sh installs them); skipped without.
"""

from __future__ import annotations

import pytest
import torch
from browser import chrome

from charrnn import explain as ex
from charrnn.config import ModelConfig
from charrnn.explain_page import write_explanation
from charrnn.model import CharRNN
from charrnn.vocab import Vocab


@pytest.fixture
def browser():
    with chrome() as driver:  # the playground tests' headless Chromium (tests/browser.py); skipped without one
        yield driver


def test_a_100k_character_page_renders_and_hovering_shows_the_top_k(tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from test_explain import play

    marker = 'JULIET:\n"</script><b>not bold</b><!-- & {{DATA}}"\n'
    text = (marker + play(count=600)) * 4
    text = text[:100_000]
    vocab = Vocab.from_text(text)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), embed_dim=8, hidden_size=16, num_layers=2)).eval()
    result = ex.explain(model, vocab, text, cells=["2:c:3"], top_k=5)
    page = write_explanation(result, tmp_path / "page")["html"]
    browser.set_page_load_timeout(120)
    browser.get(page.resolve().as_uri())
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
    assert browser.execute_script("return document.querySelectorAll('#text span').length") == 100_000
    assert browser.execute_script("return document.getElementById('text').textContent") == text
    assert browser.execute_script("return document.querySelectorAll('#text b').length") == 0  # text, not markup
    span = browser.find_element(By.CSS_SELECTOR, "#text span:nth-child(40)")
    ActionChains(browser).move_to_element(span).perform()
    info = browser.find_element(By.ID, "info").text
    assert "position 39" in info and "top 5" in info
    assert len(browser.find_elements(By.CSS_SELECTOR, "#info table tr")) == 6  # header + 5 candidates
    browser.execute_script("const m = document.getElementById('mode'); m.value = 'cell:2:c:3';"
                           "m.dispatchEvent(new Event('change'));")
    assert "blue" in browser.find_element(By.ID, "legend").text
    browser.save_screenshot(str(tmp_path / "page.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
