"""The PostgreSQL store under a least-privilege role.

Every open ran ``CREATE SCHEMA IF NOT EXISTS`` (which needs CREATE on the database even
when the schema exists) and every ``CREATE TABLE/INDEX IF NOT EXISTS`` (CREATE on the
schema, or the table's ownership), so a role that owns only its schema, or has only DML
rights on tables an admin made, could not open the store at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from edgewise.errors import StoreError
from edgewise.telemetry import Reading

pytestmark = pytest.mark.postgres
psycopg = pytest.importorskip("psycopg")

T0 = 1_700_000_000 * 10**9


def _as(url: str, role: str, schema: str) -> str:
    """``url`` logging in as ``role`` (trust auth), on ``schema``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{role}@{host}", parts.path, f"schema={schema}", ""))


@pytest.fixture
def admin(postgres_url: str) -> Iterator[Callable[[str], None]]:
    """Run SQL as the test server's admin; the roles and schemas named ``ew_lp_*`` that the
    test made are dropped afterwards."""
    made_roles: list[str] = []
    made_schemas: list[str] = []

    def run(sql: str) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute(sql)

    run.roles = made_roles  # type: ignore[attr-defined]
    run.schemas = made_schemas  # type: ignore[attr-defined]
    yield run
    with psycopg.connect(postgres_url, autocommit=True) as con:
        for schema in made_schemas:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for role in made_roles:
            con.execute(f'DROP OWNED BY "{role}" CASCADE')
            con.execute(f'DROP ROLE IF EXISTS "{role}"')


def _names(admin: Callable[[str], None]) -> tuple[str, str]:
    """A new login role (no rights but the defaults) and a schema name, both unique."""
    tag = uuid.uuid4().hex[:10]
    role, schema = f"ew_lp_role_{tag}", f"ew_lp_{tag}"
    admin.roles.append(role)  # type: ignore[attr-defined]
    admin.schemas.append(schema)  # type: ignore[attr-defined]
    admin(f'CREATE ROLE "{role}" LOGIN')
    return role, schema


def _use(url: str) -> None:
    """Open the store at ``url``, write, read and delete through it."""
    from edgewise.store.postgres import PostgresStore

    st = PostgresStore(url)
    try:
        res = st.append([Reading("pump-1", "t", T0 + i, float(i), i + 1) for i in range(3)],
                        {"pump-1": range(1, 4)})
        assert res.stored == 3 and st.seq_watermark("pump-1") == 3
        assert [v for _, _, v in st.query("pump-1")] == [0.0, 1.0, 2.0]
        assert st.delete_device("pump-1") >= 3
    finally:
        st.close()


def test_a_role_with_only_dml_on_an_admins_tables_opens_the_store(
        postgres_url: str, admin: Callable[[str], None]) -> None:
    """Check a role without CREATE on the database or the schema, with SELECT, INSERT,
    UPDATE, DELETE on the tables an admin's first open made, opens and uses the store."""
    from edgewise.store.postgres import PostgresStore

    role, schema = _names(admin)
    sep = "&" if "?" in postgres_url else "?"
    PostgresStore(f"{postgres_url}{sep}schema={schema}").close()  # the admin sets it up
    admin(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"; '
          f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" '
          f'TO "{role}"')
    _use(_as(postgres_url, role, schema))


def test_a_role_that_owns_only_its_schema_sets_the_store_up(
        postgres_url: str, admin: Callable[[str], None]) -> None:
    """Check a role that owns its (empty) schema and has no CREATE on the database makes
    the store's tables there at the first open, and opens it again."""
    role, schema = _names(admin)
    admin(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{role}"')
    url = _as(postgres_url, role, schema)
    _use(url)
    _use(url)


def test_refused_ddl_names_the_statement_and_the_privilege(
        postgres_url: str, admin: Callable[[str], None]) -> None:
    """Check a missing schema the role may not create, and tables it may not create in a
    schema it may only use, fail with what is missing, the privilege and what to run."""
    from edgewise.store.postgres import PostgresStore

    role, schema = _names(admin)
    with pytest.raises(StoreError) as err:
        PostgresStore(_as(postgres_url, role, schema))
    msg = str(err.value)
    db = urlsplit(postgres_url).path.lstrip("/")
    assert f"schema {schema!r} does not exist" in msg, msg
    assert f"CREATE on database {db!r}" in msg, msg
    assert f'CREATE SCHEMA "{schema}" AUTHORIZATION "{role}"' in msg, msg

    admin(f'CREATE SCHEMA "{schema}"; GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
    with pytest.raises(StoreError) as err:
        PostgresStore(_as(postgres_url, role, schema))
    msg = str(err.value)
    assert f"role {role!r} needs CREATE on schema {schema!r} to create table 'ew_meta'" in msg, \
        msg
    assert "Set the store up once as an admin" in msg, msg
