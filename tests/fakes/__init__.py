"""Fake upstreams that speak real provider wire formats over real loopback sockets.

Import as ``from fakes.openai_upstream import FakeOpenAI, Scenario`` (pytest puts ``tests/`` on
``sys.path``) or ``tests.fakes.openai_upstream`` from the repository root. Fakes import nothing
from raven_service, so any test tier (providers, gateway, e2e) can point Raven at them.
"""
