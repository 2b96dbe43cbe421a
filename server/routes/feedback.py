"""`/v1/feedback`: a person's verdict on an answer, posted as a score on the turn's trace.

The turn is named by its trace id or its run id (the same value: a traced turn's trace id is
its run id), and only the tenant that asked may rate it.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from server import schemas
from server.deps import Caller, State
from server.errors import ApiError

router = APIRouter(tags=["feedback"])

FEEDBACK_SCORE = "user_feedback"


@router.post(
    "/v1/feedback",
    summary="Rate an answer: thumbs or a number, with a comment, on the turn's Langfuse trace",
    response_model=schemas.FeedbackResponse,
    responses={
        404: {"model": schemas.ErrorResponse},
        409: {"model": schemas.ErrorResponse},
        422: {"model": schemas.ErrorResponse},
    },
)
async def post_feedback(
    body: schemas.FeedbackRequest, state: State, caller: Caller
) -> schemas.FeedbackResponse:
    tracing = state.services.tracing
    if not tracing.enabled:
        raise ApiError(
            409,
            "tracing_off",
            "Feedback is recorded on turns' Langfuse traces, and tracing is off: set "
            "LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_BASE_URL.",
        )
    trace_id = body.trace_id or body.run_id
    assert trace_id is not None  # the request model requires one of them
    if await state.persistence.threads.trace_thread(trace_id, caller.owner) is None:
        raise ApiError(
            404, "trace_not_found", f"No traced turn {trace_id!r} (it may not have been traced)."
        )
    data_type: Literal["NUMERIC", "BOOLEAN"] = "NUMERIC"
    if body.thumbs is not None:
        value, data_type = (1.0 if body.thumbs == "up" else 0.0), "BOOLEAN"
    else:
        assert body.score is not None
        value = body.score
    tracing.score(
        trace_id,
        name=body.name or FEEDBACK_SCORE,
        value=value,
        data_type=data_type,
        comment=body.comment,
    )
    return schemas.FeedbackResponse(
        trace_id=trace_id, name=body.name or FEEDBACK_SCORE, value=value, url=tracing.url(trace_id)
    )
