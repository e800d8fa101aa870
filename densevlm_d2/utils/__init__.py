"""Helpers without a home in one component: atomic file writes."""

from .files import DiskFullError, atomic_folder, atomic_write, temporary_files

__all__ = ["DiskFullError", "atomic_folder", "atomic_write", "temporary_files"]
