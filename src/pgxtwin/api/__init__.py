"""The twin service (FastAPI): REST, FHIR R4 and CDS Hooks 2.0 over the twin store."""
