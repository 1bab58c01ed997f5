"""Snapshots of a dataset's approved items, and exports of a dataset (or of a snapshot) as a file download.

Exports reveal a whole dataset, so they need the `finetune` permission like making a snapshot; reading
snapshots needs `read`. An export streams: its items are read in keyset pages as the client takes the body.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from app.api.deps import ReadSession, SessionFactoryDep, SettingsDep
from app.auth.deps import FineTuner, Reader
from app.core.db import transaction
from app.finetune import exports, formats
from app.finetune.export_schemas import SnapshotCreate, SnapshotList, SnapshotOut
from app.finetune.exports import ExportUnavailableError, FileFormat
from app.finetune.formats import Split
from app.finetune.snapshots import (
    EmptyExportError,
    create_snapshot,
    file_public_ids,
    get_snapshot,
    list_snapshots,
    resolve_source,
)

router = APIRouter(tags=["exports"])


def _bad_request(exc: EmptyExportError) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, str(exc))


@router.post(
    "/v1/datasets/{dataset_id}/snapshots", status_code=status.HTTP_201_CREATED, response_model=SnapshotOut
)
def create(
    principal: FineTuner,
    dataset_id: int,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
    response: Response,
    body: SnapshotCreate | None = None,
) -> SnapshotOut:
    """Copy the dataset's approved items as they are now, split them into train and validation by the seed, and
    store both splits as OpenAI chat JSONL files (ready for `POST /v1/fine_tuning/jobs`). 400 when the dataset
    has no approved items."""
    body = body or SnapshotCreate()
    try:
        with transaction(sessions) as session:
            snapshot = create_snapshot(
                session,
                dataset_id,
                created_by=principal.name,
                seed=body.seed,
                validation_fraction=body.validation_fraction,
                settings=settings,
            )
            out = SnapshotOut.of(snapshot, file_public_ids(session, [snapshot]))
    except EmptyExportError as exc:
        raise _bad_request(exc) from exc
    response.headers["Location"] = f"/v1/snapshots/{snapshot.id}"
    return out


@router.get("/v1/datasets/{dataset_id}/snapshots", response_model=SnapshotList)
def list_all(
    _: Reader,
    dataset_id: int,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="Continue after this snapshot id (newest first).")
    ] = None,
) -> SnapshotList:
    """The dataset's snapshots, newest first."""
    found = list_snapshots(session, dataset_id, limit=limit + 1, before=before)
    page = found[:limit]
    ids = file_public_ids(session, page)
    return SnapshotList(data=[SnapshotOut.of(s, ids) for s in page], has_more=len(found) > limit)


@router.get("/v1/snapshots/{snapshot_id}", response_model=SnapshotOut)
def get_one(_: Reader, snapshot_id: int, session: ReadSession) -> SnapshotOut:
    snapshot = get_snapshot(session, snapshot_id)
    return SnapshotOut.of(snapshot, file_public_ids(session, [snapshot]))


@router.get(
    "/v1/datasets/{dataset_id}/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The export, as an attachment.",
            "content": {t: {} for t in set(formats.MEDIA_TYPES.values())},
        }
    },
)
def export(
    _: FineTuner,
    dataset_id: int,
    request: Request,
    format: Annotated[
        FileFormat, Query(description="alpaca, sharegpt (JSON arrays), openai (chat JSONL), parquet.")
    ],
    snapshot: Annotated[
        int | None,
        Query(ge=1, le=2**31 - 1, description="Export this snapshot's copy, not the current items."),
    ] = None,
    split: Annotated[
        Literal["train", "validation", "all"], Query(description="A snapshot's split (with `snapshot` only).")
    ] = "all",
) -> StreamingResponse:
    """The dataset's approved items (or a snapshot's copy) as a download, streamed while it is read in pages. 400
    when there is nothing to export."""
    reads = request.app.state.read_sessions
    wanted: Split | None = None if split == "all" else split
    try:
        with reads() as session:
            dataset, _snapshot, source = resolve_source(session, dataset_id, snapshot, wanted)
            name = dataset.name
        if format == "parquet":
            body = exports.stream_parquet(reads, source)
        else:
            body = exports.stream_text(reads, source, format)
    except EmptyExportError as exc:
        raise _bad_request(exc) from exc
    except ExportUnavailableError as exc:
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, str(exc)) from exc
    filename = exports.export_filename(name, format, snapshot, wanted)
    return StreamingResponse(
        body,
        media_type=formats.MEDIA_TYPES[format],
        headers={"Content-Disposition": exports.content_disposition(filename), "Cache-Control": "no-store"},
    )
