"""``stream registry start --persistent``: schemas survive a restart of the local registry.

A real Apicurio Registry (no Kafka broker involved) started from the command line with
``--persistent`` keeps its H2 database in ``registry-PORT/storage/``; after ``stop`` and
another ``start --persistent`` the schema registered before is served under the same id
and subject version. The distribution comes from the shared ``$STREAM_HOME`` cache (the
test's own home links to it), so nothing is downloaded per test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from stream import registry
from stream.cli import main as stream_main
from stream.localjvm.ports import free_port_pair
from tests.conftest import unique_name

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Kept",
        "namespace": "test",
        "fields": [{"name": "id", "type": "string"}, {"name": "n", "type": "long"}],
    }
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state directory of its own whose distribution is the shared, already-fetched one."""
    monkeypatch.delenv(registry.URL_ENV, raising=False)
    shared = registry.ensure_distribution().parent  # <$STREAM_HOME>/apicurio-registry-<v>
    own = tmp_path / "home"
    own.mkdir()
    (own / shared.name).symlink_to(shared, target_is_directory=True)
    yield own


def cli(*argv: str) -> int:
    return stream_main(["registry", *argv])


def test_persistent_registry_serves_the_same_schema_by_id_after_a_restart(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = str(free_port_pair())
    where = ["--port", port, "--home", str(home)]
    try:
        assert cli("start", *where, "--persistent") == 0
        started = capsys.readouterr().out
        storage = home / f"registry-{port}" / "storage" / "registry"
        assert f"storage:  h2:{storage}" in started
        url = registry.local_url(int(port))

        subject = unique_name("kept") + "-value"
        schema_id = SchemaRegistryClient({"url": url}).register_schema(
            subject, Schema(SCHEMA, "AVRO")
        )
        assert list(storage.parent.glob("registry*.db")), "the H2 file is on disk"

        # Asking for in-memory storage from a persistent registry is refused, not ignored.
        with pytest.raises(registry.RegistryError, match="stop it first"):
            registry.start(int(port), home, persistent=False)

        assert cli("stop", *where) == 0
        assert cli("status", *where) == 3
        assert cli("start", *where, "--persistent") == 0
        assert "started at" in capsys.readouterr().out

        fresh = SchemaRegistryClient({"url": url})  # no client-side cache
        kept = fresh.get_schema(schema_id)
        assert json.loads(kept.schema_str) == json.loads(SCHEMA)
        latest = fresh.get_latest_version(subject)
        assert (latest.schema_id, latest.version) == (schema_id, 1)
        assert cli("status", *where) == 0
        assert f"storage:   h2:{storage}" in capsys.readouterr().out
    finally:
        registry.stop(int(port), home)
