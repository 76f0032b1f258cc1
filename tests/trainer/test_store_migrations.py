"""One schema for both drivers: numbered migrations applied at start, once; a newer database refused."""

import pytest

from tunewire.trainer.config import parse_args
from tunewire.trainer.server import ConfigError, start_trainer
from tunewire.trainer.store import db, migrations
from tunewire.trainer.store.database import open_database


def _versions(database: db.Database) -> list[int]:
    return [r["version"] for r in database.query("SELECT version FROM schema_version ORDER BY 1")]


def test_a_new_database_gets_every_migration_once(database_target):
    database = open_database(database_target)
    assert _versions(database) == list(range(1, len(migrations.MIGRATIONS) + 1))
    database.close()
    database = open_database(database_target)
    assert _versions(database) == list(range(1, len(migrations.MIGRATIONS) + 1))
    tables = {"jobs", "job_events", "checkpoints", "datasets", "dataset_owners"}
    for table in tables:
        row = database.query_one(f"SELECT COUNT(*) AS n FROM {table}")
        assert row is not None and row["n"] == 0
    database.close()


def test_a_database_from_a_newer_tunewire_is_refused(database_target):
    database = open_database(database_target)
    database.execute("INSERT INTO schema_version (version, applied) VALUES (999, 0)")
    database.close()
    with pytest.raises(
        db.DatabaseError, match=r"schema version 999, newer than this tunewire knows \(up to \d+\)"
    ):
        open_database(database_target)


async def test_an_unreachable_database_stops_the_trainer_with_a_clear_error(tmp_path):
    config = parse_args(
        [
            "--home",
            str(tmp_path / "home"),
            "--database",
            "postgresql://tunewire:s3cret@127.0.0.1:1/tunewire?connect_timeout=2",
        ]
    )
    with pytest.raises(ConfigError) as err:
        await start_trainer(config)
    assert "cannot connect to the database postgresql://tunewire:***@127.0.0.1:1/" in str(err.value)
    assert "s3cret" not in str(err.value)


def test_database_flag_and_environment(monkeypatch, capsys):
    monkeypatch.setenv("TUNEWIRE_DATABASE", "postgresql://db.internal/tunewire")
    assert parse_args([]).database == "postgresql://db.internal/tunewire"
    assert parse_args(["--database", "postgresql://other/x"]).database == "postgresql://other/x"
    with pytest.raises(SystemExit):
        parse_args(["--database", "state.db"])
    assert "--database must be a postgresql:// URL" in capsys.readouterr().err
