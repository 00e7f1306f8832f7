"""The page at / in a real headless Chromium (Debian's chromium and chromedriver): pick an image, type labels,
see the service's results; a file that is not an image shows the error. Skipped where Chromium is absent.

``VLEDGE_SCREENSHOT=docs/serve-page.png`` also saves the screenshot there (how the one in docs/ was made).
"""

import io
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)", allow_module_level=True)

from PIL import Image  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

import vledge  # noqa: E402
from bundles import build_bundle  # noqa: E402
from videos import fashion_images  # noqa: E402
from vledge.serve import ServeConfig  # noqa: E402
from vledge.serve.server import BackgroundServer  # noqa: E402

LABELS = ["a t-shirt", "a trouser", "a bag", "a sneaker", "an ankle boot"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--window-size=900,760"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("page") / "bundle")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_a_person_picks_an_image_types_labels_and_sees_the_results(bundle, browser, tmp_path):
    photo = tmp_path / "boot.png"
    Image.fromarray(np.kron(fashion_images([0])[0], np.ones((8, 8, 1), np.uint8))).save(photo)  # an ankle boot
    expected = vledge.load(bundle).classify(Image.open(photo), LABELS, top_k=10).top
    with BackgroundServer(ServeConfig(bundle=str(bundle))) as server:
        browser.get(server.url + "/")
        assert browser.title.startswith("vledge")
        browser.find_element(By.ID, "file").send_keys(str(photo))
        browser.find_element(By.ID, "labels").send_keys(", ".join(LABELS))
        browser.find_element(By.ID, "go").click()
        WebDriverWait(browser, 20).until(lambda d: "Done" in d.find_element(By.ID, "status").text)
        rows = browser.find_elements(By.CSS_SELECTOR, "#results li")
        shown = [(r.find_element(By.CLASS_NAME, "label").text, r.find_element(By.CLASS_NAME, "score").text) for r in rows]
        assert shown == [(name, f"{100 * score:.1f}%") for name, score in expected]
        target = os.environ.get("VLEDGE_SCREENSHOT")
        screenshot = browser.get_screenshot_as_png()
        assert Image.open(io.BytesIO(screenshot)).size[0] > 400
        if target:
            with open(target, "wb") as fh:
                fh.write(screenshot)

        notes = tmp_path / "notes.txt"
        notes.write_text("not an image")
        browser.find_element(By.ID, "file").send_keys(str(notes))
        browser.find_element(By.ID, "go").click()
        WebDriverWait(browser, 20).until(lambda d: "Error" in d.find_element(By.ID, "status").text)
        status = browser.find_element(By.ID, "status")
        assert "not an image" in status.text and "error" in status.get_attribute("class")
        assert browser.find_elements(By.CSS_SELECTOR, "#results li") == []
