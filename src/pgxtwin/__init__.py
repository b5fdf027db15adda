"""pgxtwin: a pharmacogenomic digital twin platform.

Data flow (each package imports only those before it):
``knowledge`` -> ``genomics`` -> ``pk`` -> ``twin`` -> ``store`` -> ``population`` -> ``learn`` -> ``api``.
"""

__version__ = "0.1.0"
