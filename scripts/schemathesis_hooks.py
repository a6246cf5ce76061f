"""Schemathesis hooks of scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Teaches the generator what the OpenAPI document can only say in prose: the shape of the opaque
delivery page token (`format: delivery-offset`), so that generated offsets are real ones.
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

