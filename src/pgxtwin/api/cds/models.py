"""CDS Hooks 2.0 request and response bodies (pydantic), as the specification defines them.

Source: CDS Hooks 2.0 (HL7 STU2, https://cds-hooks.hl7.org/2.0/): "Calling a CDS Service"
(request), "CDS Service Response" (cards, suggestions, actions, source, links), "Discovery" and
"Feedback".  Requests are lenient where the specification allows extensions (unknown fields
kept); hook contexts are checked per hook in :mod:`.hooks`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

# FHIR resource id: [A-Za-z0-9\-\.]{1,64} (the twin's patient id follows the same rule)
FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"


class _Open(BaseModel):
    """Client-sent objects: extensions and fields of later versions are allowed."""

    model_config = ConfigDict(extra="allow")


class _Ours(BaseModel):
    """What this service sends: exactly the fields of the specification."""

    model_config = ConfigDict(extra="forbid")


# --- request


class FhirAuthorization(_Open):
    """``fhirAuthorization``: an OAuth 2.0 bearer token for the client's FHIR server."""

    access_token: str = Field(min_length=1)
    token_type: str = "Bearer"
    expires_in: int | None = None
    scope: str | None = None
    subject: str | None = None
    patient: str | None = None


class CdsRequest(_Open):
    """The body POSTed to a CDS Service."""

    hook: str = Field(min_length=1)
    hookInstance: str = Field(min_length=1)
    fhirServer: str | None = Field(None, pattern=r"^https?://", max_length=2048)
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _server_with_token(self) -> CdsRequest:
        # cds-r-1: if fhirAuthorization details are provided, a fhirServer SHALL be specified
        if self.fhirAuthorization is not None and self.fhirServer is None:
            raise ValueError("fhirAuthorization is given without fhirServer")
        return self


class PatientContext(_Open):
    """The context fields every hook of this service carries (patient-view)."""

    patientId: str = Field(pattern=FHIR_ID)
    userId: str | None = None
    encounterId: str | None = None


class OrderSignContext(PatientContext):
    """order-sign: the orders about to be signed (a FHIR Bundle)."""

    draftOrders: dict[str, Any]

    @model_validator(mode="after")
    def _bundle(self) -> OrderSignContext:
        if self.draftOrders.get("resourceType") != "Bundle":
            raise ValueError("draftOrders must be a FHIR Bundle")
        return self


class OrderSelectContext(OrderSignContext):
    """order-select: the draft orders and the references of those just selected."""

    selections: list[str] = Field(min_length=1)


# --- response


class Coding(_Ours):
    code: str
    system: str | None = None
    display: str | None = None


class OverrideReason(_Ours):
    """An override reason offered on a card: ``display`` is required there."""

    code: str
    system: str
    display: str


class Source(_Ours):
    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(_Ours):
    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resourceId: str | None = None


class Suggestion(_Ours):
    label: str
    uuid: str | None = None
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(_Ours):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Card(_Ours):
    uuid: str | None = None
    summary: str = Field(max_length=139)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[OverrideReason] | None = None
    links: list[Link] | None = None

    @model_validator(mode="after")
    def _selection(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required with suggestions")
        return self


class CdsResponse(_Ours):
    cards: list[Card]


# --- discovery


class ServiceDefinition(_Ours):
    hook: str
    title: str | None = None
    description: str
    id: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class Discovery(_Ours):
    services: list[ServiceDefinition]


# --- feedback


class AcceptedSuggestion(_Open):
    id: str = Field(min_length=1)


class FeedbackOverrideReason(_Open):
    reason: dict[str, Any] | None = None
    userComment: str | None = Field(None, max_length=4000)


class FeedbackItem(_Open):
    card: str = Field(min_length=1, max_length=100)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: FeedbackOverrideReason | None = None
    outcomeTimestamp: AwareDatetime

    @model_validator(mode="after")
    def _accepted(self) -> FeedbackItem:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("acceptedSuggestions is required for an accepted outcome")
        return self


class Feedback(_Open):
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=1000)


class FeedbackReceipt(_Ours):
    stored: int = Field(description="feedback items stored now")
    duplicates: int = Field(description="items already stored before (a retried POST)")


class CdsError(_Ours):
    error: str
