"""``python -m gateway --grpc-target 127.0.0.1:50051 --port 8000``: run the gateway alone under uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from gateway.app import create_app
from gateway.config import GatewaySettings


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--grpc-target", default="127.0.0.1:50051")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--public-base-url", default=None)
    args = parser.parse_args(argv)
    settings = GatewaySettings(grpc_target=args.grpc_target, public_base_url=args.public_base_url)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
