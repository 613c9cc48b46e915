"""One headless Chromium for this package's tests; a fresh page (own context) per test.

Playwright's sync API leaves its event loop marked as running in this thread while it is started,
so pytest-asyncio cannot run a coroutine test beside it: the browser lives for this package only
(scope="package", closed before pytest leaves tests/browser), and the tests here are plain
functions; a coroutine test here is refused at collection with that reason.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from harness.browser import ChromiumMissing, PageLog, chromium, new_page


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        function = getattr(item, "function", None)
        if item.path.is_relative_to(here) and inspect.iscoroutinefunction(function):
            raise pytest.UsageError(
                f"{item.nodeid}: tests/browser runs plain functions only (see its conftest)"
            )


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    try:
        session = chromium()
        launched = session.__enter__()
    except ChromiumMissing as exc:
        pytest.skip(str(exc))
    try:
        yield launched
    finally:
        session.__exit__(None, None, None)


@pytest.fixture
def opened_page(browser: Browser) -> Iterator[tuple[Page, PageLog]]:
    with new_page(browser) as opened:
        yield opened


@pytest.fixture
def page(opened_page: tuple[Page, PageLog]) -> Page:
    return opened_page[0]


@pytest.fixture
def page_log(opened_page: tuple[Page, PageLog]) -> PageLog:
    return opened_page[1]
