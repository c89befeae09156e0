"""Root conftest: shared fixtures live in tests/fixtures/, one module per real component."""

pytest_plugins = [
    "tests.fixtures.zfs",
    "tests.fixtures.vsphere",
    "tests.fixtures.lab",
    "tests.fixtures.openzfs",
]
