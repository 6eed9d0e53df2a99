"""Shared pytest configuration: records each test's outcome so fixtures can dump diagnostics on failure."""

import pytest


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
