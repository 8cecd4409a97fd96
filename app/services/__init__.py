"""Services: the use cases, between the edges (web, workers, DHCP, CLI) and the domain.

Services read and write through the session but never commit; the edge that called them
commits through `uow.unit_of_work()`, which also appends the ledger rows and hands new jobs
to the dispatcher after the commit (outbox).
"""
