"""Jobs a step parks stay out of the session until the unit of work (or a caller that needs
their ids now, such as a process migration) flushes them: then they have ids and go out."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from app.engine import runtime
from app.extensions import db
from app.models import ProcessInstance, ServiceJob
from app.services import definitions, instances, uow


def test_flush_new_jobs_gives_parked_jobs_ids_and_enqueues_them(app: Flask) -> None:
    with app.app_context():
        definition = definitions.active()
        instance = ProcessInstance(definition_id=definition.id, definition=definition,
                                   state="running", request={}, workflow="")
        db.session.add(instance)
        db.session.flush()
        workflow, report = runtime.start(
            definitions.spec_by_id(definition.id),
            {"lease_request": {"subnet": "10.1.0.0/24", "client_id": "c", "hostname": None,
                               "owner": None, "hwaddr": None, "requested_ip": None,
                               "instance_id": instance.id}})
        assert [job.operation for job in report.parked] == ["ipam.reserve"]

        instances.persist_step(instance, workflow, report)
        pending = uow.pending()
        assert pending.jobs == [] and len(pending.new_jobs) == 1
        instances.flush_new_jobs(pending)

        stored = db.session.execute(select(ServiceJob.id, ServiceJob.operation).where(
            ServiceJob.instance_id == instance.id)).all()
        assert [operation for _, operation in stored] == ["ipam.reserve"]
        assert pending.jobs == [stored[0].id] and pending.new_jobs == []
        db.session.rollback()
