"""``agentauth.prepared``: what the hot paths build and write is what the ORM would."""

from __future__ import annotations

from typing import Any

import pytest
from django.db.models.signals import post_init

from agentauth import keys, prepared
from agentauth.errors import ProtocolError
from agentauth.models import Agent, AuditEvent, Host
from agentauth.testing import make_agent, make_host

pytestmark = pytest.mark.django_db


def row_of(obj: Any) -> list[Any]:
    from django.db import connection

    shape = prepared.Shape(type(obj), "t")
    table = connection.ops.quote_name(type(obj)._meta.db_table)
    pk = connection.ops.quote_name(type(obj)._meta.pk.column)
    with connection.cursor() as cursor:
        sql = f"SELECT {', '.join(shape.columns)} FROM {table} t WHERE t.{pk} = %s"
        cursor.execute(sql, [obj.pk])
        return list(cursor.fetchone())


def test_a_built_instance_is_the_orm_s(user: Any) -> None:
    host, _ = make_host(user=user)
    agent, _ = make_agent(host, grants=["check_balance"])
    for model, obj in ((Agent, agent), (Host, host)):
        built = prepared.Shape(model, "t").build(row_of(obj))
        fetched = model.objects.get(pk=obj.pk)
        assert type(built) is model
        assert {f.attname: getattr(built, f.attname) for f in model._meta.concrete_fields} == {
            f.attname: getattr(fetched, f.attname) for f in model._meta.concrete_fields
        }
        assert (built._state.adding, built._state.db) == (False, fetched._state.db)
        built.save()  # an update, not an insert: its state says it came from the database
        assert model.objects.filter(pk=obj.pk).count() == 1


def test_post_init_receivers_still_see_built_instances(user: Any) -> None:
    host, _ = make_host(user=user)
    agent, _ = make_agent(host)
    seen: list[Any] = []

    def receiver(sender: Any, instance: Any, **kwargs: Any) -> None:
        seen.append(instance)

    post_init.connect(receiver, sender=Agent)
    try:
        built = prepared.Shape(Agent, "t").build(row_of(agent))
    finally:
        post_init.disconnect(receiver, sender=Agent)
    assert seen == [built]


def test_insert_sets_generated_keys_and_adapts_values() -> None:
    events = [
        AuditEvent(kind="test.one", actor_type="system", data={"n": 1}),
        AuditEvent(kind="test.two", actor_type="system", data={"n": [2]}),
    ]
    prepared.insert(events)
    assert all(e.pk is not None and not e._state.adding for e in events)
    stored = {e.pk: (e.kind, e.data) for e in AuditEvent.objects.filter(kind__startswith="test.")}
    assert stored == {events[0].pk: ("test.one", {"n": 1}), events[1].pk: ("test.two", {"n": [2]})}


def test_key_cache_never_serves_a_refused_key() -> None:
    from agentauth.testing import Keypair

    jwk = dict(Keypair.generate().public_jwk)
    assert keys.public_key_from_jwk(jwk) is keys.public_key_from_jwk(dict(jwk))
    with pytest.raises(ProtocolError):  # the same x with private material is still refused
        keys.public_key_from_jwk({**jwk, "d": jwk["x"]})
    with pytest.raises(ProtocolError):
        keys.public_key_from_jwk({**jwk, "crv": "X25519"})
