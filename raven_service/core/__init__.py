"""Raven's domain: types, errors and ports. Imports only the standard library and msgspec."""
