"""cw (Codewalk District): many coding agents on one repository, merged in dependency order."""

__version__ = "0.1.0"
