"""GET /v1/files/{file_id}/content: the bytes of a generated image or video (owner key only)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromPath
from litestar.response import Stream

from gateway.backend import DEADLINE, backend_of, call_metadata
from gateway.errors import forwarded_headers
from gateway.openapi import ERROR_RESPONSES
from gateway.sse import END, Item, RpcStream, open_stream
from raven.v1 import file_service_pb2

__all__ = ["FilesController"]

logger = logging.getLogger("raven.gateway")

#: Messages buffered ahead of the client (each a chunk of the file).
_BUFFER = 4


class FilesController(Controller):
    """Files Raven produced."""

    path = "/files"
    tags = ["files"]

    @get(
        "/{file_id:str}/content",
        operation_id="DownloadFile",
        summary="Download a file",
        media_type="application/octet-stream",
        responses=ERROR_RESPONSES,
    )
    async def download_file(self, request: Request[Any, Any, Any], file_id: FromPath[str]) -> Stream:
        """Stream the file's bytes with its MIME type (404 for unknown files and other keys' files)."""
        message = file_service_pb2.DownloadFileRequest(id=file_id)
        call = backend_of(request).files.DownloadFile(message, metadata=call_metadata(request), timeout=DEADLINE[0])
        stream: RpcStream[file_service_pb2.DownloadFileResponse]
        stream, first = await open_stream(call, None, buffer=_BUFFER)
        assert first is not None  # no timeout: the first batch always arrives
        headers = forwarded_headers(stream.initial_metadata)
        head = first[0]
        if head is END:
            headers["content-type"] = "application/octet-stream"
            return Stream(_nothing(), headers=headers, status_code=200)
        headers["content-type"] = head.mime_type or "application/octet-stream"
        if head.size_bytes > 0:
            headers["content-length"] = str(head.size_bytes)
        return Stream(_file_bytes(stream, first), headers=headers)


async def _nothing() -> AsyncIterator[bytes]:
    yield b""


async def _file_bytes(
    stream: RpcStream[file_service_pb2.DownloadFileResponse], first: list[Item]
) -> AsyncIterator[bytes]:
    """The data of every message; a failure mid-file aborts the connection (the client sees it short)."""
    try:
        batch: list[Item] | None = first
        while batch is not None:
            for item in batch:
                if item is END:
                    return
                if isinstance(item, BaseException):
                    logger.warning("file download failed mid-stream: %r", item)
                    raise item
                if item.data:
                    yield item.data
            batch = await stream.next_batch(None)
    finally:
        stream.cancel()
