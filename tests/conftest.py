"""Test harness entry: real servers and a real proxy process (see tests/fixtures/)."""

pytest_plugins = ["tests.fixtures.fix_pg", "tests.fixtures.fix_proxy", "tests.fixtures.fix_mysql"]
