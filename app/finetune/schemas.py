"""The OpenAI fine-tuning API's shapes, field by field (files, jobs, events, checkpoints), plus a few fields of
Sprout's own on a job (evaluation, trainer, dataset_id, snapshot_id) that OpenAI's clients ignore."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.finetune.models import FineTuneCheckpoint, FineTuneEvent, FineTuneJob, StoredFile

Auto = Literal["auto"]
NEpochs = Auto | Annotated[int, Field(ge=1, le=50)]
BatchSize = Auto | Annotated[int, Field(ge=1, le=256)]
LrMultiplier = Auto | Annotated[float, Field(gt=0, le=100)]
SUFFIX_PATTERN = r"^[A-Za-z0-9_.-]*$"


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: NEpochs = "auto"
    batch_size: BatchSize = "auto"
    learning_rate_multiplier: LrMultiplier = "auto"


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised"] = Field(
        default="supervised", description="Only supervised fine-tuning (SFT with LoRA) is offered."
    )
    supervised: Supervised = Field(default_factory=Supervised)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200, description="A base model configured in settings.")
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: Annotated[str, StringConstraints(max_length=18, pattern=SUFFIX_PATTERN)] | None = Field(
        default=None, description="Up to 18 letters, digits, '_', '-' or '.', placed in the model's name."
    )
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: (
        dict[
            Annotated[str, StringConstraints(max_length=64)],
            Annotated[str, StringConstraints(max_length=512)],
        ]
        | None
    ) = Field(default=None, max_length=16)
    integrations: list[Any] | None = Field(
        default=None, max_length=0, description="Not offered: Sprout keeps metrics in the job's events."
    )

    def chosen_hyperparameters(self) -> Hyperparameters:
        """`method.supervised.hyperparameters` when given (OpenAI's newer form), else `hyperparameters`."""
        if self.method is not None:
            return self.method.supervised.hyperparameters
        return self.hyperparameters or Hyperparameters()


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None

    @classmethod
    def of(cls, stored: StoredFile) -> FileObject:
        return cls(
            id=stored.public_id,
            bytes=stored.bytes,
            created_at=int(stored.created_at.timestamp()),
            filename=stored.filename,
            purpose=stored.purpose,
        )


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None
    model: str
    fine_tuned_model: str | None
    organization_id: str = "sprout"
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    hyperparameters: dict[str, Any]
    method: dict[str, Any]
    training_file: str
    validation_file: str | None
    result_files: list[str]
    trained_tokens: int | None
    error: JobError | None
    seed: int
    estimated_finish: int | None = None
    integrations: list[Any] | None = None
    metadata: dict[str, str] | None
    user_provided_suffix: str | None
    # Sprout's own
    trainer: str
    evaluation: dict[str, Any]
    dataset_id: int | None
    snapshot_id: int | None

    @classmethod
    def of(cls, job: FineTuneJob, files: dict[int, str]) -> JobObject:
        """`files` maps the job's file row ids to their public ids."""
        error = None
        if job.status.value == "failed":
            error = JobError(
                code=job.error_code or "failed", message=job.error or "the job failed", param=job.error_param
            )
        return cls(
            id=job.public_id,
            created_at=int(job.created_at.timestamp()),
            finished_at=int(job.finished_at.timestamp()) if job.finished_at and job.status.is_final else None,
            model=job.model,
            fine_tuned_model=job.fine_tuned_model,
            status=api_status(job),
            hyperparameters=job.hyperparameters,
            method={"type": "supervised", "supervised": {"hyperparameters": job.hyperparameters}},
            training_file=files[job.training_file_id],
            validation_file=files.get(job.validation_file_id) if job.validation_file_id else None,
            result_files=list(job.result_files or []),
            trained_tokens=job.trained_tokens,
            error=error,
            seed=job.seed,
            metadata=job.meta,
            user_provided_suffix=job.suffix,
            trainer=job.trainer,
            evaluation=job.evaluation or {},
            dataset_id=job.dataset_id,
            snapshot_id=job.snapshot_id,
        )


def api_status(job: FineTuneJob) -> str:
    """OpenAI's status: the queue's, except that a job whose files are not checked yet is validating_files."""
    if job.status.is_final:
        return job.status.value
    return job.status.value if job.files_validated else "validating_files"


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobObject]
    has_more: bool


class EventObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None = None

    @classmethod
    def of(cls, event: FineTuneEvent) -> EventObject:
        return cls(
            id=f"ftevent-{event.id}",
            created_at=int(event.created_at.timestamp()),
            level=event.level,
            message=event.message,
            type=event.type,
            data=event.data,
        )


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EventObject]
    has_more: bool


class CheckpointObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int

    @classmethod
    def of(cls, checkpoint: FineTuneCheckpoint, job: FineTuneJob) -> CheckpointObject:
        model = job.fine_tuned_model or tuned_model_name(job)
        return cls(
            id=f"ftckpt-{checkpoint.id}",
            created_at=int(checkpoint.created_at.timestamp()),
            fine_tuned_model_checkpoint=f"{model}:ckpt-step-{checkpoint.step_number}",
            fine_tuning_job_id=job.public_id,
            metrics=checkpoint.metrics,
            step_number=checkpoint.step_number,
        )


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


def tuned_model_name(job: FineTuneJob) -> str:
    """`ft:BASE:sprout:SUFFIX:ID`, OpenAI's pattern; a BASE with '/' or ':' (a hub id) is made safe."""
    base = job.model.replace("/", "--").replace(":", "-")
    return f"ft:{base}:sprout:{job.suffix or ''}:{job.public_id.removeprefix('ftjob-')}"
