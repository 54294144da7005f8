"""The annotation session as an explicit state machine.

    DISCONNECTED --connect--> CONNECTED --load_case--> CASE_LOADED --segmented--> SEGMENTED
    SEGMENTED/CASE_LOADED --edited--> EDITED --submitted--> SUBMITTED --load_case--> CASE_LOADED ...

Every transition names the states it may start from; anything else raises ``IllegalTransition`` with
what the user has to do first. Leaving a case with unsubmitted edits needs ``discard_edits=True`` (the
Widget asks the user). At most one background job (download, inference, upload) runs per session;
``job`` says what it is, so the UI can show it and offer to cancel it.

The Segment Editor stays usable while a job runs, so the session counts edits (``edits``): a job's
result passes the count it started from (``edits_seen``), and edits made after it are never discarded
by that result, nor marked submitted by an upload that did not contain them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class State(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTED = "connected"
    CASE_LOADED = "case loaded"
    SEGMENTED = "segmented"
    EDITED = "edited"
    SUBMITTED = "submitted"


class IllegalTransition(RuntimeError):
    """An action the session's current state does not allow."""


class SessionBusy(RuntimeError):
    """A background job is already running for this session."""


S = State
# action -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[State], State]] = {
    "connect": (frozenset(State), S.CONNECTED),
    "load_case": (frozenset({S.CONNECTED, S.CASE_LOADED, S.SEGMENTED, S.SUBMITTED}), S.CASE_LOADED),
    "segmented": (frozenset({S.CASE_LOADED, S.SEGMENTED, S.SUBMITTED}), S.SEGMENTED),
    "edited": (frozenset({S.CASE_LOADED, S.SEGMENTED, S.EDITED, S.SUBMITTED}), S.EDITED),
    "submitted": (frozenset({S.SEGMENTED, S.EDITED}), S.SUBMITTED),
    "disconnect": (frozenset(State), S.DISCONNECTED),
}
# Actions that leave the case's edits behind: from EDITED only with the user's consent.
LEAVES_EDITS = ("connect", "load_case", "segmented")
# What to do first, per target action, when the current state does not allow it.
HINTS = {
    "load_case": "connect to a server first",
    "segmented": "load a case first",
    "edited": "load a case first",
    "submitted": "segment or edit the case first",
}


@dataclass
class BackgroundJob:
    kind: str  # "next case", "segment", "submit", ...
    handle: Any  # the jobs.Job (anything with the runner's cancel), kept to cancel it


class AnnotationSession:
    def __init__(self) -> None:
        self.state = State.DISCONNECTED
        self.server_url: str | None = None
        self.image_id: str | None = None
        self.model_version: str | None = None
        self.job: BackgroundJob | None = None
        self.edits = 0  # edits so far (every change of the case's segmentation by the user)

    # -- transitions ---------------------------------------------------------------------------
    def _go(self, action: str, discard_edits: bool = False, edits_seen: int | None = None) -> None:
        allowed, target = TRANSITIONS[action]
        verb = action.replace("_", " ")
        if self.state is State.EDITED and action in LEAVES_EDITS:
            if not discard_edits:
                raise IllegalTransition(f"Cannot {verb}: the edits of {self.image_id} are not submitted (submit "
                                        "them, or discard them explicitly)")
            if edits_seen is not None and edits_seen != self.edits:
                raise IllegalTransition(f"Cannot {verb}: {self.image_id} was edited while this ran; the edits are "
                                        "kept (submit them, or try again and discard them)")
            allowed = allowed | {State.EDITED}
        if self.state not in allowed:
            raise IllegalTransition(f"Cannot {verb} while {self.state.value}: {HINTS.get(action, 'not allowed now')}")
        self.state = target

    def connect(self, server_url: str, model_version: str | None = None, discard_edits: bool = False,
                edits_seen: int | None = None) -> None:
        if server_url == self.server_url and self.image_id is not None:
            self.model_version = model_version  # the same server again (e.g. after it was unreachable): the case,
            return  # its image id and its unsubmitted edits stay
        self._go("connect", discard_edits, edits_seen)
        self.server_url, self.model_version, self.image_id = server_url, model_version, None

    def disconnect(self) -> None:
        self._go("disconnect")
        self.server_url = self.image_id = None

    def load_case(self, image_id: str, discard_edits: bool = False, edits_seen: int | None = None) -> None:
        self._go("load_case", discard_edits, edits_seen)
        self.image_id = image_id

    def segmented(self, model_version: str | None = None, discard_edits: bool = False,
                  edits_seen: int | None = None) -> None:
        self._go("segmented", discard_edits, edits_seen)
        self.model_version = model_version or self.model_version

    def edited(self) -> bool:
        """Counts one edit; True when it is the one that made the case EDITED (worth showing once)."""
        was_edited = self.state is State.EDITED
        self._go("edited")
        self.edits += 1
        return not was_edited

    def submitted(self, edits_seen: int | None = None) -> bool:
        """The label of the case as it was at ``edits_seen`` edits is stored. False, and the case stays
        EDITED, when it was edited after that (those edits are not on the server yet)."""
        self._go("submitted")
        if edits_seen is not None and edits_seen != self.edits:
            self.state = State.EDITED
            return False
        return True

    def can(self, action: str) -> bool:
        return self.state in TRANSITIONS[action][0]

    # -- the background job --------------------------------------------------------------------
    def begin_job(self, kind: str, handle: Any) -> None:
        if self.job is not None:
            raise SessionBusy(f"Wait for '{self.job.kind}' to finish, or cancel it, before starting '{kind}'")
        self.job = BackgroundJob(kind, handle)

    def end_job(self) -> None:
        self.job = None
