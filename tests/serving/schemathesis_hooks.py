"""Schemathesis hooks for tests/serving/test_schema.py (loaded with SCHEMATHESIS_HOOKS): one extra check."""

import schemathesis


@schemathesis.check
def unreadable_text_is_the_only_refusal_of_valid_data(ctx, response, case):
    """Valid by the schema yet 422: only for the one rule a schema cannot state (the model's vocabulary)."""
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive and response.status_code == 422:
        detail = response.json()["detail"]
        if "once normalised and tokenised" not in detail:
            raise AssertionError(f"valid by the schema, yet refused: {detail}")
