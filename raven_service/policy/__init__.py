"""Admission policy: authentication, rate and concurrency limits."""
