"""Baselines that every defectnas model is compared against."""

from .tfidf import TfidfLogReg

__all__ = ["TfidfLogReg"]
