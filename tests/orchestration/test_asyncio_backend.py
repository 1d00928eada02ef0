"""The SDK clients' network backend on the loop's own transports (providers/asyncio_backend.py): a streamed
reply through the real OpenAI SDK, a read timeout, and TLS with connection reuse, on uvloop and on asyncio."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Callable

import httpx2
import openai
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestration.providers.asyncio_backend import AsyncioBackend, AsyncioStream
from orchestration.providers.http_adapters import on_asyncio_backend, sdk_http_client

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def run(kind: str, coroutine):
    with asyncio.Runner(loop_factory=LOOPS[kind]) as runner:
        return runner.run(coroutine)


@pytest.mark.parametrize("kind", LOOPS)
def test_the_openai_sdk_streams_a_reply_through_it(kind, fake_llm):
    fake_llm.default_reply = "a reply in many small chunks, " * 5
    fake_llm.chunk_size = 3

    async def stream() -> tuple[str, object]:
        http = sdk_http_client(openai, 5.0)
        client = openai.AsyncOpenAI(api_key="test-key", base_url=fake_llm.openai_url, http_client=http)
        parts = []
        chunks = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        backend = http._transport._pool._network_backend
        await client.close()
        return "".join(parts), backend

    text, backend = run(kind, stream())
    assert text == fake_llm.default_reply
    assert isinstance(backend, AsyncioBackend)


@pytest.mark.parametrize("kind", LOOPS)
def test_a_server_that_never_answers_times_the_read_out(kind):
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # the request; no answer
        await asyncio.sleep(5)
        writer.close()

    async def request() -> None:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, on_asyncio_backend(httpx2.AsyncClient(timeout=0.3)) as client:
            await client.get(f"http://127.0.0.1:{port}/")

    with pytest.raises(httpx2.ReadTimeout):
        run(kind, request())


def self_signed() -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.mark.parametrize("kind", LOOPS)
def test_tls_requests_share_one_verified_connection(kind, tmp_path):
    certificate, key = self_signed()
    (tmp_path / "cert.pem").write_bytes(certificate)
    (tmp_path / "key.pem").write_bytes(key)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_context = ssl.create_default_context(cadata=certificate.decode())
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            await writer.drain()

    async def requests() -> list[tuple[str, bool]]:
        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        seen = []
        async with server, on_asyncio_backend(httpx2.AsyncClient(verify=client_context, timeout=5)) as client:
            for _ in range(2):
                response = await client.get(f"https://127.0.0.1:{port}/")
                stream = response.extensions["network_stream"]
                seen.append(
                    (response.text, isinstance(stream, AsyncioStream) and bool(stream.get_extra_info("ssl_object")))
                )
        return seen

    assert run(kind, requests()) == [("hello", True), ("hello", True)]
    assert connections == 1  # the second request reused the first one's connection


@pytest.mark.parametrize("kind", LOOPS)
def test_a_unix_socket_server_answers_through_it_and_a_missing_one_is_a_connect_error(kind, tmp_path):
    # An OpenAI-compatible server on a local socket (vLLM or Ollama behind a Unix socket): httpx2's `uds`.
    path = str(tmp_path / "llm.sock")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def get(socket_path: str) -> str:
        transport = httpx2.AsyncHTTPTransport(uds=socket_path)
        async with on_asyncio_backend(httpx2.AsyncClient(transport=transport)) as client:
            return (await client.get("http://localhost/v1/models")).text

    async def exercise() -> tuple[str, type[BaseException] | None]:
        server = await asyncio.start_unix_server(answer, path)
        async with server:
            text = await get(path)
        try:
            await get(str(tmp_path / "absent.sock"))
        except httpx2.ConnectError as error:
            return text, type(error)
        return text, None

    assert run(kind, exercise()) == ("ok", httpx2.ConnectError)
