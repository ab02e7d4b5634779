"""All database access, behind one object with intent-named methods.

Every task state change is a compare-and-set (``UPDATE ... WHERE state IN (...) AND attempt = ?``)
made by :meth:`Store._move`, which also writes the event log. Nothing outside this package
builds a query. Each concern's methods live in their own module; :class:`Store` is all of them.
"""

from __future__ import annotations

from cw.store.attempts import Attempts
from cw.store.dispatch import Dispatching
from cw.store.merges import Merges
from cw.store.messages import Messages
from cw.store.operator import OperatorActions
from cw.store.queries import Queries
from cw.store.recovery import Recovery
from cw.store.review import Reviews
from cw.store.selects import Listings
from cw.store.submit import Submitting


class Store(
    Submitting,
    Dispatching,
    Attempts,
    Merges,
    Messages,
    OperatorActions,
    Reviews,
    Recovery,
    Queries,
    Listings,
):
    """The district's database. Create one per process with :meth:`open`."""
