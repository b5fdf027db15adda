"""CDS Hooks 2.0 services: discovery, order-select, order-sign, patient-view, feedback."""
