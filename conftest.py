"""Root conftest: shared fixtures live in tests/fixtures/, one module per real component."""

import os

import pytest

pytest_plugins = [
    "tests.fixtures.zfs",
    "tests.fixtures.vsphere",
    "tests.fixtures.lab",
    "tests.fixtures.openzfs",
    "tests.fixtures.replication",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", type=int, default=int(os.environ.get("RECONCILER_SOAK_KILLS", "6")), metavar="N",
                     help="kill -9s in the crash soak (default 6, or RECONCILER_SOAK_KILLS); hundreds to soak")


@pytest.fixture(scope="session")
def soak_kills(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--soak"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The soak's length is chosen on the command line: so is its time limit (a kill costs ~20 s here)."""
    kills = int(config.getoption("--soak"))
    for item in items:
        if "soak_kills" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(120 + 60 * kills))
