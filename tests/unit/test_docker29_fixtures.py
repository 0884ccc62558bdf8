"""Docker 29 (API 1.55; dockerd 29.7.2 built by hand from moby's source: see
tests/fixtures/docker/starting/README.md), against
bodies captured from it (tests/fixtures/docker/starting/sid-29.7.2/): from API 1.52 on, events
carry no `status`, `id` and `from`, and inspect has no top-level
NetworkSettings.GlobalIPv6Address. v6gen reads neither: events by Type/Action/Actor, addresses
from the listing's per-network fields. The fixtures' other shapes (connect before start,
addresses while starting) are test_instant.py's, which runs on every captured release."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from v6gen import discover
from v6gen.instant import steps

DIR = Path(__file__).resolve().parents[1] / "fixtures/docker/starting/sid-29.7.2"
OLDER = Path(__file__).resolve().parents[1] / "fixtures/docker/starting/sid-28.5.2+dfsg4"
STATIC = "2001:db8::e:10"
LEGACY_EVENT_FIELDS = {"status", "id", "from"}


def events(directory: Path) -> list[dict[str, Any]]:
    lines = (directory / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def body(name: str) -> Any:
    return json.loads((DIR / name).read_text())


def test_events_have_no_legacy_fields_and_still_come_to_what_happened() -> None:
    evs = events(DIR)
    assert evs and not any(LEGACY_EVENT_FIELDS & set(e) for e in evs)
    # 28.5's container events still had them: the difference is the API's, not the capture's.
    assert any(set(e) >= LEGACY_EVENT_FIELDS for e in events(OLDER))
    static = next(
        e["Actor"]["ID"]
        for e in evs
        if e["Action"] == "start" and e["Actor"]["Attributes"]["name"] == "web"
    )
    connects = [e for e in evs if e["Action"] == "connect"]
    first_start = next(i for i, e in enumerate(evs) if e["Action"] == "start")
    up = steps(evs[: first_start + 1])[static]
    assert not up.gone and up.network == (connects[0]["Actor"]["ID"], "cap")
    assert steps(evs)[static].gone


def test_inspect_lacks_the_top_level_address_the_listing_has_per_network() -> None:
    inspect = body("static_container-start_inspect.json")
    assert "GlobalIPv6Address" not in inspect["NetworkSettings"]
    assert inspect["NetworkSettings"]["Networks"]["cap"]["GlobalIPv6Address"] == STATIC
    listed = body("static_container-start_list.json")
    found = discover.endpoints_from_list(listed)
    assert [(e.container, e.network, e.address) for e in found] == [("web", "cap", STATIC)]
    (only,) = listed
    assert [e.address for e in discover.starting_endpoints(only)] == [STATIC]
