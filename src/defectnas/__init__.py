"""defectnas: find search defects (products shown for a query that are not relevant to it)."""

__version__ = "0.1.0"
__all__ = ["DefectClassifier", "__version__"]


def __getattr__(name: str):
    # Imported on first use so that `import defectnas` (and `defectnas --help`) stay fast:
    # the classifier pulls in torch.
    if name == "DefectClassifier":
        from .estimator import DefectClassifier

        return DefectClassifier
    raise AttributeError(f"module 'defectnas' has no attribute {name!r}")
