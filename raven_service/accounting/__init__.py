"""Usage records and credits."""
