"""The example configs under ``examples/`` stay valid: each loads, builds its providers and serves
the catalogue it declares; the CLI's ``--check-config`` accepts them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conformance_support import USER_HI, body_of, environment
from fakes.openai_upstream import FakeOpenAI, Scenario

from raven_service.config import load_settings
from raven_service.core.ports import ChatProvider
from raven_service.wiring import build_providers

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
REQUIRED = {"openai", "deepseek", "anthropic", "gemini", "ollama", "vllm"}


def test_every_documented_example_exists() -> None:
    assert {p.stem for p in EXAMPLES} >= REQUIRED


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_config_builds(path: Path) -> None:
    settings = load_settings(str(path), environ={})
    providers = build_providers(settings)
    assert settings.providers, "an example without providers shows nothing"
    assert {m.id for m in providers.models} == set(settings.models)
    for m in providers.models:
        for route in m.routes:
            if "chat" in m.capabilities:
                assert isinstance(providers.chat[route.provider], ChatProvider)
            else:
                assert route.provider in providers.image or route.provider in providers.video
    for name, cfg in settings.providers.items():
        assert cfg.base_url.startswith(("http://", "https://")), name
        if cfg.api_key_env:  # the documented variable, never a literal key
            assert cfg.api_key_env.isupper() and cfg.api_key_env.endswith("_KEY"), name


def test_cli_check_config_accepts_examples(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAVEN_")}
    raven = Path(sys.executable).parent / "raven"
    for path in (ROOT / "examples" / "ollama.toml", ROOT / "examples" / "deepseek.toml"):
        out = subprocess.run([str(raven), "serve", "--check-config", "--config", str(path),
                              "--data-dir", str(tmp_path / "data")],
                             capture_output=True, text=True, env=env, timeout=25, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "config OK" in out.stdout


@pytest.mark.parametrize("name", ["ollama", "vllm", "llamacpp"])
@pytest.mark.parametrize("protocol", ["rest", "grpc"])
async def test_local_server_walkthrough(tmp_path: Path, name: str, protocol: str) -> None:
    """The README walkthrough: the example file as written, with only the server's address moved
    to a fake OpenAI-compatible server, serves chat and streams, sending no API key."""
    data = tomllib.loads((ROOT / "examples" / f"{name}.toml").read_text())
    [(slug, entry)] = data["models"].items()
    async with FakeOpenAI() as fake:
        for cfg in data["providers"].values():
            cfg["base_url"] = fake.base_url
        async with environment(tmp_path, providers=data["providers"], models=data["models"]) as env:
            client = env.client(protocol)
            reply = await client.complete(model=slug, messages=USER_HI, temperature=0.1)
            assert reply.content == fake.text
            streamed = await client.stream(model=slug, messages=USER_HI)
            assert streamed.content == fake.text and streamed.usage is not None and not streamed.usage.estimated
    upstream_model = entry["routes"][0]["model"]
    assert [body_of(r)["model"] for r in fake.requests] == [upstream_model] * 2
    assert all("authorization" not in r.headers for r in fake.requests)


async def test_local_fallback_example_falls_through_to_the_simulator(tmp_path: Path) -> None:
    """examples/local-fallback.toml: vLLM answering 503 and Ollama not running -> the simulator."""
    data = tomllib.loads((ROOT / "examples" / "local-fallback.toml").read_text())
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    async with FakeOpenAI() as vllm:
        vllm.on_model("Qwen/Qwen2.5-7B-Instruct", Scenario.error(503, "loading", type="server_error"))
        data["providers"]["vllm"]["base_url"] = vllm.base_url
        data["providers"]["ollama"]["base_url"] = f"http://127.0.0.1:{closed}/v1"
        settings = {k: v for k, v in data.items() if k not in ("providers", "models")}
        async with environment(tmp_path, providers=data["providers"], models=data["models"], **settings) as env:
            reply = await env.client("grpc").complete(model="local-chat", messages=USER_HI)
            assert reply.provider == "local" and reply.content
            rec = await env.usage(reply.id)
    assert rec.attempts[0].startswith("vllm/") and rec.attempts[1].startswith("ollama/")
    assert rec.attempts[2] == "local/local-chat:ok"
    assert len(vllm.requests) == 1


def test_readme_walkthrough_is_the_ollama_example() -> None:
    """The TOML printed in the README's local-server walkthrough is examples/ollama.toml."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### A local server with nothing but a config file", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    assert tomllib.loads(block) == tomllib.loads((ROOT / "examples" / "ollama.toml").read_text())
