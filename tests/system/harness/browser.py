"""Headless Debian Chromium driven by Selenium through Debian's chromedriver (no driver or browser download), and
what the tests read off its screenshots: the share of pixels near a colour, the dominant colour of an element.

Chromium trusts exactly the server key under test (`--ignore-certificate-errors-spki-list` with the SHA-256 of
its public key), so the page is reached over real TLS without installing a CA into the browser."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def spki_pin(cert: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: what Chromium's SPKI list takes."""
    der = subprocess.run(
        f"openssl x509 -in '{cert}' -pubkey -noout | openssl pkey -pubin -outform der",
        shell=True, check=True, capture_output=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


class Browser:
    def __init__(self, workdir: Path, trusted_cert: Path, width: int = 1280, height: int = 1600) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
                    f"--window-size={width},{height}", f"--user-data-dir={workdir / 'profile'}",
                    f"--ignore-certificate-errors-spki-list={spki_pin(trusted_cert)}"):
            options.add_argument(arg)
        # Selenium must not look for (or download) a driver of its own.
        os.environ["SE_OFFLINE"] = "true"
        service = Service(executable_path=CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(150)
        self.shots: list[Path] = []

    def get(self, url: str) -> None:
        self.driver.get(url)

    def submit(self, css: str, timeout: float = 150.0) -> None:
        """Clicks the button `css` and waits until the page it leads to has loaded."""
        old = self.find("html")
        self.find(css).click()
        WebDriverWait(self.driver, timeout).until(expected_conditions.staleness_of(old))
        WebDriverWait(self.driver, timeout).until(
            lambda driver: driver.execute_script("return document.readyState") == "complete")

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.find(css).text

    def screenshot(self, name: str) -> Image.Image:
        """The whole viewport, saved as `<name>.png` beside the test's other files."""
        path = self.dir / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), f"no screenshot {name}"
        self.shots.append(path)
        return Image.open(path).convert("RGB")

    def element_image(self, css: str) -> Image.Image:
        return Image.open(io.BytesIO(self.find(css).screenshot_as_png)).convert("RGB")

    def close(self) -> None:
        self.driver.quit()


def hex_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def share_near(image: Image.Image, colour: str, tolerance: int = 12) -> float:
    """The share of the image's pixels within `tolerance` (per channel) of `colour`."""
    pixels = np.asarray(image, dtype=np.int16)
    close = np.all(np.abs(pixels - np.array(hex_rgb(colour), dtype=np.int16)) <= tolerance, axis=-1)
    return float(close.mean())


def dominant(image: Image.Image) -> tuple[int, int, int]:
    """The most frequent colour of the image (text anti-aliasing aside, a badge's background)."""
    pixels = np.asarray(image).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    return tuple(int(c) for c in colours[counts.argmax()])  # type: ignore[return-value]


def near(rgb: tuple[int, int, int], colour: str, tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, hex_rgb(colour)))
