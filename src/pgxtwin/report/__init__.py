"""Reports and plots (HTML, PNG)."""
