# Raven: `make serve` and `make test` do all set-up on a fresh machine (Python 3.11+, make, a registry).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: serve test generate check-generated lint bench clean codex claude browser screenshots

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

serve: $(STAMP)
	$(BIN)/raven serve $(ARGS)

generate: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

check-generated: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check

lint: $(STAMP)
	$(BIN)/buf format -d --exit-code
	$(BIN)/buf lint
	@if git rev-parse --verify -q main >/dev/null; then $(BIN)/buf breaking --against '.git#branch=main'; fi
	$(BIN)/python scripts/gen_protos.py --check
	$(BIN)/ruff check .
	$(BIN)/mypy raven_service gateway
	$(BIN)/lint-imports

# The console's browser journeys (tests/console) use Debian's Chromium through Playwright; this
# installs the system package when it is missing (Playwright never downloads a browser here).
browser:
	@bash scripts/ensure_chromium.sh

# Refresh the committed console screenshots (README) from the browser journeys.
screenshots: $(STAMP) browser
	RAVEN_SCREENSHOT_DIR=docs/screenshots $(BIN)/python -m pytest tests/console -q -p no:cacheprovider

test: lint browser
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	bash bench/run.sh $(ARGS)

# Codex CLI for the e2e tier (tests/e2e/test_codex.py runs `make codex`): the npm package ships the
# native binary; installed into a project-local folder, pinned.
CODEX_VERSION ?= 0.171.0
CODEX := .tools/codex/node_modules/.bin/codex

codex: $(CODEX)

$(CODEX):
	npm install --silent --no-audit --no-fund --prefix .tools/codex @openai/codex@$(CODEX_VERSION)

# Claude Code for the e2e tier (tests/e2e/test_claude_code.py runs `make claude`): the npm package
# ships the native binary; installed into a project-local folder, pinned. npm warns EBADENGINE on
# Node 20 (the package asks for a newer Node); the native binary does not use Node.
CLAUDE_CODE_VERSION ?= 2.1.332
CLAUDE := .tools/claude-code/node_modules/.bin/claude

claude: $(CLAUDE)

$(CLAUDE):
	npm install --silent --no-audit --no-fund --prefix .tools/claude-code @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)

clean:
	rm -rf $(VENV) .raven .pytest_cache
