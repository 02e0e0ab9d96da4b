"""The contract tests, one module per concern; combined in :mod:`qw_testkit`."""
