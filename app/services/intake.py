"""Group commit for lease requests: many concurrent API requests, one transaction.

Request threads hand their validated body to the intake and wait for the instance id; the
intake's `GroupCommit` starts every waiting request's instance in a single unit of work. A
request that fails its own checks gets its own error; a failure of the group's commit fails
every request of the group (none of them is stored), and the caller answers as it would for
its own transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flask import Flask

from ..errors import LeaseflowError
from .group import GroupCommit

Item = tuple[Mapping[str, Any], str]  # (request body, actor)


def _start_group(items: Sequence[Item]) -> list[int | LeaseflowError]:
    from . import instances

    return instances.start_leases(list(items))


class Intake:
    def __init__(self, app: Flask, *, max_group: int = 64, window: float = 0.002) -> None:
        self._group: GroupCommit[Item, int] = GroupCommit(
            app, _start_group, name="intake", max_group=max_group, window=window)

    def submit(self, body: Mapping[str, Any], actor: str, timeout: float = 60.0) -> int:
        return self._group.submit((body, actor), timeout=timeout)

    def close(self) -> None:
        self._group.close()
