"""Headless Chromium for the console's browser tests: Debian's ``chromium`` and ``chromium-driver``.

Nothing downloads a browser: the executables must be installed (``.ci/run`` installs them with
apt-get). Outside CI a missing browser skips the test with the reason; in CI it fails. Each
browser gets a fresh profile directory, no network services of its own (no sync, no component
updates), and its console log is kept so that tests can assert no script error or
Content-Security-Policy violation happened. Screenshots go to tests/screenshots/ (git-ignored).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, ROOT

SCREENSHOTS = ROOT / "tests" / "screenshots"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
)


def find_browser() -> tuple[str, str]:
    """The chromium and chromedriver executables, or skip (fail in CI) naming what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    missing = [name for name, path in (("chromium", chromium), ("chromium-driver", driver)) if path is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        message = f"the browser tests need {', '.join(missing)}: apt-get install -y chromium chromium-driver"
        if IN_CI:
            pytest.fail(message + " (.ci/run installs them)")
        pytest.skip(message)
    assert chromium is not None and driver is not None
    return chromium, driver


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A selenium WebDriver on a fresh headless Chromium, quit (and its profile removed) after."""
    binary, driver_path = find_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="router-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str) -> Path:
    """Save the page as tests/screenshots/<name>.png (for people looking at a failed run)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition", driver: Any = None) -> Any:
    """Poll ``check`` until it returns something truthy (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as error:  # the element is not there yet, or went stale during a refresh
            last = error
        else:
            if value:
                return value
        time.sleep(0.1)
    if driver is not None:
        screenshot(driver, "timeout-" + "".join(c if c.isalnum() else "-" for c in what)[:60])
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def browser_errors(driver: Any) -> list[str]:
    """Severe entries of the browser's console since the last call: script errors, CSP violations."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def click(driver: Any, selector: str, timeout: float = 15.0) -> None:
    """Click the element ``selector`` finds, trying again when a live refresh replaced it meanwhile."""

    def attempt() -> bool:
        driver.find_element("css selector", selector).click()
        return True

    wait_until(attempt, timeout=timeout, what=f"click {selector}", driver=driver)
