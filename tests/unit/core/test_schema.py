"""The migrations build the schema the models describe: a column or index changed in one
and not the other fails here, not on a user's database."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.extensions import db
from lf_support import make_app


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.integration)])
def test_the_migrations_build_what_the_models_describe(tmp_path: Path, dialect: str,
                                                       request: pytest.FixtureRequest):
    overrides = {} if dialect == "sqlite" else \
        {"database_url": request.getfixturevalue("pg_database")}
    app = make_app(tmp_path, **overrides)
    with app.app_context(), db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
        db.engine.dispose()
    assert differences == []
