"""Settings: defaults < TOML file < RAVEN_* environment < explicit overrides; exact error keys."""

from __future__ import annotations

from decimal import Decimal

import pytest

from raven_service.config import ConfigError, load_settings, model_infos

SPEC_EXAMPLE = '''
[providers.deepseek]
kind = "openai"
base_url = "https://api.deepseek.com/v1"
api_key_env = "DEEPSEEK_API_KEY"

[models."DeepSeek-V3.2"]
routes = [{ provider = "deepseek", model = "deepseek-chat" }]
capabilities = ["chat", "tools", "json"]
context_length = 128000
price_input_per_mtok = 0.28
price_output_per_mtok = 0.42
supported_parameters = ["max_tokens", "temperature", "top_p", "stop", "seed",
                        "tools", "tool_choice", "response_format",
                        "frequency_penalty", "presence_penalty"]
'''


def test_spec_example_config_is_honoured_exactly(tmp_path):
    cfg = tmp_path / "raven.toml"
    cfg.write_text(SPEC_EXAMPLE)
    settings = load_settings(str(cfg), environ={})
    (model,) = model_infos(settings)
    assert model.id == "DeepSeek-V3.2"
    assert model.routes[0].provider == "deepseek" and model.routes[0].model == "deepseek-chat"
    assert model.price_input_per_mtok == Decimal("0.28") and model.price_output_per_mtok == Decimal("0.42")
    assert model.context_length == 128000 and "seed" in model.supported_parameters
    assert settings.providers["deepseek"].api_key_env == "DEEPSEEK_API_KEY"


def test_precedence_defaults_file_env_overrides(tmp_path):
    cfg = tmp_path / "raven.toml"
    cfg.write_text('http_port = 9001\ngrpc_port = 9002\ndata_dir = "/from/file"\n')
    assert load_settings(None, environ={}).http_port == 8000
    s = load_settings(str(cfg), environ={"RAVEN_GRPC_PORT": "9102", "RAVEN_GRPC_REFLECTION": "false"})
    assert (s.http_port, s.grpc_port, s.data_dir, s.grpc_reflection) == (9001, 9102, "/from/file", False)
    s = load_settings(None, {"grpc_port": 9202}, environ={"RAVEN_CONFIG": str(cfg), "RAVEN_GRPC_PORT": "9102"})
    assert (s.http_port, s.grpc_port, s.config) == (9001, 9202, str(cfg))


@pytest.mark.parametrize(
    ("toml", "env", "names"),
    [
        ('[providers.x]\nkind = "openia"\nbase_url = "http://h"\n', {}, "providers.x.kind"),
        ('[providers.x]\nkind = "openai"\n', {}, "providers.x.base_url"),
        ('[models."m"]\nroutes = [{ provider = "ghost", model = "m" }]\n', {}, 'models."m".routes[0].provider'),
        ('[models."m"]\nroutes = [{ provider = "local", model = "m" }]\nprice_input_per_mtok = -1\n', {},
         'models."m".price_input_per_mtok'),
        ('[models."m"]\nroutes = [{ provider = "local", model = "m" }]\ncapabilities = ["chat", "telepathy"]\n', {},
         'models."m".capabilities'),
        ("bogus_setting = 1\n", {}, "bogus_setting"),
        ("", {"RAVEN_HTTP_PORT": "eighty"}, "RAVEN_HTTP_PORT"),
    ],
)
def test_config_errors_name_the_exact_key(tmp_path, toml, env, names):
    cfg = tmp_path / "raven.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as ei:
        load_settings(str(cfg), environ=env)
    assert names in str(ei.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "nope.toml"), environ={})
