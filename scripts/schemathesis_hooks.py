"""Schemathesis hooks of scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

They teach the generator what the OpenAPI document can only say in prose: the shape of the
opaque delivery page token (`format: delivery-offset`).
"""

import base64

import schemathesis
from hypothesis import strategies as st


def _delivery_offset(created_at: int, delivery_id) -> str:
    # DeliveryPageToken::encode: base64url (no padding) of `<created_at, 13 digits>#<uuid>`.
    key = f"{created_at:013d}#{delivery_id}"
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


schemathesis.openapi.format(
    "delivery-offset",
    st.builds(_delivery_offset, st.integers(0, 9_999_999_999_999), st.uuids()),
)


@schemathesis.hook
def filter_body(context, body):
    """A custom event's `unique` must name some of its `fields` (documented in prose)."""
    operation = context.operation
    if operation is None or operation.method.upper() != "PUT" or not operation.path.startswith("/event-hooks/sources/"):
        return True
    if not isinstance(body, dict):
        return True
    fields, unique = body.get("fields"), body.get("unique")
    as_list = lambda v: [] if v in (None, "") else ([v] if isinstance(v, str) else v)
    if not isinstance(as_list(fields), list) or not isinstance(as_list(unique), list):
        return True
    return all(name in as_list(fields) for name in as_list(unique))
