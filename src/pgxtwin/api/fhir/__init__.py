"""FHIR R4: Bundle import into twins, Genomics Reporting IG export."""
