"""The evidence side: the run record (JSON), the tamper-evident audit trail, and the HTML report."""
