"""``Idempotency-Key`` on every write: a request sent again with the same key gets the first answer,
and changes nothing.

An engineer's phone replaying its offline queue, an integration retrying after a timeout: each sends
the key it chose for the request. The first answer (any status below 500, except the transient
401, 403, 408 and 429) is kept for a day per (caller, key), with a digest of the request; the same
key with another request is a 422. Kept in the identity database, so a restart changes nothing.
A pure ASGI middleware, inside the body limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any, Awaitable, Callable

from fastapi import HTTPException
from sqlalchemy import Column, Float, Integer, LargeBinary, MetaData, String, Table, delete, select
from sqlalchemy.engine import Engine
from starlette.requests import Request

from gateway.auth.store import Principal
from gateway.sqldb import create_tables

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = b"idempotency-key"
KEEP_S = 86400.0
MAX_KEY = 200
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
NOT_KEPT = {401, 403, 408, 429}  # transient: the same request may well succeed later

_metadata = MetaData()
_answers = Table(
    "idempotency_keys", _metadata,
    Column("principal", String(100), primary_key=True),
    Column("key", String(MAX_KEY), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False, index=True),
)


class AnswerStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(_metadata, engine)
        self.replays = 0

    def get(self, principal: str, key: str) -> dict[str, Any] | None:
        with self.engine.begin() as connection:
            row = connection.execute(select(_answers).where(
                _answers.c.principal == principal, _answers.c.key == key,
                _answers.c.created_at > time.time() - KEEP_S)).first()
        return dict(row._mapping) if row is not None else None

    def put(self, principal: str, key: str, fingerprint: str, status: int, content_type: str, body: bytes) -> None:
        now = time.time()
        with self.engine.begin() as connection:
            connection.execute(delete(_answers).where(
                (_answers.c.created_at <= now - KEEP_S)
                | ((_answers.c.principal == principal) & (_answers.c.key == key))))
            connection.execute(_answers.insert().values(
                principal=principal, key=key, fingerprint=fingerprint, status=status, content_type=content_type,
                body=body, created_at=now))


def _problem(status: int, detail: str) -> tuple[int, bytes]:
    return status, json.dumps({"type": "about:blank", "title": "Bad Request" if status == 400 else
                               "Unprocessable Content", "status": status, "detail": detail}).encode()


class IdempotencyKeys:
    def __init__(self, app: App, store: AnswerStore, authenticate: Callable[[Request], Principal],
                 prefix: str) -> None:
        self.app = app
        self.store = store
        self.authenticate = authenticate
        self.prefix = prefix
        # One lock per (caller, key) in use, with how many requests hold or wait for it.
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        raw_key = headers.get(HEADER)
        if raw_key is None or scope["method"] not in WRITES or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        if not 1 <= len(key) <= MAX_KEY or not key.isprintable():
            await self._send(send, *_problem(400, f"Idempotency-Key must be 1 to {MAX_KEY} printable characters"))
            return
        try:
            principal = self.authenticate(Request(scope))
        except HTTPException:
            await self.app(scope, receive, send)  # the endpoint answers 401 as usual
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        fingerprint = hashlib.sha256(b"\n".join([scope["method"].encode(), scope["path"].encode(),
                                                 scope.get("query_string", b""), bytes(body)])).hexdigest()
        scoped = (principal.name, key)
        lock, users = self._locks.get(scoped, (asyncio.Lock(), 0))
        self._locks[scoped] = (lock, users + 1)
        try:
            async with lock:  # the same key twice at once: the second waits for the first's answer
                await self._answer(scope, bytes(body), send, principal.name, key, fingerprint)
        finally:
            lock, users = self._locks[scoped]
            if users == 1:
                del self._locks[scoped]
            else:
                self._locks[scoped] = (lock, users - 1)

    async def _answer(self, scope: Scope, body: bytes, send: Send, principal: str, key: str,
                      fingerprint: str) -> None:
        kept = await asyncio.to_thread(self.store.get, principal, key)
        if kept is not None:
            if kept["fingerprint"] != fingerprint:
                await self._send(send, *_problem(422, "this Idempotency-Key was used for another request"))
                return
            self.store.replays += 1
            await self._send(send, kept["status"], kept["body"], kept["content_type"].encode(), replayed=True)
            return
        replayed = False

        async def once() -> Message:
            nonlocal replayed
            if replayed:
                return {"type": "http.disconnect"}
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        answer: dict[str, Any] = {"status": 500, "content_type": b"application/json", "body": bytearray()}

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["content_type"] = dict(message.get("headers") or []).get(b"content-type", b"")
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")
            await send(message)

        await self.app(scope, once, keep)
        status = answer["status"]
        if status < 500 and status not in NOT_KEPT:
            await asyncio.to_thread(self.store.put, principal, key, fingerprint, status,
                                    answer["content_type"].decode("latin-1"), bytes(answer["body"]))

    @staticmethod
    async def _send(send: Send, status: int, body: bytes, content_type: bytes = b"application/problem+json",
                    replayed: bool = False) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        if replayed:
            headers.append((b"idempotent-replayed", b"true"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
