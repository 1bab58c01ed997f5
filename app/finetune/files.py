"""Stored files (`file-...`): written and read in chunks, so no file ever sits in memory whole.

Content is kept in the database (file_chunk), so every process of a deployment reads a training file from the
same place, and a file is written, used and deleted transactionally with the rows that point at it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.core.errors import ConflictError, NotFoundError
from app.finetune.models import FileChunk, FineTuneJob, Snapshot, StoredFile

CHUNK_BYTES = 1 << 20


def new_public_id(prefix: str) -> str:
    """An OpenAI-style id (`file-...`, `ftjob-...`): random, so ids say nothing about how many exist."""
    return f"{prefix}-{secrets.token_hex(12)}"


class JsonlError(ValueError):
    """An upload that is not JSONL: `line` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass
class JsonlChecker:
    """Checks JSONL as its bytes arrive (lines may straddle chunks): every non-blank line is a JSON object."""

    records: int = 0
    _line_no: int = 0
    _rest: bytes = field(default=b"", repr=False)

    def feed(self, data: bytes) -> None:
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        for raw in lines:
            self._check(raw)

    def close(self) -> None:
        if self._rest:
            self._check(self._rest)
            self._rest = b""

    def _check(self, raw: bytes) -> None:
        self._line_no += 1
        if not raw.strip():
            return
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise JsonlError(self._line_no, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except json.JSONDecodeError as exc:
            raise JsonlError(self._line_no, f"not JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(value, dict):
            raise JsonlError(self._line_no, f"a JSON object was expected, found {type(value).__name__}")
        self.records += 1


def store_file(
    session: Session,
    chunks: Iterable[bytes],
    *,
    filename: str,
    purpose: str,
    created_by: str,
    check_jsonl: bool = False,
) -> StoredFile:
    """Write a file chunk by chunk (JsonlError, before anything is committed, if `check_jsonl` and a line is
    not a JSON object). The caller's transaction commits it."""
    digest, size, seq = hashlib.sha256(), 0, 0
    checker = JsonlChecker() if check_jsonl else None
    stored = StoredFile(
        public_id=new_public_id("file"),
        filename=filename[:255],
        purpose=purpose,
        bytes=0,
        sha256="",
        created_by=created_by,
    )
    session.add(stored)
    session.flush()
    buffer = bytearray()
    for data in chunks:
        if checker is not None:
            checker.feed(data)
        digest.update(data)
        size += len(data)
        buffer += data
        while len(buffer) >= CHUNK_BYTES:
            session.add(FileChunk(file_id=stored.id, seq=seq, data=bytes(buffer[:CHUNK_BYTES])))
            del buffer[:CHUNK_BYTES]
            seq += 1
            session.flush()
    if checker is not None:
        checker.close()
    if buffer:
        session.add(FileChunk(file_id=stored.id, seq=seq, data=bytes(buffer)))
    stored.bytes, stored.sha256 = size, digest.hexdigest()
    stored.records = checker.records if checker is not None else 0
    session.flush()
    return stored


def get_file(session: Session, public_id: str) -> StoredFile:
    found = session.scalar(select(StoredFile).where(StoredFile.public_id == public_id))
    if found is None:
        raise NotFoundError(f"no file {public_id!r}")
    return found


def iter_content(sessions: sessionmaker[Session], file_id: int) -> Iterator[bytes]:
    """The file's bytes, one chunk per query: a download of a large file holds one chunk at a time."""
    seq = 0
    while True:
        with sessions() as session:
            data = session.scalar(
                select(FileChunk.data).where(FileChunk.file_id == file_id, FileChunk.seq == seq)
            )
        if data is None:
            return
        yield data
        seq += 1


def iter_lines(sessions: sessionmaker[Session], file_id: int) -> Iterator[bytes]:
    """The file's lines (without their newline), streamed."""
    rest = b""
    for data in iter_content(sessions, file_id):
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def delete_file(session: Session, public_id: str) -> StoredFile:
    """Delete a file no job or snapshot uses (ConflictError naming the user otherwise)."""
    stored = get_file(session, public_id)
    job = session.scalar(
        select(FineTuneJob.public_id).where(
            or_(FineTuneJob.training_file_id == stored.id, FineTuneJob.validation_file_id == stored.id)
        )
    )
    if job is not None:
        raise ConflictError(f"file {public_id} is used by fine-tuning job {job}; it cannot be deleted")
    snapshot = session.scalar(
        select(Snapshot.id).where(
            or_(Snapshot.training_file_id == stored.id, Snapshot.validation_file_id == stored.id)
        )
    )
    if snapshot is not None:
        raise ConflictError(f"file {public_id} belongs to snapshot {snapshot}; it cannot be deleted")
    session.execute(delete(FileChunk).where(FileChunk.file_id == stored.id))
    session.delete(stored)
    return stored
