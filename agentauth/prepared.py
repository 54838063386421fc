# ruff: noqa: S608 - SQL is assembled from model metadata (table and column names) only; every
# value is a query parameter.
"""Statements the hot paths run on every call, built once per process from the models.

The ORM compiles each query anew: on a call that costs a few milliseconds in all, compiling
four or five statements was the largest share of the CPU (``benchmarks/profile_execute.py``).
The hot paths (``fastpath``, ``fastregister``) instead build their SQL once from the models'
metadata (so renamed columns and tables follow the models), bind values on the server so
PostgreSQL can prepare them, and turn rows into model instances with the fields' own
converters, as the ORM would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from functools import cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, models
from django.db.backends.utils import CursorDebugWrapper
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init

Converter = Callable[[Any, Any, Any], Any]


def column(field: Any) -> str:
    name = getattr(field, "column", None)
    assert isinstance(name, str), field
    return name


class Shape:
    """Columns and converters of one model, in ``concrete_fields`` order."""

    def __init__(self, model: type[models.Model], alias: str) -> None:
        qn = connection.ops.quote_name
        self.model = model
        self.fields = list(model._meta.concrete_fields)
        self.names = [f.attname for f in self.fields]
        self.columns = [f"{alias}.{qn(column(f))}" for f in self.fields]
        self.converters: list[tuple[list[Converter], Any]] = []
        for f in self.fields:
            col = f.get_col(alias)
            convs = connection.ops.get_db_converters(col) + f.get_db_converters(connection)
            self.converters.append((convs, col))

    def build(self, values: tuple[Any, ...] | list[Any]) -> Any:
        """The instance ``Model.from_db`` would make of this row."""
        conn = connections[DEFAULT_DB_ALIAS]  # once, not through the proxy per value
        out = []
        for value, (convs, col) in zip(values, self.converters, strict=True):
            for conv in convs:
                value = conv(value, col, conn)
            out.append(value)
        model = self.model
        if pre_init.has_listeners(model) or post_init.has_listeners(model):
            return model.from_db(conn.alias, self.names, out)
        # What Model.__init__ does with one positional value per concrete field, when no
        # receiver listens to its signals: the attributes and a fresh state (a third of the
        # hot path's model-building CPU).
        obj = model.__new__(model)
        obj._state = ModelState()
        obj._state.adding = False
        obj._state.db = conn.alias
        obj.__dict__.update(zip(self.names, out, strict=True))
        return obj


@cache
def _insert_statement(
    vendor: str, model: type[models.Model], rows: int, returning: bool
) -> tuple[str, tuple[Any, ...], bool]:
    """(SQL, the fields it sets, whether it returns the generated primary keys)."""
    qn = connection.ops.quote_name
    meta = model._meta
    auto = meta.auto_field
    fields = tuple(f for f in meta.concrete_fields if f is not auto)
    marks = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {qn(meta.db_table)} ({', '.join(qn(column(f)) for f in fields)})"
        f" VALUES {', '.join([marks] * rows)}"
    )
    returns = auto is not None and returning
    if returns:
        sql += f" RETURNING {qn(column(auto))}"
    return sql, fields, returns


def insert(objs: Sequence[models.Model]) -> None:
    """``INSERT`` new instances of one model in one statement, as ``save(force_insert=True)``
    or ``bulk_create`` would (``pre_save``: ``auto_now`` fields, then each field's own
    adaptation, no signals); generated primary keys are set on the instances, inside ``batch()``
    when it ends."""
    if not objs:
        return
    model = type(objs[0])
    conn = connections[DEFAULT_DB_ALIAS]  # once, not through the proxy per field
    returning = bool(conn.features.can_return_columns_from_insert)
    sql, fields, returns = _insert_statement(conn.vendor, model, len(objs), returning)
    if model._meta.auto_field is not None and not returns:
        for obj in objs:  # a database that cannot return the new keys
            obj.save(force_insert=True)
        return
    params = [_db_value(f, f.pre_save(obj, True), conn) for obj in objs for f in fields]
    pending = _pending.get()
    c = cursor(own=pending is not None)
    c.execute(sql, params)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = conn.alias
    if pending is not None:
        pending.append((c, objs if returns else ()))
    elif returns:
        _set_keys(c, objs)


#: Fields whose ``get_db_prep_save`` returns a ``str`` value unchanged (exact types: a subclass
#: may adapt).
_PLAIN_TEXT = (models.CharField, models.TextField)


def _db_value(field: Any, value: Any, conn: Any) -> Any:
    """``field.get_db_prep_save(value, conn)``, without its five calls for plain text."""
    if type(value) is str and type(field) in _PLAIN_TEXT:
        return value
    return field.get_db_prep_save(value, conn)


def _set_keys(c: Any, objs: Sequence[models.Model]) -> None:
    for obj, (pk,) in zip(objs, c.fetchall(), strict=True):
        obj.pk = pk


_pending: ContextVar[list[tuple[Any, Sequence[models.Model]]] | None] = ContextVar(
    "agentauth_prepared_batch", default=None
)


@contextmanager
def batch() -> Iterator[None]:
    """Send the writes made inside together: one round trip to PostgreSQL for all of them.

    With psycopg 3, in its pipeline mode: statements are queued and sent at the end, where the
    first error, if any, is raised (as Django's, e.g. ``IntegrityError``). Only ``insert`` and
    ``update`` belong inside: nothing that needs a result before the end. Elsewhere, each
    statement is its own round trip, as without it.
    """
    if connection.vendor != "postgresql" or not psycopg3() or _pending.get() is not None:
        yield
        return
    connection.ensure_connection()
    pending: list[tuple[Any, Sequence[models.Model]]] = []
    token = _pending.set(pending)
    try:
        with connection.wrap_database_errors, connection.connection.pipeline():
            yield
    except BaseException:
        for c, _ in pending:
            c.close()
        raise
    finally:
        _pending.reset(token)
    for c, objs in pending:
        with c:
            if objs:
                _set_keys(c, objs)


def execute(sql: str, params: Sequence[Any]) -> Any:
    """Run one statement on ``cursor()``; the cursor, to fetch its rows from."""
    c = cursor()
    c.execute(sql, params)
    return c


@cache
def _update_statement(
    vendor: str, model: type[models.Model], names: tuple[str, ...]
) -> tuple[str, tuple[Any, ...]]:
    qn = connection.ops.quote_name
    meta = model._meta
    fields = tuple(meta.get_field(name) for name in names)
    sets = ", ".join(f"{qn(column(f))} = %s" for f in fields)
    return f"UPDATE {qn(meta.db_table)} SET {sets} WHERE {qn(column(meta.pk))} = %s", fields


def update(obj: models.Model, *names: str) -> None:
    """Write these fields of a saved instance, as ``Model.objects.filter(pk=...).update(...)``
    would (no ``auto_now``, no signals)."""
    conn = connections[DEFAULT_DB_ALIAS]
    sql, fields = _update_statement(conn.vendor, type(obj), names)
    params = [_db_value(f, getattr(obj, f.attname), conn) for f in fields]
    pending = _pending.get()
    c = cursor(own=pending is not None)
    c.execute(sql, [*params, obj.pk])
    if pending is not None:
        pending.append((c, ()))


def cursor(*, own: bool = False) -> Any:
    """A cursor for statements that run on every call with only the values changing.

    On PostgreSQL with psycopg 3, one that binds values on the server, so that psycopg can
    prepare them: with ``OPTIONS["prepare_threshold"]`` set on the database (Django leaves
    prepared statements off, for connection poolers in transaction mode), each is prepared once
    it has run that many times on the connection. Planning the execute path's main statement
    costs PostgreSQL more than running it: measured, prepared statements halve PostgreSQL's CPU
    per execute (docs/deployment.md). Django's own cursors keep binding on the client (unless
    the project sets ``server_side_binding``), so nothing else of the project changes. The
    cursor is wrapped as Django wraps its own: ``execute_wrappers`` and the query log see these
    statements.

    One such cursor is kept per connection and reused (making one is a visible share of a hot
    path's CPU); callers do not close it. ``own=True``: a new one, for the caller to close
    (``batch()`` keeps several with results pending).
    """
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql" or not psycopg3():
        return conn.cursor()
    conn.ensure_connection()
    if conn.queries_logged:
        return _DebugCursor(_server_binding(conn.connection), conn)
    if own:
        return conn.make_cursor(_server_binding(conn.connection))
    kept = getattr(conn, "_agentauth_cursor", None)
    if kept is None or kept.closed or kept.connection is not conn.connection:
        kept = conn._agentauth_cursor = _server_binding(conn.connection)  # type: ignore[attr-defined]
    return conn.make_cursor(kept)


def _server_binding(raw: Any) -> Any:
    from django.db.backends.postgresql import base as postgresql

    server_binding: Any = postgresql.ServerBindingCursor  # the stubs lack its signature
    return server_binding(raw)


class _DebugCursor(CursorDebugWrapper):
    """Django's debug cursor, writing the statement out itself: psycopg keeps no query text
    when it runs a prepared statement, where Django's query log would look for it."""

    @contextmanager
    def debug_sql(
        self,
        sql: str | None = None,
        params: Any = None,
        use_last_executed_query: bool = False,
        many: bool = False,
    ) -> Iterator[None]:
        if use_last_executed_query and sql is not None and not many:
            with suppress(DatabaseError):
                sql = self.db.ops.compose_sql(sql, params)
        with super().debug_sql(sql, params, use_last_executed_query=False, many=many):
            yield


@cache
def psycopg3() -> bool:
    # Imported here: a project on SQLite need not have a PostgreSQL driver installed.
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)
