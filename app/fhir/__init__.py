"""FHIR R4 mapping and FHIR REST endpoints."""
