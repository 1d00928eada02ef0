"""A network backend for the SDKs' HTTP client on the running asyncio loop's own transports (issue 15).

httpcore2's default backend (anyio) costs the session host's event loop, per streamed chunk, a cancel scope
with a timer (`fail_after`) and a pause/resume of the transport's reading (two epoll changes on asyncio's
loop): py-spy of a worker streaming ~100 sessions put 42 % of the loop's samples in that read path. This
backend keeps reading on (the protocol buffers what arrives, pausing only past READ_HIGH_WATER bytes
unread), returns buffered bytes without suspending, and bounds a wait with one `call_later`. TLS is the
loop's own (`loop.start_tls`: uvloop's is in C). The same errors as the anyio backend: httpcore2's
ConnectError / ConnectTimeout / ReadError / ReadTimeout / WriteError / WriteTimeout.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine, Iterable
from typing import Any

from httpcore2 import ConnectError, ConnectTimeout, ReadError, ReadTimeout, WriteError, WriteTimeout
from httpcore2._backends.base import AsyncNetworkBackend, AsyncNetworkStream
from httpcore2._types import SOCKET_OPTION

# Unread bytes past which the protocol stops reading from the socket until the reader catches up.
READ_HIGH_WATER = 256 * 1024


class _Protocol(asyncio.Protocol):
    """Buffers what arrives and wakes the one reader waiting; tracks write flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.paused = False  # reading paused (buffer above READ_HIGH_WATER)
        self.ended = False  # EOF or connection lost
        self.error: BaseException | None = None
        self.reader: asyncio.Future[None] | None = None
        self.writable: asyncio.Future[None] | None = None  # set while writing is paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_HIGH_WATER and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended, self.error = True, exc
        self._wake()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def _wake(self) -> None:
        if self.reader is not None and not self.reader.done():
            self.reader.set_result(None)


async def _within(waiter: asyncio.Future[None], timeout: float | None, error: type[Exception]) -> None:
    """Wait for `waiter`, at most `timeout` seconds (None: no bound); raise `error` after that. A cancellation of
    the calling task propagates as usual."""
    if timeout is None:
        await waiter
        return
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        waiter.cancel()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        await waiter
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not expired or (task is not None and task.cancelling()):
            raise
        raise error(f"no data for {timeout} s") from None
    finally:
        handle.cancel()


class AsyncioStream(AsyncNetworkStream):
    """One connection: httpcore2's network stream on an asyncio transport."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to max_bytes bytes (what is buffered, else the next that arrive); b"" at EOF. Raises ReadTimeout
        after `timeout` seconds without data, ReadError if the connection failed."""
        protocol = self._protocol
        if not protocol.buffer and not protocol.ended:
            protocol.reader = asyncio.get_running_loop().create_future()
            try:
                await _within(protocol.reader, timeout, ReadTimeout)
            finally:
                protocol.reader = None
        if not protocol.buffer:
            if protocol.error is not None:
                raise ReadError(str(protocol.error)) from protocol.error
            return b""
        data = bytes(protocol.buffer[:max_bytes])
        del protocol.buffer[:max_bytes]
        if protocol.paused and len(protocol.buffer) <= READ_HIGH_WATER // 2:
            protocol.paused = False
            self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send `buffer`; wait (at most `timeout` s: WriteTimeout) while the transport's buffer is full."""
        if not buffer:
            return
        if self._transport.is_closing():
            raise WriteError("connection closed")
        self._transport.write(buffer)
        if (writable := self._protocol.writable) is not None:
            await _within(asyncio.shield(writable), timeout, WriteTimeout)

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncNetworkStream:
        """This connection wrapped in TLS by the loop (loop.start_tls). Raises ConnectTimeout / ConnectError."""
        loop = asyncio.get_running_loop()
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(self._transport, self._protocol, ssl_context, server_hostname=server_hostname), timeout
            )
        except TimeoutError as error:
            self._transport.close()
            raise ConnectTimeout(str(error)) from error
        except (OSError, ssl.SSLError) as error:
            self._transport.close()
            raise ConnectError(str(error)) from error
        if transport is None:
            raise ConnectError("the connection closed during the TLS handshake")
        self._protocol.transport = transport
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":  # the loop reads as data comes: anything unread, or the end, is in the protocol
            return bool(self._protocol.buffer) or self._protocol.ended or self._transport.is_closing()
        return None


async def _connected(
    opening: Coroutine[Any, Any, tuple[asyncio.Transport, _Protocol]], timeout: float | None
) -> tuple[asyncio.Transport, _Protocol]:
    """The connection `opening` (the loop's create_connection / create_unix_connection) makes, within
    `timeout` seconds (None: no bound). Raises ConnectTimeout after that, ConnectError if it fails."""
    try:
        return await asyncio.wait_for(opening, timeout)
    except TimeoutError as error:
        raise ConnectTimeout(str(error)) from error
    except OSError as error:
        raise ConnectError(str(error)) from error


class AsyncioBackend(AsyncNetworkBackend):
    """httpcore2's network backend on the running asyncio loop (asyncio's own or uvloop)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        """A TCP connection to host:port (TCP_NODELAY, as asyncio sets). Raises ConnectTimeout / ConnectError."""
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        transport, protocol = await _connected(loop.create_connection(_Protocol, host, port, local_addr=local), timeout)
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SOCKET_OPTION] | None = None
    ) -> AsyncNetworkStream:
        """A Unix socket connection. Raises ConnectTimeout / ConnectError."""
        loop = asyncio.get_running_loop()
        transport, protocol = await _connected(loop.create_unix_connection(_Protocol, path), timeout)
        return AsyncioStream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
