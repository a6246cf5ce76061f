"""Schemathesis hooks of scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Teaches the generator what the OpenAPI document can only say in prose: the shape of the opaque
delivery page token (`format: delivery-offset`), so that generated offsets are real ones, and the
"`unique` names among `fields`" rule of custom events, and the custom events a run registers.
"""

import base64
import json
import os
import urllib.request

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



def _names(value):
    """`fields` or `unique` as a list of names: a form sends one name as a string, `""` as none."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return value if isinstance(value, list) else None


@schemathesis.hook("filter_body")
def unique_names_only_fields(context, body):
    """Drops custom events whose non-empty `unique` names only their `fields`.

    The document admits only an empty `unique`, as JSON Schema cannot say "names among `fields`";
    a generated "invalid" body that happens to satisfy the real rule would be accepted, rightly.
    """
    operation = context.operation
    if operation is None or operation.method.upper() != "PUT":
        return True
    if not operation.path.startswith("/event-hooks/sources/") or not isinstance(body, dict):
        return True
    fields, unique = _names(body.get("fields")), _names(body.get("unique"))
    if fields is None or unique is None or not unique:
        return True
    return not all(name in fields for name in unique)


def _catalogue():
    """Source → event names, as the server under test lists them now."""
    url = os.environ["CONFORMANCE_BASE_URL"] + "/event-hooks/sources"
    with urllib.request.urlopen(url, timeout=10) as response:
        data = json.load(response)["data"]
    return {source: set(events) for source, events in data.items()}


# Read when schemathesis loads this module: the server is fresh, so these are the built-in events.
_BUILTIN = _catalogue() if "CONFORMANCE_BASE_URL" in os.environ else {}


@schemathesis.hook("filter_body")
def events_registered_during_the_run(context, body):
    """Drops events of custom pairs that a generated `PUT /event-hooks/sources/…` registered.

    The document lists the built-in pairs; custom pairs are accepted too (documented in prose), so
    a generated "unregistered" pair that the run itself registered would be accepted, rightly.
    """
    operation = context.operation
    if operation is None or operation.method.upper() != "POST" or operation.path != "/events":
        return True
    if not isinstance(body, dict):
        return True
    source, event = body.get("source"), body.get("event")
    if not isinstance(source, str) or not isinstance(event, str):
        return True
    if event in _BUILTIN.get(source, ()):
        return True
    return event not in _catalogue().get(source, set())


def _seconds(value):
    """A replay bound as sent: an integer, or digits in a form; `None` when absent or `""`."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


@schemathesis.hook("filter_body")
def replay_windows_in_order(context, body):
    """Drops replay bodies whose `since` is after `until` (or after now when `until` is absent).

    The server refuses them (400, documented); JSON Schema cannot relate two fields.
    """
    import time

    operation = context.operation
    if operation is None or not operation.path.endswith("/deliveries/replay"):
        return True
    if not isinstance(body, dict):
        return True
    since, until = _seconds(body.get("since")), _seconds(body.get("until"))
    if until is not None and until <= 86_400:
        # The default `since` (a day before `until`) would be before the epoch.
        return False
    if since is None:
        return True
    return since <= (until if until is not None else int(time.time()))
