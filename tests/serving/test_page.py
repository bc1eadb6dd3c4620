"""The try-a-picture page in headless Chromium (Selenium 4 with Debian's chromedriver): a real upload, a real answer."""

from __future__ import annotations

import json
import re
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import smallvision
from tests.conftest import skip_unless_ci

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """Headless Debian chromium driven through Debian's chromedriver; Selenium Manager never downloads anything."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        skip_unless_ci(f"{', '.join(missing)} absent: .ci/run installs Debian's chromium and chromium-driver")
    monkeypatch.setenv("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd(  # a 1280x800 viewport, so the screenshot is exactly that size
        "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    )
    yield driver
    driver.quit()


def test_page_shows_the_apis_top_class_for_each_uploaded_picture(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    picked = [served.images[0], served.images[-1]]  # an ant and a bee, picked together
    browser.get(f"{served.url}/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: re.search(r"validation accuracy \d+\.\d%", d.find_element(By.ID, "model-line").text))
    headline = httpx.get(f"{served.url}/model").json()["headline"]
    assert "--test-fraction" in headline and headline in browser.find_element(By.ID, "model-line").text
    assert "ants, bees" in browser.find_element(By.ID, "classes").text
    export_line = browser.find_element(By.ID, "export-line").text
    assert "checked against the PyTorch model" in export_line and "top-1 agreement 100.0%" in export_line
    assert browser.find_element(By.ID, "report-link").is_displayed()
    browser.find_element(By.ID, "picker").send_keys("\n".join(str(p) for p in picked))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card[data-state='done']")) == len(picked))
    for card in browser.find_elements(By.CSS_SELECTOR, "#results .card"):
        image = next(p for p in picked if p.name == card.find_element(By.CSS_SELECTOR, ".name").text)
        shown = [e.text for e in card.find_elements(By.CSS_SELECTOR, ".bar .class-name")]
        percent = card.find_element(By.CSS_SELECTOR, ".bar .probability").text
        api = httpx.post(f"{served.url}/predict", files={"files": (image.name, image.read_bytes())}).json()
        top = api["predictions"][0]["top"]
        assert shown[0] == top[0]["class"] and shown == [t["class"] for t in top]
        assert percent == f"{100 * top[0]['probability']:.1f}%"
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (800, 1280)
    assert pixels.std() > 10  # a rendered page with a picture and bars, not a blank one

    browser.get(f"{served.url}/docs")  # Swagger UI renders from the package's own files (the machine is offline)
    title = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
    assert "smallvision" in title[0].text


def test_page_shows_the_http_status_of_a_plain_text_error_and_the_checks_comparison(served, browser, tmp_path):
    """A proxy in front answers /predict with a plain-text 502; export.json's check names what it was compared with."""
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from smallvision.serving import create_app

    model_dir = tmp_path / "model"
    shutil.copytree(served.model_dir, model_dir)
    record = json.loads((model_dir / "export.json").read_text())
    record["onnx"]["check"]["compared_with"] = "the checked fp32 ONNX export"  # what an int8 check records
    (model_dir / "export.json").write_text(json.dumps(record))
    outer = FastAPI()

    @outer.post("/predict")
    async def bad_gateway() -> PlainTextResponse:
        return PlainTextResponse("Bad Gateway", status_code=502)

    outer.mount("/", create_app(model_dir))
    with _serving(outer) as url:
        browser.get(f"{url}/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: "checked against" in d.find_element(By.ID, "export-line").text)
        assert "checked against the checked fp32 ONNX export on" in browser.find_element(By.ID, "export-line").text
        browser.find_element(By.ID, "picker").send_keys(str(served.images[0]))
        card = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .card[data-state='error']"))[0]
        status = card.find_element(By.CSS_SELECTOR, ".status").text
        assert status.startswith("Not classified: HTTP 502"), status
        assert "Unexpected token" not in status


def test_the_header_quotes_validation_with_what_was_chosen_on_it_when_there_is_no_test_split(served):
    """few_bees has no test split: GET /model's headline, the page's header, says validation's number is the best of
    the epochs in the run's history.csv and how to get an untouched estimate."""
    info = httpx.get(f"{served.url}/model").json()
    epochs = len((served.model_dir.parent / "history.csv").read_text().splitlines()) - 1
    assert info["metrics"]["selection"] == {"split": "val", "choices": epochs, "by": {"epoch": epochs}}
    headline = info["headline"]
    assert headline.startswith(f"validation accuracy {100 * info['metrics']['val_accuracy']:.1f}% (n=10), selected on")
    assert f"the best of {epochs} epochs on it" in headline and "--test-fraction 0.2" in headline
    assert "model.headline" in httpx.get(f"{served.url}/page.js").text


@pytest.mark.slow
def test_the_header_quotes_the_untouched_test_split_when_there_is_one(shapes_data, tmp_path):
    """A model trained with a test split: its served header leads with the test accuracy the run measured, and says
    what the validation number was chosen among (slow: training and exporting its own model, a minute under load;
    tests/evaluation/test_report.py checks the same line from a test-split run's card in the default suite)."""
    from smallvision.serving import create_app

    run = smallvision.train(
        shapes_data, recipe="features", image_size=64, epochs=3, out=tmp_path / "run", report=False, progress=False
    )
    smallvision.export(run.model_dir)
    with _serving(create_app(run.model_dir)) as url:
        headline = httpx.get(f"{url}/model").json()["headline"]
    m = run.metrics
    assert headline == (
        f"test accuracy {100 * m['test_accuracy']:.1f}% (n=18), untouched until the model was chosen; "
        f"validation {100 * m['val_accuracy']:.1f}% (n=30), the best of 3 epochs on it"
    )


@contextmanager
def _serving(app):
    """`app` served by uvicorn in a thread on a free port; its URL."""
    import uvicorn

    from tests.serving.conftest import free_port, wait_until_up

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, None, None, timeout=30)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
